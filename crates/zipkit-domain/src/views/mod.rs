//! The zip object as every API endpoint and the `zip.completed` webhook event show it, with its
//! OpenAPI schema (utoipa) derived from the same types.

pub mod schema;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::models::{DownloadSource, SkippedEntries, Zip, ZipEntry};
use crate::values::{BucketName, EntryName, ObjectKey, SourceUrl};
use crate::{Compression, OnError, Service, ZipId, ZipStatus};

#[derive(Debug, Serialize, ToSchema)]
pub struct ZipObject {
    #[schema(value_type = String, format = Uuid)]
    pub id: ZipId,
    #[schema(value_type = String, format = Uuid)]
    pub uuid: ZipId,
    /// Always `zip`.
    #[schema(value_type = String, example = "zip")]
    pub object: &'static str,
    #[schema(schema_with = crate::views::schema::zip_status)]
    pub status: ZipStatus,
    /// The flat object of strings given at creation.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub bucket: BucketRef,
    #[schema(value_type = String)]
    pub key: ObjectKey,
    #[schema(schema_with = crate::views::schema::compression)]
    pub compression: Compression,
    #[schema(schema_with = crate::views::schema::on_error)]
    pub on_error: OnError,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub progress: Progress,
    /// The archive's exact size in bytes, once it is known: from creation when every source is
    /// stored and gives its `size`, otherwise once the worker has the rest of the archive certain
    /// (it has reached the last source, and every deflated entry is compressed). Follows the
    /// sources a job skips; equal to `result.size` when the job succeeds. `null` until then, and
    /// for a job that failed or was cancelled.
    pub expected_size: Option<i64>,
    pub result: Option<ZipResult>,
    pub error: Option<ZipError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BucketRef {
    #[schema(schema_with = crate::views::schema::service)]
    pub service: Service,
    #[schema(value_type = String)]
    pub name: BucketName,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    pub files_total: i32,
    pub files_done: i32,
    pub bytes_downloaded: i64,
    pub bytes_uploaded: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ZipResult {
    pub size: i64,
    pub etag: Option<String>,
    pub entries: i32,
    /// The first 100 sources left out (`on_error: skip`), in order, each with its reason;
    /// `GET /v1/zips/{uuid}/skipped` pages through all of them.
    pub skipped: Vec<Skipped>,
    /// How many sources were left out in all.
    pub skipped_count: i64,
    /// A presigned GET of the archive, made when this object was (each read makes a new one),
    /// living `download_url_ttl_secs`; it downloads under the key's file name. `null` when the
    /// bucket's keys may not read (its last test), or the link could not be made.
    pub download_url: Option<String>,
    /// When `download_url` stops working.
    pub download_url_expires_at: Option<DateTime<Utc>>,
    /// When the archive is deleted, for a job that asked (`expires_in_days` after it finished).
    pub expires_at: Option<DateTime<Utc>>,
    /// When a worker deleted it (the job's record stays).
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A presigned download link and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadLink {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Skipped {
    pub index: i32,
    #[schema(value_type = String)]
    pub url: SourceUrl,
    #[schema(value_type = String)]
    pub filename: EntryName,
    pub code: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ZipError {
    #[serde(rename = "type")]
    pub error_type: String,
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    /// The first 100 sources left out before the job failed (`on_error: skip`), in order, each
    /// with its reason; `GET /v1/zips/{uuid}/skipped` pages through all of them.
    pub skipped: Vec<Skipped>,
    /// How many sources were left out in all: with `all_sources_skipped`, every one.
    pub skipped_count: i64,
}

impl From<ZipEntry> for Skipped {
    fn from(e: ZipEntry) -> Self {
        Self {
            index: e.entry_index,
            url: e.url,
            filename: e.filename,
            code: e.error_code,
            message: e.error_message,
        }
    }
}

impl ZipObject {
    /// `skipped`: the job's skipped entries, the first in order (`Zip::skipped_entries`).
    pub fn new(
        zip: Zip,
        bucket: BucketRef,
        expected_size: Option<i64>,
        skipped: SkippedEntries,
    ) -> Self {
        let count = skipped.count;
        let mut skipped: Vec<Skipped> = skipped.first.into_iter().map(Skipped::from).collect();
        let result = zip.result_size.map(|size| ZipResult {
            size,
            etag: zip.result_etag.clone(),
            entries: zip.result_entries.unwrap_or_default(),
            skipped: std::mem::take(&mut skipped),
            skipped_count: count,
            download_url: None,
            download_url_expires_at: None,
            expires_at: None,
            deleted_at: None,
        });
        let error = match (zip.error_type, zip.error_code, zip.error_message) {
            (Some(error_type), Some(code), Some(message)) => Some(ZipError {
                error_type,
                code,
                message,
                param: zip.error_param,
                skipped,
                skipped_count: count,
            }),
            _ => None,
        };
        Self {
            id: zip.id,
            uuid: zip.id,
            object: "zip",
            status: zip.status,
            metadata: zip.metadata,
            bucket,
            key: zip.object_key,
            compression: zip.compression,
            on_error: zip.on_error,
            created_at: zip.created_at,
            started_at: zip.started_at,
            finished_at: zip.finished_at,
            progress: Progress {
                files_total: zip.files_total,
                files_done: zip.files_done,
                bytes_downloaded: zip.bytes_downloaded,
                bytes_uploaded: zip.bytes_uploaded,
            },
            // A job that failed or was cancelled writes no archive.
            expected_size: expected_size
                .filter(|_| !matches!(zip.status, ZipStatus::Failed | ZipStatus::Cancelled)),
            result,
            error,
        }
    }
}

impl ZipObject {
    /// On a job that has a result: when its archive expires or was deleted, and its download
    /// link.
    pub fn with_result(
        mut self,
        source: Option<&DownloadSource>,
        link: Option<DownloadLink>,
    ) -> Self {
        let finished_at = self.finished_at;
        let Some(result) = &mut self.result else {
            return self;
        };
        if let Some(source) = source {
            result.expires_at = finished_at
                .zip(source.expires_in_days)
                .map(|(at, days)| at + chrono::Duration::days(days.into()));
            result.deleted_at = source.archive_deleted_at;
        }
        if let Some(link) = link {
            result.download_url = Some(link.url);
            result.download_url_expires_at = Some(link.expires_at);
        }
        self
    }
}

/// A Stripe-style event, as webhooks deliver it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    /// `evt_` and 32 hex digits; the same for every delivery (and retry) of one event.
    pub id: String,
    /// Always `event`.
    #[schema(value_type = String, example = "event")]
    pub object: &'static str,
    /// `zip.completed` (sent when a zip succeeds or fails).
    #[serde(rename = "type")]
    pub event_type: String,
    /// Unix seconds.
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventData {
    pub object: ZipObject,
}

impl Event {
    /// The `zip.completed` event of a finished zip; its id is derived from the zip's, so the
    /// event is the same however often it is built.
    pub fn zip_completed(zip: ZipObject, at: DateTime<Utc>) -> Self {
        Self {
            id: format!("evt_{}", zip.id.as_uuid().simple()),
            object: "event",
            event_type: "zip.completed".into(),
            created: at.timestamp(),
            data: EventData { object: zip },
        }
    }
}
