//! Zip jobs: the row is the truth about a job; the broker message only names it. Here, what
//! the API does with jobs (create, find, list, cancel); a worker's hold on a job, its entries,
//! its upload and what it asks of its result (and when that expires) are the submodules.

mod entries;
mod entry_load;
mod lifecycle;
mod listings;
mod result;
mod upload;

pub use entries::{
    EntryOutcome, EntryPlacement, EntrySource, PlacedEnd, RecordedEntry, SKIPPED_LISTED,
    SkippedEntries, ZipEntry,
};
pub use entry_load::{EntryLoad, LoadError};
pub use lifecycle::{JobError, ZipOutcome};
pub use listings::{ManifestFormat, NewListing, NewManifest, ZipListing};
pub use result::{
    DEFAULT_DOWNLOAD_URL_TTL_SECS, DownloadSource, Encryption, ExpiredArchive, ResultSettings,
};
pub use upload::{OrphanedUpload, ZipPart};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::enums::{Compression, OnError, Service, ZipStatus};
use crate::ids::{BucketId, ProjectId, ZipId};
use crate::models::ModelError;
use crate::schema::{buckets, zip_expected_sizes, zips};
use crate::values::{BucketName, EntryName, ObjectKey, SourceUrl};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = zips, check_for_backend(diesel::pg::Pg))]
pub struct Zip {
    pub id: ZipId,
    pub project_id: ProjectId,
    pub bucket_id: BucketId,
    pub object_key: ObjectKey,
    pub status: ZipStatus,
    pub metadata: serde_json::Value,
    pub compression: Compression,
    pub on_error: OnError,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<Vec<u8>>,
    pub files_total: i32,
    pub files_done: i32,
    pub bytes_downloaded: i64,
    pub bytes_uploaded: i64,
    pub result_size: Option<i64>,
    pub result_etag: Option<String>,
    pub result_entries: Option<i32>,
    pub error_type: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub error_param: Option<String>,
    pub attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub upload_id: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The failure of the previous attempt (`code: message`), when it was given back.
    pub last_failure: Option<String>,
}

/// One source of a new job; its parts already parsed.
#[derive(Debug, Clone)]
pub struct NewZipEntry {
    pub url: SourceUrl,
    pub filename: EntryName,
    /// The name as given, when `filename` is its Windows-safe rewrite.
    pub given_filename: Option<String>,
    /// The entry's time, when the request gives one (instead of the source's Last-Modified).
    pub modified_at: Option<DateTime<Utc>>,
    /// The source's size in bytes, when the request declares it.
    pub declared_size: Option<i64>,
}

/// A job ready to be stored: built from a validated request.
#[derive(Debug, Clone)]
pub struct NewZip {
    pub project_id: ProjectId,
    pub bucket_id: BucketId,
    pub key: ObjectKey,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub compression: Compression,
    pub on_error: OnError,
    /// The `Idempotency-Key` header and a hash of the request body it came with.
    pub idempotency: Option<(String, Vec<u8>)>,
    /// The sources given one by one, in request order.
    pub entries: Vec<NewZipEntry>,
    /// The prefixes to list, each at its place among the request's items (the entries take the
    /// places left).
    pub listings: Vec<NewListing>,
    /// Instead of items: a manifest the worker reads them from.
    pub manifest: Option<NewManifest>,
    /// The W3C trace context of the request that created it (for the sweeper's publish).
    pub traceparent: Option<String>,
    /// The archive's exact size, when the request alone decides it.
    pub expected_size: Option<i64>,
    /// What the job asks of its result beyond the defaults.
    pub result_settings: ResultSettings,
}

/// A job as the API shows it: the row, its bucket's service and name, and the archive's exact
/// size once known (`zip_expected_sizes`).
#[derive(Debug, Clone)]
pub struct ZipWithBucket {
    pub zip: Zip,
    pub service: Service,
    pub bucket: BucketName,
    pub expected_size: Option<i64>,
}

impl From<(Zip, Service, BucketName, Option<i64>)> for ZipWithBucket {
    fn from(
        (zip, service, bucket, expected_size): (Zip, Service, BucketName, Option<i64>),
    ) -> Self {
        Self {
            zip,
            service,
            bucket,
            expected_size,
        }
    }
}

/// Which page of a project's jobs to list, newest first.
#[derive(Debug, Clone, Copy)]
pub struct ZipPage {
    pub status: Option<ZipStatus>,
    /// Only jobs older than this one (the last id of the previous page).
    pub starting_after: Option<ZipId>,
    pub limit: i64,
}

impl Zip {
    /// Stores the job and all its entries in one transaction; `IdempotencyKeyTaken` when the
    /// project has a job with the same key (the only unique rule a fresh id can meet).
    pub async fn create(conn: &mut AsyncPgConnection, new: NewZip) -> Result<Self, ModelError> {
        let id = ZipId::new();
        conn.transaction(async move |conn| {
            let (idempotency_key, request_hash) = new.idempotency.unzip();
            // A prefix counts as one until it is listed.
            let items =
                new.entries.len() + new.listings.len() + usize::from(new.manifest.is_some());
            let files_total = i32::try_from(items).unwrap_or(i32::MAX);
            let zip = diesel::insert_into(zips::table)
                .values((
                    zips::id.eq(id),
                    zips::project_id.eq(new.project_id),
                    zips::bucket_id.eq(new.bucket_id),
                    zips::object_key.eq(new.key.as_str()),
                    zips::metadata.eq(serde_json::Value::Object(new.metadata)),
                    zips::compression.eq(new.compression),
                    zips::on_error.eq(new.on_error),
                    zips::idempotency_key.eq(idempotency_key),
                    zips::request_hash.eq(request_hash),
                    zips::files_total.eq(files_total),
                    zips::traceparent.eq(new.traceparent),
                ))
                .on_conflict_do_nothing()
                .returning(Zip::as_returning())
                .get_result(conn)
                .await
                .optional()?
                .ok_or(ModelError::IdempotencyKeyTaken)?;
            // With prefixes to list, each entry waits at its item's index (the places the
            // prefixes leave), to be renumbered once the listing is written.
            let listed: std::collections::BTreeSet<i32> =
                new.listings.iter().map(|l| l.item_index).collect();
            let places = (0..).filter(|i| !listed.contains(i));
            listings::insert_numbered(conn, id, places.zip(&new.entries)).await?;
            listings::insert_listings(conn, id, &new.listings).await?;
            if let Some(manifest) = &new.manifest {
                listings::insert_manifest(conn, id, manifest).await?;
            }
            result::insert_result_settings(conn, id, &new.result_settings).await?;
            if let Some(size) = new.expected_size {
                diesel::insert_into(zip_expected_sizes::table)
                    .values((
                        zip_expected_sizes::zip_id.eq(id),
                        zip_expected_sizes::size.eq(size),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ok(zip)
        })
        .await
    }

    /// A job of this project only: another project's job id finds nothing.
    pub async fn find(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        id: ZipId,
    ) -> QueryResult<Option<Self>> {
        zips::table
            .find(id)
            .filter(zips::project_id.eq(project))
            .select(Zip::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// For the worker, which acts for whichever project owns the job.
    pub async fn find_any(conn: &mut AsyncPgConnection, id: ZipId) -> QueryResult<Option<Self>> {
        zips::table
            .find(id)
            .select(Zip::as_select())
            .first(conn)
            .await
            .optional()
    }

    pub async fn find_by_idempotency_key(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        key: &str,
    ) -> QueryResult<Option<Self>> {
        zips::table
            .filter(zips::project_id.eq(project))
            .filter(zips::idempotency_key.eq(key))
            .select(Zip::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// A job of this project with its bucket's service and name.
    pub async fn find_with_bucket(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        id: ZipId,
    ) -> QueryResult<Option<ZipWithBucket>> {
        zips::table
            .inner_join(buckets::table)
            .left_join(zip_expected_sizes::table)
            .filter(zips::id.eq(id))
            .filter(zips::project_id.eq(project))
            .select((
                Zip::as_select(),
                buckets::service,
                buckets::name,
                zip_expected_sizes::size.nullable(),
            ))
            .first::<(Zip, Service, BucketName, Option<i64>)>(conn)
            .await
            .optional()
            .map(|row| row.map(ZipWithBucket::from))
    }

    /// One page of the project's jobs, newest first. `Ok(None)` when `starting_after` names no
    /// job of this project.
    pub async fn list(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        page: ZipPage,
    ) -> QueryResult<Option<Vec<ZipWithBucket>>> {
        let mut query = zips::table
            .inner_join(buckets::table)
            .left_join(zip_expected_sizes::table)
            .filter(zips::project_id.eq(project))
            .select((
                Zip::as_select(),
                buckets::service,
                buckets::name,
                zip_expected_sizes::size.nullable(),
            ))
            .order((zips::created_at.desc(), zips::id.desc()))
            .limit(page.limit)
            .into_boxed();
        if let Some(status) = page.status {
            query = query.filter(zips::status.eq(status));
        }
        if let Some(after) = page.starting_after {
            let Some(cursor) = Self::find(conn, project, after).await? else {
                return Ok(None);
            };
            query = query.filter(
                zips::created_at.lt(cursor.created_at).or(zips::created_at
                    .eq(cursor.created_at)
                    .and(zips::id.lt(cursor.id))),
            );
        }
        let rows: Vec<(Zip, Service, BucketName, Option<i64>)> = query.load(conn).await?;
        Ok(Some(rows.into_iter().map(ZipWithBucket::from).collect()))
    }

    /// The archive's exact size, once known.
    pub async fn expected_size(
        conn: &mut AsyncPgConnection,
        id: ZipId,
    ) -> QueryResult<Option<i64>> {
        zip_expected_sizes::table
            .find(id)
            .select(zip_expected_sizes::size)
            .first(conn)
            .await
            .optional()
    }

    /// Jobs whose message the broker has not confirmed, created before `before`, oldest first,
    /// with the trace context each was created in.
    pub async fn unpublished(
        conn: &mut AsyncPgConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> QueryResult<Vec<(ZipId, Option<String>)>> {
        zips::table
            .filter(zips::published_at.is_null())
            .filter(zips::status.eq(ZipStatus::None))
            .filter(zips::created_at.lt(before))
            .order(zips::created_at.asc())
            .select((zips::id, zips::traceparent))
            .limit(limit)
            .load(conn)
            .await
    }

    /// Records that the broker confirmed the job message.
    pub async fn mark_published(conn: &mut AsyncPgConnection, id: ZipId) -> QueryResult<()> {
        diesel::update(zips::table.find(id))
            .filter(zips::published_at.is_null())
            .set(zips::published_at.eq(diesel::dsl::now))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Cancels a job that has not ended; idempotent (a cancelled job stays cancelled).
    /// Returns the row as it is afterwards, or `None` when the project has no such job.
    pub async fn cancel(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        id: ZipId,
    ) -> QueryResult<Option<Self>> {
        let cancelled = diesel::update(zips::table.find(id))
            .filter(zips::project_id.eq(project))
            .filter(zips::status.eq_any([ZipStatus::None, ZipStatus::Processing]))
            .set((
                zips::status.eq(ZipStatus::Cancelled),
                zips::finished_at.eq(diesel::dsl::now),
                zips::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Zip::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        match cancelled {
            Some(zip) => Ok(Some(zip)),
            None => Self::find(conn, project, id).await,
        }
    }
}
