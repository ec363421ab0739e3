//! What a job asks of its result beyond the defaults (`zip_result_settings`): how long its
//! download link lives, the archive object's Cache-Control, tags and encryption, and after how
//! many days the archive is deleted; and what a finished job's links and expiry are made from.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::Zip;
use crate::ids::{BucketId, ZipId};
use crate::models::Bucket;
use crate::schema::{buckets, zip_result_settings, zips};
use crate::values::ObjectKey;

/// What a job asks of its result: the download link's lifetime and the archive object's
/// headers. The default asks for nothing (a link lives one hour; no Cache-Control, tags or
/// encryption header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSettings {
    pub download_url_ttl_secs: Option<u32>,
    pub cache_control: Option<String>,
    /// At most 10, as S3 allows.
    pub tags: BTreeMap<String, String>,
    pub encryption: Option<Encryption>,
    /// The archive object's storage class (`STANDARD` when none is asked).
    pub storage_class: Option<String>,
    /// The archive is deleted this many days after the job finished.
    pub expires_in_days: Option<u32>,
}

/// Server-side encryption of the archive object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// With the store's own keys (`AES256`).
    StoreKeys,
    /// With a KMS key (`aws:kms`): this one, or the store's default.
    Kms { key_id: Option<String> },
}

impl Encryption {
    /// Every `x-amz-server-side-encryption` value, as `header` gives them.
    pub const HEADERS: [&str; 2] = ["AES256", "aws:kms"];

    /// The `x-amz-server-side-encryption` value.
    pub fn header(&self) -> &'static str {
        match self {
            Self::StoreKeys => "AES256",
            Self::Kms { .. } => "aws:kms",
        }
    }

    pub fn kms_key_id(&self) -> Option<&str> {
        match self {
            Self::Kms { key_id } => key_id.as_deref(),
            Self::StoreKeys => None,
        }
    }
}

/// How long a download link lives for a job that stored no lifetime of its own.
pub const DEFAULT_DOWNLOAD_URL_TTL_SECS: u32 = 3600;

/// A finished job's archive as its links and expiry are made from it: its bucket (the keys sign
/// the link; its capabilities say whether they may read), the link's lifetime, and when the
/// archive expires or was deleted.
#[derive(Debug, Clone)]
pub struct DownloadSource {
    pub zip_id: ZipId,
    pub bucket: Bucket,
    pub ttl_secs: u32,
    pub expires_in_days: Option<u32>,
    /// When a worker took the expired archive to delete it.
    pub archive_deleted_at: Option<DateTime<Utc>>,
}

// The foreign key is composite (bucket, project), which print-schema cannot express.
diesel::joinable!(zips -> buckets (bucket_id));

/// An archive whose job asked it to expire, and whose time is up. Taken by
/// `Zip::take_expired_archives` for the sweeper to delete.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ExpiredArchive {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub zip_id: ZipId,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub bucket_id: BucketId,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub object_key: ObjectKey,
}

/// Stores what the job asked, unless it asked for nothing (no row then).
pub(super) async fn insert_result_settings(
    conn: &mut AsyncPgConnection,
    id: ZipId,
    settings: &ResultSettings,
) -> QueryResult<()> {
    if *settings == ResultSettings::default() {
        return Ok(());
    }
    let ttl = settings
        .download_url_ttl_secs
        .map(|t| i32::try_from(t).unwrap_or(i32::MAX));
    let tags = serde_json::to_value(&settings.tags).unwrap_or_default();
    let encryption = settings.encryption.as_ref();
    diesel::insert_into(zip_result_settings::table)
        .values((
            zip_result_settings::zip_id.eq(id),
            zip_result_settings::download_url_ttl_secs.eq(ttl),
            zip_result_settings::cache_control.eq(&settings.cache_control),
            zip_result_settings::tags.eq(tags),
            zip_result_settings::server_side_encryption.eq(encryption.map(Encryption::header)),
            zip_result_settings::sse_kms_key_id.eq(encryption.and_then(Encryption::kms_key_id)),
            zip_result_settings::storage_class.eq(&settings.storage_class),
            zip_result_settings::expires_in_days.eq(settings
                .expires_in_days
                .map(|d| i32::try_from(d).unwrap_or(i32::MAX))),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

impl Zip {
    /// For these jobs, what their download links are made from (jobs of any project: the
    /// caller chose the ids).
    pub async fn download_sources(
        conn: &mut AsyncPgConnection,
        ids: &[ZipId],
    ) -> QueryResult<Vec<DownloadSource>> {
        type Row = (
            ZipId,
            Bucket,
            Option<i32>,
            Option<i32>,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<Row> = zips::table
            .inner_join(buckets::table)
            .left_join(zip_result_settings::table)
            .filter(zips::id.eq_any(ids))
            .select((
                zips::id,
                Bucket::as_select(),
                zip_result_settings::download_url_ttl_secs.nullable(),
                zip_result_settings::expires_in_days.nullable(),
                zip_result_settings::archive_deleted_at.nullable(),
            ))
            .load(conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(zip_id, bucket, ttl, days, deleted)| DownloadSource {
                zip_id,
                bucket,
                ttl_secs: ttl
                    .and_then(|t| u32::try_from(t).ok())
                    .unwrap_or(DEFAULT_DOWNLOAD_URL_TTL_SECS),
                expires_in_days: days.and_then(|d| u32::try_from(d).ok()),
                archive_deleted_at: deleted,
            })
            .collect())
    }

    /// What the job asked of its result (the default when it asked for nothing).
    pub async fn result_settings(
        conn: &mut AsyncPgConnection,
        id: ZipId,
    ) -> QueryResult<ResultSettings> {
        type Row = (
            Option<i32>,
            Option<String>,
            serde_json::Value,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i32>,
        );
        let row: Option<Row> = zip_result_settings::table
            .find(id)
            .select((
                zip_result_settings::download_url_ttl_secs,
                zip_result_settings::cache_control,
                zip_result_settings::tags,
                zip_result_settings::server_side_encryption,
                zip_result_settings::sse_kms_key_id,
                zip_result_settings::storage_class,
                zip_result_settings::expires_in_days,
            ))
            .first(conn)
            .await
            .optional()?;
        let Some((ttl, cache_control, tags, encryption, key_id, storage_class, expires_in_days)) =
            row
        else {
            return Ok(ResultSettings::default());
        };
        Ok(ResultSettings {
            download_url_ttl_secs: ttl.and_then(|t| u32::try_from(t).ok()),
            cache_control,
            tags: serde_json::from_value(tags).unwrap_or_default(),
            encryption: match encryption.as_deref() {
                Some("AES256") => Some(Encryption::StoreKeys),
                Some(_) => Some(Encryption::Kms { key_id }),
                None => None,
            },
            storage_class,
            expires_in_days: expires_in_days.and_then(|d| u32::try_from(d).ok()),
        })
    }

    /// Takes up to `limit` archives of succeeded jobs `expires_in_days` after they finished, and
    /// marks them deleted, so exactly one sweeper deletes each (and links stop being made).
    pub async fn take_expired_archives(
        conn: &mut AsyncPgConnection,
        limit: i64,
    ) -> QueryResult<Vec<ExpiredArchive>> {
        diesel::sql_query(
            "WITH taken AS ( \
                 UPDATE zip_result_settings SET archive_deleted_at = now() \
                 WHERE zip_id IN ( \
                     SELECT s.zip_id FROM zip_result_settings s JOIN zips z ON z.id = s.zip_id \
                     WHERE s.expires_in_days IS NOT NULL AND s.archive_deleted_at IS NULL \
                         AND z.status = 'succeeded' \
                         AND z.finished_at + make_interval(days => s.expires_in_days) <= now() \
                     ORDER BY z.finished_at LIMIT $1 FOR UPDATE OF s SKIP LOCKED) \
                 RETURNING zip_id) \
             SELECT taken.zip_id, z.bucket_id, z.object_key \
             FROM taken JOIN zips z ON z.id = taken.zip_id",
        )
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .load(conn)
        .await
    }
}
