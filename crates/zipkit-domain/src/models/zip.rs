//! Zip jobs and their entries. The row is the truth about a job; the broker message only names it.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::enums::Service;
use crate::enums::{Compression, EntryState, OnError, ZipStatus};
use crate::ids::{BucketId, ProjectId, ZipId};
use crate::models::ModelError;
use crate::schema::{buckets, zip_entries, zip_expected_sizes, zip_parts, zip_uploads, zips};
use crate::values::{EntryName, ObjectKey, SourceUrl};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = zips, check_for_backend(diesel::pg::Pg))]
pub struct Zip {
    pub id: ZipId,
    pub project_id: ProjectId,
    pub bucket_id: BucketId,
    pub object_key: String,
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

/// A multipart upload nobody will complete: its job ended without it, or the job's lease died
/// long ago. Taken by `Zip::take_orphaned_uploads` for the sweeper to abort.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct OrphanedUpload {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub zip_id: ZipId,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub bucket_id: BucketId,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub object_key: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub upload_id: String,
}

/// A part of a job's multipart upload the store took.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = zip_parts, check_for_backend(diesel::pg::Pg))]
pub struct ZipPart {
    pub part_number: i32,
    pub etag: String,
    pub size: i64,
    /// CRC-32 of the part's bytes as sent (absent on parts recorded before it was kept).
    pub crc32: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = zip_entries, check_for_backend(diesel::pg::Pg))]
pub struct ZipEntry {
    pub zip_id: ZipId,
    pub entry_index: i32,
    pub url: String,
    pub filename: String,
    pub state: EntryState,
    pub size: Option<i64>,
    pub crc32: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// The name as the request gave it, when `windows_safe_names` rewrote it into `filename`.
    pub given_filename: Option<String>,
    /// The entry's time as the request gave it.
    pub modified_at: Option<DateTime<Utc>>,
    /// The source's size as the request declared it.
    pub declared_size: Option<i64>,
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
    pub entries: Vec<NewZipEntry>,
    /// The W3C trace context of the request that created it (for the sweeper's publish).
    pub traceparent: Option<String>,
    /// The archive's exact size, when the request alone decides it.
    pub expected_size: Option<i64>,
}

/// What happened to one entry of a job.
#[derive(Debug, Clone)]
pub struct EntryOutcome {
    pub index: i32,
    pub state: EntryState,
    pub size: Option<i64>,
    pub crc32: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// Where an entry's bytes sit in the archive being built: its local header (where, and what
/// it says: method, ZIP64) and, once its last byte is out, where that ends. With the end, a
/// worker taking the job over can keep the entry without its source; with only the start, pick
/// its source up where the uploaded parts end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPlacement {
    pub index: i32,
    pub offset: i64,
    pub deflated: bool,
    pub zip64: bool,
    /// The source's strong ETag or Last-Modified as it first answered, recorded with the start:
    /// a continued download sends it as `If-Range`.
    pub source_validator: Option<String>,
    /// The time in the entry's headers (absent on entries placed before it was kept, which all
    /// carry the job's creation time).
    pub entry_time: Option<DateTime<Utc>>,
    pub end: Option<PlacedEnd>,
}

/// The end of an entry's bytes, its compressed size, and the CRC-32
/// of the archive up to that end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedEnd {
    pub end: i64,
    pub compressed_size: i64,
    pub archive_crc32: u32,
}

/// An entry as a worker taking the job over finds it: its outcome and, once its bytes are in
/// the archive, their placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEntry {
    pub index: i32,
    pub state: EntryState,
    pub size: Option<i64>,
    pub crc32: Option<i64>,
    pub placement: Option<EntryPlacement>,
}

/// A failure as the API shows it in `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub error_type: String,
    pub code: String,
    pub message: String,
    pub param: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub enum ZipOutcome {
    Succeeded {
        size: i64,
        etag: String,
        entries: i32,
    },
    Failed(JobError),
}

// The foreign key is composite (bucket, project), which print-schema cannot express.
diesel::joinable!(zips -> buckets (bucket_id));

/// A job as the API shows it: the row, its bucket's service and name, and the archive's exact
/// size once known (`zip_expected_sizes`).
#[derive(Debug, Clone)]
pub struct ZipWithBucket {
    pub zip: Zip,
    pub service: Service,
    pub bucket: String,
    pub expected_size: Option<i64>,
}

impl From<(Zip, Service, String, Option<i64>)> for ZipWithBucket {
    fn from((zip, service, bucket, expected_size): (Zip, Service, String, Option<i64>)) -> Self {
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

// Postgres allows 65,535 bind parameters per statement; an entry row takes seven.
const ENTRY_INSERT_CHUNK: usize = 9_000;

impl Zip {
    /// Stores the job and all its entries in one transaction; `IdempotencyKeyTaken` when the
    /// project has a job with the same key (the only unique rule a fresh id can meet).
    pub async fn create(conn: &mut AsyncPgConnection, new: NewZip) -> Result<Self, ModelError> {
        let id = ZipId::new();
        conn.transaction(async move |conn| {
            let (idempotency_key, request_hash) = new.idempotency.unzip();
            let files_total = i32::try_from(new.entries.len()).unwrap_or(i32::MAX);
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
            let rows: Vec<_> = new
                .entries
                .iter()
                .enumerate()
                .map(|(index, entry)| {
                    (
                        zip_entries::zip_id.eq(id),
                        zip_entries::entry_index.eq(i32::try_from(index).unwrap_or(i32::MAX)),
                        zip_entries::url.eq(entry.url.as_str()),
                        zip_entries::filename.eq(entry.filename.as_str()),
                        zip_entries::given_filename.eq(entry.given_filename.as_deref()),
                        zip_entries::modified_at.eq(entry.modified_at),
                        zip_entries::declared_size.eq(entry.declared_size),
                    )
                })
                .collect();
            for chunk in rows.chunks(ENTRY_INSERT_CHUNK) {
                diesel::insert_into(zip_entries::table)
                    .values(chunk)
                    .execute(conn)
                    .await?;
            }
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
            .first::<(Zip, Service, String, Option<i64>)>(conn)
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
        let rows: Vec<(Zip, Service, String, Option<i64>)> = query.load(conn).await?;
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

    /// Records the archive's exact size as the owner came to know it (again, after a source was
    /// skipped).
    pub async fn record_expected_size(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        size: i64,
    ) -> QueryResult<()> {
        // One statement: only while `owner` holds the job, whatever happens meanwhile.
        let owned = zips::table
            .filter(zips::id.eq(id))
            .filter(zips::lease_owner.eq(owner))
            .select((zips::id, size.into_sql::<diesel::sql_types::BigInt>()));
        diesel::insert_into(zip_expected_sizes::table)
            .values(owned)
            .into_columns((zip_expected_sizes::zip_id, zip_expected_sizes::size))
            .on_conflict(zip_expected_sizes::zip_id)
            .do_update()
            .set((
                zip_expected_sizes::size.eq(size),
                zip_expected_sizes::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Entries left out by `on_error: skip`, for the jobs given.
    pub async fn skipped_entries(
        conn: &mut AsyncPgConnection,
        ids: &[ZipId],
    ) -> QueryResult<Vec<ZipEntry>> {
        zip_entries::table
            .filter(zip_entries::zip_id.eq_any(ids))
            .filter(zip_entries::state.eq(EntryState::Skipped))
            .select(ZipEntry::as_select())
            .load(conn)
            .await
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

    pub async fn entries(conn: &mut AsyncPgConnection, id: ZipId) -> QueryResult<Vec<ZipEntry>> {
        zip_entries::table
            .filter(zip_entries::zip_id.eq(id))
            .order(zip_entries::entry_index.asc())
            .select(ZipEntry::as_select())
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

    /// Takes the job for `owner` until `now + lease`: only a job not started yet, or one whose
    /// previous owner's lease ran out. Exactly one of any number of racing workers wins.
    pub async fn claim(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        lease: Duration,
    ) -> QueryResult<Option<Self>> {
        let now = Utc::now();
        diesel::update(zips::table.find(id))
            .filter(
                zips::status.eq(ZipStatus::None).or(zips::status
                    .eq(ZipStatus::Processing)
                    .and(zips::lease_expires_at.lt(now))),
            )
            .set((
                zips::status.eq(ZipStatus::Processing),
                zips::lease_owner.eq(owner),
                zips::lease_expires_at.eq(now + lease),
                zips::attempts.eq(zips::attempts + 1),
                zips::started_at.eq(diesel::dsl::sql::<
                    diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>,
                >("coalesce(started_at, now())")),
                zips::updated_at.eq(now),
            ))
            .returning(Zip::as_returning())
            .get_result(conn)
            .await
            .optional()
    }

    /// Records the multipart upload the owner started and how its archive is cut (`plan`: the
    /// worker's own description), so a worker taking the job over can resume it. `false` when
    /// the owner lost the job meanwhile.
    pub async fn set_upload_id(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        upload_id: &str,
        plan: &str,
    ) -> QueryResult<bool> {
        conn.transaction(async |conn| {
            let updated = diesel::update(zips::table.find(id))
                .filter(zips::lease_owner.eq(owner))
                .set((
                    zips::upload_id.eq(upload_id),
                    zips::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
            if updated == 1 {
                diesel::insert_into(zip_uploads::table)
                    .values((
                        zip_uploads::zip_id.eq(id),
                        zip_uploads::upload_id.eq(upload_id),
                        zip_uploads::plan.eq(plan),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
            }
            Ok(updated == 1)
        })
        .await
    }

    /// How the archive of one of the job's uploads is cut, as recorded when it started.
    pub async fn upload_plan(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        upload_id: &str,
    ) -> QueryResult<Option<String>> {
        zip_uploads::table
            .find((id, upload_id))
            .select(zip_uploads::plan)
            .first(conn)
            .await
            .optional()
    }

    /// Marks one of the job's uploads ended (completed or aborted): nothing resumes it and no
    /// sweeper needs to clean it up.
    pub async fn end_upload(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        upload_id: &str,
    ) -> QueryResult<()> {
        diesel::update(zip_uploads::table.find((id, upload_id)))
            .filter(zip_uploads::ended_at.is_null())
            .set(zip_uploads::ended_at.eq(diesel::dsl::now))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Progress counters, written by the owner at a modest rate.
    pub async fn record_progress(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        files_done: i32,
        bytes_downloaded: i64,
        bytes_uploaded: i64,
    ) -> QueryResult<()> {
        diesel::update(zips::table.find(id))
            .filter(zips::lease_owner.eq(owner))
            .set((
                zips::files_done.eq(files_done),
                zips::bytes_downloaded.eq(bytes_downloaded),
                zips::bytes_uploaded.eq(bytes_uploaded),
                zips::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// Records what happened to many entries of a job in one statement (a job of 70,000 small
    /// files must not cost 70,000 round trips).
    pub async fn record_entries(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        outcomes: &[EntryOutcome],
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
        if outcomes.is_empty() {
            return Ok(());
        }
        // Raw SQL: an UPDATE from unnest()ed arrays, which the query builder cannot express.
        diesel::sql_query(
            "UPDATE zip_entries e SET state = v.state, size = v.size, crc32 = v.crc32, \
             error_code = v.error_code, error_message = v.error_message \
             FROM unnest($2::int4[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[]) \
               AS v(entry_index, state, size, crc32, error_code, error_message) \
             WHERE e.zip_id = $1 AND e.entry_index = v.entry_index",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<Array<Integer>, _>(outcomes.iter().map(|o| o.index).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            outcomes
                .iter()
                .map(|o| o.state.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<BigInt>>, _>(outcomes.iter().map(|o| o.size).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(outcomes.iter().map(|o| o.crc32).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            outcomes
                .iter()
                .map(|o| o.error_code.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            outcomes
                .iter()
                .map(|o| o.error_message.as_deref())
                .collect::<Vec<_>>(),
        )
        .execute(conn)
        .await
        .map(drop)
    }

    /// Records where entries' bytes went in the archive, many in one statement; only while
    /// `owner` holds the job (a worker that lost it must not overwrite what its successor
    /// records).
    pub async fn record_placements(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        placements: &[EntryPlacement],
    ) -> QueryResult<()> {
        use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz};
        if placements.is_empty() {
            return Ok(());
        }
        let ends = |f: fn(&PlacedEnd) -> i64| -> Vec<Option<i64>> {
            placements.iter().map(|p| p.end.as_ref().map(f)).collect()
        };
        // Raw SQL: an UPDATE from unnest()ed arrays, as in `record_entries`.
        diesel::sql_query(
            "UPDATE zip_entries e SET archive_offset = v.archive_offset, deflated = v.deflated, \
               zip64 = v.zip64, archive_end = v.archive_end, \
               compressed_size = v.compressed_size, archive_crc32 = v.archive_crc32, \
               source_validator = CASE WHEN v.archive_end IS NULL THEN v.source_validator \
                                       ELSE e.source_validator END, \
               entry_time = v.entry_time \
             FROM unnest($3::int4[], $4::int8[], $5::bool[], $6::bool[], $7::int8[], $8::int8[], \
                         $9::int8[], $10::text[], $11::timestamptz[]) \
               AS v(entry_index, archive_offset, deflated, zip64, archive_end, compressed_size, \
                    archive_crc32, source_validator, entry_time) \
             WHERE e.zip_id = $1 AND e.entry_index = v.entry_index \
               AND EXISTS (SELECT 1 FROM zips z WHERE z.id = $1 AND z.lease_owner = $2)",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<Text, _>(owner)
        .bind::<Array<Integer>, _>(placements.iter().map(|p| p.index).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(placements.iter().map(|p| p.offset).collect::<Vec<_>>())
        .bind::<Array<Bool>, _>(placements.iter().map(|p| p.deflated).collect::<Vec<_>>())
        .bind::<Array<Bool>, _>(placements.iter().map(|p| p.zip64).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(ends(|e| e.end))
        .bind::<Array<Nullable<BigInt>>, _>(ends(|e| e.compressed_size))
        .bind::<Array<Nullable<BigInt>>, _>(ends(|e| i64::from(e.archive_crc32)))
        .bind::<Array<Nullable<Text>>, _>(
            placements
                .iter()
                .map(|p| p.source_validator.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Timestamptz>>, _>(
            placements.iter().map(|p| p.entry_time).collect::<Vec<_>>(),
        )
        .execute(conn)
        .await
        .map(drop)
    }

    /// Forgets every entry's placement: a build that starts from byte zero places them anew,
    /// and none of an earlier build's may be taken for its own.
    pub async fn clear_placements(conn: &mut AsyncPgConnection, id: ZipId) -> QueryResult<()> {
        diesel::update(zip_entries::table)
            .filter(zip_entries::zip_id.eq(id))
            .filter(zip_entries::archive_offset.is_not_null())
            .set((
                zip_entries::archive_offset.eq(None::<i64>),
                zip_entries::deflated.eq(None::<bool>),
                zip_entries::zip64.eq(None::<bool>),
                zip_entries::source_validator.eq(None::<String>),
                zip_entries::entry_time.eq(None::<DateTime<Utc>>),
                zip_entries::archive_end.eq(None::<i64>),
                zip_entries::compressed_size.eq(None::<i64>),
                zip_entries::archive_crc32.eq(None::<i64>),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// The job's entries as recorded so far, by index: what a worker taking it over needs.
    pub async fn recorded_entries(
        conn: &mut AsyncPgConnection,
        id: ZipId,
    ) -> QueryResult<Vec<RecordedEntry>> {
        type Row = (
            (i32, EntryState, Option<i64>, Option<i64>),
            (
                Option<i64>,
                Option<bool>,
                Option<bool>,
                Option<String>,
                Option<DateTime<Utc>>,
            ),
            (Option<i64>, Option<i64>, Option<i64>),
        );
        let rows: Vec<Row> = zip_entries::table
            .filter(zip_entries::zip_id.eq(id))
            .order(zip_entries::entry_index.asc())
            .select((
                (
                    zip_entries::entry_index,
                    zip_entries::state,
                    zip_entries::size,
                    zip_entries::crc32,
                ),
                (
                    zip_entries::archive_offset,
                    zip_entries::deflated,
                    zip_entries::zip64,
                    zip_entries::source_validator,
                    zip_entries::entry_time,
                ),
                (
                    zip_entries::archive_end,
                    zip_entries::compressed_size,
                    zip_entries::archive_crc32,
                ),
            ))
            .load(conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |((index, state, size, crc32), start, (end, compressed, archive))| {
                    let end = match (end, compressed, archive.map(u32::try_from)) {
                        (Some(end), Some(compressed_size), Some(Ok(archive_crc32))) => {
                            Some(PlacedEnd {
                                end,
                                compressed_size,
                                archive_crc32,
                            })
                        }
                        _ => None,
                    };
                    let placement = match start {
                        (
                            Some(offset),
                            Some(deflated),
                            Some(zip64),
                            source_validator,
                            entry_time,
                        ) => Some(EntryPlacement {
                            index,
                            offset,
                            deflated,
                            zip64,
                            source_validator,
                            entry_time,
                            end,
                        }),
                        _ => None,
                    };
                    RecordedEntry {
                        index,
                        state,
                        size,
                        crc32,
                        placement,
                    }
                },
            )
            .collect())
    }

    /// Stores an uploaded part's ETag as soon as the part is written.
    pub async fn record_part(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        upload_id: &str,
        part_number: i32,
        etag: &str,
        size: i64,
        crc32: u32,
    ) -> QueryResult<()> {
        diesel::insert_into(zip_parts::table)
            .values((
                zip_parts::zip_id.eq(id),
                zip_parts::upload_id.eq(upload_id),
                zip_parts::part_number.eq(part_number),
                zip_parts::etag.eq(etag),
                zip_parts::size.eq(size),
                zip_parts::crc32.eq(i64::from(crc32)),
            ))
            .on_conflict((
                zip_parts::zip_id,
                zip_parts::upload_id,
                zip_parts::part_number,
            ))
            .do_update()
            .set((
                zip_parts::etag.eq(etag),
                zip_parts::size.eq(size),
                zip_parts::crc32.eq(i64::from(crc32)),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// The parts recorded for one of the job's uploads, by number.
    pub async fn parts(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        upload_id: &str,
    ) -> QueryResult<Vec<ZipPart>> {
        zip_parts::table
            .filter(zip_parts::zip_id.eq(id))
            .filter(zip_parts::upload_id.eq(upload_id))
            .order(zip_parts::part_number.asc())
            .select(ZipPart::as_select())
            .load(conn)
            .await
    }

    /// Takes up to `limit` open uploads nobody will complete and marks them ended, so exactly one
    /// sweeper aborts each: uploads of jobs that failed or were cancelled, uploads of succeeded
    /// jobs other than the one that made the archive, and uploads of jobs whose lease (or, with
    /// none, the upload itself) is older than `stale`.
    pub async fn take_orphaned_uploads(
        conn: &mut AsyncPgConnection,
        stale: Duration,
        limit: i64,
    ) -> QueryResult<Vec<OrphanedUpload>> {
        // Raw SQL: the join and SKIP LOCKED sub-select read more clearly than the query builder.
        diesel::sql_query(
            "WITH taken AS ( \
                 UPDATE zip_uploads SET ended_at = now() \
                 WHERE (zip_id, upload_id) IN ( \
                     SELECT u.zip_id, u.upload_id FROM zip_uploads u JOIN zips z ON z.id = u.zip_id \
                     WHERE u.ended_at IS NULL AND ( \
                         z.status IN ('failed', 'cancelled') \
                         OR (z.status = 'succeeded' AND z.upload_id IS DISTINCT FROM u.upload_id) \
                         OR (z.status IN ('none', 'processing') \
                             AND coalesce(z.lease_expires_at, u.started_at) < now() - $1)) \
                     ORDER BY u.started_at LIMIT $2 FOR UPDATE OF u SKIP LOCKED) \
                 RETURNING zip_id, upload_id) \
             SELECT taken.zip_id, z.bucket_id, z.object_key, taken.upload_id \
             FROM taken JOIN zips z ON z.id = taken.zip_id",
        )
        .bind::<diesel::sql_types::Interval, _>(stale)
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .load(conn)
        .await
    }

    /// Forgets the job's upload (it was aborted, or is gone): the next attempt starts a new one.
    pub async fn forget_upload(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
    ) -> QueryResult<bool> {
        let updated = diesel::update(zips::table.find(id))
            .filter(zips::lease_owner.eq(owner))
            .set((
                zips::upload_id.eq(None::<String>),
                zips::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(updated == 1)
    }

    /// Extends the owner's lease; `false` means the job was taken over, finished or cancelled.
    pub async fn heartbeat(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        lease: Duration,
    ) -> QueryResult<bool> {
        let updated = diesel::update(zips::table.find(id))
            .filter(zips::status.eq(ZipStatus::Processing))
            .filter(zips::lease_owner.eq(owner))
            .set(zips::lease_expires_at.eq(Utc::now() + lease))
            .execute(conn)
            .await?;
        Ok(updated == 1)
    }

    /// Sets the terminal state, only if `owner` still holds the job; returns the finished row.
    pub async fn finish(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        outcome: &ZipOutcome,
    ) -> QueryResult<Option<Self>> {
        let target = zips::table
            .find(id)
            .filter(zips::status.eq(ZipStatus::Processing))
            .filter(zips::lease_owner.eq(owner));
        let release = (
            zips::lease_owner.eq(None::<String>),
            zips::lease_expires_at.eq(None::<DateTime<Utc>>),
            zips::finished_at.eq(diesel::dsl::now),
            zips::updated_at.eq(diesel::dsl::now),
        );
        let query = match outcome {
            ZipOutcome::Succeeded {
                size,
                etag,
                entries,
            } => {
                diesel::update(target)
                    .set((
                        zips::status.eq(ZipStatus::Succeeded),
                        zips::result_size.eq(size),
                        zips::bytes_uploaded.eq(size),
                        zips::result_etag.eq(etag),
                        zips::result_entries.eq(entries),
                        release,
                    ))
                    .returning(Zip::as_returning())
                    .get_result(conn)
                    .await
            }
            ZipOutcome::Failed(error) => {
                diesel::update(target)
                    .set((
                        zips::status.eq(ZipStatus::Failed),
                        zips::error_type.eq(&error.error_type),
                        zips::error_code.eq(&error.code),
                        zips::error_message.eq(&error.message),
                        zips::error_param.eq(&error.param),
                        release,
                    ))
                    .returning(Zip::as_returning())
                    .get_result(conn)
                    .await
            }
        };
        query.optional()
    }

    /// Gives the job back for another attempt after a transient failure: `none` again, no
    /// lease, counters reset (the next attempt builds the archive from the start). Only while
    /// `owner` still holds it; says whether it did.
    pub async fn release_for_retry(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
        failure: &str,
    ) -> QueryResult<bool> {
        let updated = diesel::update(zips::table.find(id))
            .filter(zips::status.eq(ZipStatus::Processing))
            .filter(zips::lease_owner.eq(owner))
            .set((
                zips::status.eq(ZipStatus::None),
                zips::lease_owner.eq(None::<String>),
                zips::lease_expires_at.eq(None::<DateTime<Utc>>),
                zips::upload_id.eq(None::<String>),
                zips::files_done.eq(0),
                zips::bytes_downloaded.eq(0),
                zips::bytes_uploaded.eq(0),
                zips::last_failure.eq(failure),
                zips::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(updated == 1)
    }

    /// Gives a job back from a worker that is stopping (scale-in, rollout), for the next worker
    /// to take at once: the lease ends now, and the attempt it was on is not counted, as
    /// nothing failed. The upload and its recorded parts stay, so the next worker continues it.
    /// `false` when `owner` no longer held the job.
    pub async fn hand_back(
        conn: &mut AsyncPgConnection,
        id: ZipId,
        owner: &str,
    ) -> QueryResult<bool> {
        let updated = diesel::update(zips::table.find(id))
            .filter(zips::status.eq(ZipStatus::Processing))
            .filter(zips::lease_owner.eq(owner))
            .set((
                // Just expired (the owner stays recorded until the next claim), so a claim takes
                // it at once. Not further back: the upload sweeper treats a lease that ended an
                // hour ago as an abandoned upload.
                zips::lease_expires_at.eq(Utc::now() - chrono::Duration::seconds(1)),
                zips::attempts.eq(zips::attempts - 1),
                zips::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(updated == 1)
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
