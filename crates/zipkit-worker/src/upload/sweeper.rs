//! Aborts multipart uploads nobody will complete: those of jobs that failed or were cancelled
//! while their worker could not abort them (it died first), of succeeded jobs that started over
//! on a new upload, and of jobs whose lease died long ago. Every worker runs one; each upload is
//! taken by exactly one (`Zip::take_orphaned_uploads`) and tried once: an abort the bucket's
//! policy refuses is logged and left to the bucket's lifecycle rule.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::{Bucket, OrphanedUpload, ResultSettings, Zip};
use zipkit_storage::{BucketClients, BucketLocation};

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
            let _ = tokio::time::timeout(self.every, stop.changed()).await;
        }
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
        let destination = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let bucket = Bucket::find_any(&mut conn, upload.bucket_id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the bucket was removed")?;
            let credentials = bucket
                .credentials(&self.keyring)
                .map_err(|e| e.to_string())?;
            let location = BucketLocation::from(&bucket);
            let client = self
                .buckets
                .client(&location, &credentials)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(Destination::new(
                client,
                location,
                bucket.capabilities,
                // Only to abort it: what the object would have been told does not matter.
                (upload.object_key.clone(), ResultSettings::default()),
                upload.zip_id,
                self.timeouts,
            ))
        };
        match destination.await {
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
