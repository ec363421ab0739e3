//! A claimed job's lease, as one guard: `Lease::claim` takes the job with one conditional UPDATE,
//! a heartbeat extends the lease while the guard lives, and the guard says when the job was
//! interrupted: cancelled through the API, or taken over by another worker after this one missed
//! its beats. Dropping the guard stops the heartbeat.

use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::Zip;
use zipkit_domain::{ZipId, ZipStatus};

/// Why a running job must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interrupt {
    #[default]
    None,
    /// Cancelled through the API: its upload is aborted.
    Cancelled,
    /// Another worker holds the job now and may be continuing its upload: stop sending, but
    /// leave the upload alone.
    TakenOver,
    /// This worker is stopping: stop sending, leave the upload alone, and hand the job back for
    /// another worker to continue from its last recorded part.
    HandBack,
}

impl Interrupt {
    /// Whether the job's upload belongs to whoever builds the job next.
    pub fn keeps_upload(self) -> bool {
        matches!(self, Self::TakenOver | Self::HandBack)
    }
}

#[derive(Debug)]
pub struct Lease {
    heartbeat: tokio::task::JoinHandle<()>,
    interrupt: watch::Receiver<Interrupt>,
    interrupt_tx: std::sync::Arc<watch::Sender<Interrupt>>,
}

/// Why a claim did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("claiming failed: {0}")]
    Query(#[from] diesel::result::Error),
}

impl Lease {
    /// Claims the job for `owner` for `length`, if nobody holds a live lease on it and it has
    /// not ended. The heartbeat renews it every third of `length` (at most every 2 s: a failed
    /// beat is also how a cancel reaches the job).
    pub async fn claim(
        pool: &PgPool,
        id: ZipId,
        owner: &str,
        length: Duration,
    ) -> Result<Option<(Zip, Self)>, ClaimError> {
        let span = tracing::info_span!("claim", zip.id = %id);
        let chrono_length =
            chrono::Duration::from_std(length).unwrap_or(chrono::Duration::seconds(60));
        let mut conn = pool
            .get()
            .instrument(span.clone())
            .await
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        let Some(zip) = Zip::claim(&mut conn, id, owner, chrono_length)
            .instrument(span)
            .await?
        else {
            return Ok(None);
        };
        drop(conn);
        let (interrupt_tx, interrupt) = watch::channel(Interrupt::None);
        let interrupt_tx = std::sync::Arc::new(interrupt_tx);
        let every = (length / 3).min(Duration::from_secs(2));
        let (pool, owner) = (pool.clone(), owner.to_owned());
        let beat_tx = std::sync::Arc::clone(&interrupt_tx);
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Ok(mut conn) = pool.get().await else {
                    continue;
                };
                if let Ok(false) = Zip::heartbeat(&mut conn, id, &owner, chrono_length).await {
                    // Only a cancel aborts the upload; any other end of the lease means another
                    // worker has (or had) the job, and its upload is that worker's business (an
                    // upload nobody completes is swept).
                    let why = match Zip::find_any(&mut conn, id).await {
                        Ok(Some(zip)) if zip.status != ZipStatus::Cancelled => Interrupt::TakenOver,
                        _ => Interrupt::Cancelled,
                    };
                    tracing::info!(zip.id = %id, interrupt = ?why, "the job's lease ended");
                    // A hand-back already asked for stays what it is.
                    beat_tx.send_if_modified(|now| {
                        let first = *now == Interrupt::None;
                        if first {
                            *now = why;
                        }
                        first
                    });
                    return;
                }
            }
        });
        Ok(Some((
            zip,
            Self {
                heartbeat,
                interrupt,
                interrupt_tx,
            },
        )))
    }

    /// Changes once when the job must stop.
    pub fn interrupted(&self) -> watch::Receiver<Interrupt> {
        self.interrupt.clone()
    }

    /// Asks the job to stop for a hand-back (the worker is stopping), unless it was already
    /// interrupted otherwise.
    pub fn hand_back(&self) {
        self.interrupt_tx.send_if_modified(|now| {
            let first = *now == Interrupt::None;
            if first {
                *now = Interrupt::HandBack;
            }
            first
        });
    }

    /// Why the job was interrupted, if it was.
    pub fn interrupt(&self) -> Interrupt {
        *self.interrupt.borrow()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}
