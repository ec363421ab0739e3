//! Keeps customers' buckets as their jobs asked. Aborts multipart uploads nobody will complete:
//! those of jobs that failed or were cancelled while their worker could not abort them (it died
//! first), of succeeded jobs that started over on a new upload, and of jobs whose lease died long
//! ago. Deletes archives whose job asked them to expire (`expires_in_days`). Every worker runs
//! one; each upload or archive is taken by exactly one (`Zip::take_orphaned_uploads`,
//! `Zip::take_expired_archives`) and tried once: a call the bucket's policy refuses is logged
//! (and an upload left to the bucket's lifecycle rule).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::{Bucket, OrphanedUpload, ResultSettings, Zip};
use zipkit_domain::values::ObjectKey;
use zipkit_domain::{BucketId, ZipId};
use zipkit_storage::BucketClients;

use super::{Destination, StoreTimeouts};

/// How many uploads one sweep takes.
const BATCH: i64 = 50;

#[derive(Debug, Clone)]
pub struct OrphanSweeper {
    pub pool: PgPool,
    pub keyring: Arc<KeyRing>,
    pub buckets: BucketClients,
    pub timeouts: StoreTimeouts,
    /// A job whose lease expired this long ago is not coming back for its upload.
    pub stale: Duration,
    /// Time between sweeps.
    pub every: Duration,
}

impl OrphanSweeper {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            while self.sweep_once().await == BATCH as usize {}
            while self.expire_once().await == BATCH as usize {}
            let _ = tokio::time::timeout(self.every, stop.changed()).await;
        }
    }

    /// Deletes the archives whose time is up; returns how many it took.
    pub async fn expire_once(&self) -> usize {
        let taken = match self.pool.get().await {
            Ok(mut conn) => Zip::take_expired_archives(&mut conn, BATCH)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let taken = taken.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not look for expired archives");
            Vec::new()
        });
        for archive in &taken {
            let key = archive.object_key.clone();
            let deleted = match self
                .destination(archive.bucket_id, key, archive.zip_id)
                .await
            {
                Ok(destination) => destination
                    .delete_archive()
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match deleted {
                Ok(()) => tracing::info!(
                    zip.id = %archive.zip_id,
                    key = %archive.object_key,
                    "expired archive deleted"
                ),
                Err(e) => tracing::warn!(
                    zip.id = %archive.zip_id,
                    key = %archive.object_key,
                    error = %e,
                    "could not delete an expired archive; it stays in the bucket"
                ),
            }
        }
        taken.len()
    }

    /// A destination for `key` in the bucket `bucket_id`, with its stored keys.
    async fn destination(
        &self,
        bucket_id: BucketId,
        key: ObjectKey,
        zip_id: ZipId,
    ) -> Result<Destination, String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let bucket = Bucket::find_any(&mut conn, bucket_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the bucket was removed")?;
        let opened = crate::source_buckets::open(&self.keyring, &self.buckets, &bucket)
            .map_err(|failure| failure.message)?;
        // To abort or delete: what the object would have been told does not matter.
        let object = (key, ResultSettings::default());
        let capabilities = bucket.capabilities;
        Ok(Destination::new(
            opened.client,
            opened.location,
            capabilities,
            object,
            zip_id,
            self.timeouts,
        ))
    }

    /// One sweep; returns how many uploads it took.
    pub async fn sweep_once(&self) -> usize {
        let stale = chrono::Duration::from_std(self.stale).unwrap_or(chrono::Duration::hours(1));
        let taken = match self.pool.get().await {
            Ok(mut conn) => Zip::take_orphaned_uploads(&mut conn, stale, BATCH)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let taken = taken.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not look for orphaned uploads");
            Vec::new()
        });
        for upload in &taken {
            self.abort(upload).await;
        }
        taken.len()
    }

    async fn abort(&self, upload: &OrphanedUpload) {
        let key = upload.object_key.clone();
        match self.destination(upload.bucket_id, key, upload.zip_id).await {
            Ok(destination) => destination.abort(&upload.upload_id).await,
            Err(e) => tracing::warn!(
                zip.id = %upload.zip_id,
                upload.id = %upload.upload_id,
                error = %e,
                "cannot abort an orphaned upload; the bucket's lifecycle rule will remove it"
            ),
        }
    }
}
