//! Getting job messages onto the broker without ever losing an accepted job: the request
//! publishes after its transaction commits; the sweeper republishes every job whose message the
//! broker has not confirmed (broker down, nack, process killed between commit and publish).
//! A message published twice is harmless: workers claim jobs with a conditional UPDATE.

use std::time::Duration;

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use tokio::sync::watch;
use tracing::Instrument;
use zipkit_domain::ZipId;
use zipkit_domain::db::PgPool;
use zipkit_domain::messages::JobMessage;
use zipkit_domain::models::Zip;
use zipkit_runtime::broker::{Broker, PublishError};
use zipkit_runtime::jobs::OutgoingJob;
use zipkit_runtime::{metrics, telemetry};

#[derive(Debug, Clone)]
pub struct JobPublisher {
    pub broker: Broker,
    pub pool: PgPool,
}

/// Who published a job's message (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishedBy {
    /// The request that created the job, right after its commit.
    Request,
    /// The sweeper, for a job whose message was never confirmed.
    Sweeper,
}

impl PublishedBy {
    fn label(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Sweeper => "sweeper",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishJobError {
    #[error(transparent)]
    Broker(#[from] PublishError),
    #[error("recording the publication failed: {0}")]
    Record(#[from] diesel::result::Error),
}

impl JobPublisher {
    /// Publishes the job's message with confirms, then records on `conn` that the broker has it.
    /// The caller's connection is used (not one more from the pool), so a request holding a
    /// connection can never wait on the pool for a second one. The message carries this
    /// publish's trace context (header and body), so the worker's spans join the trace.
    pub async fn publish(
        &self,
        conn: &mut AsyncPgConnection,
        zip_id: ZipId,
        by: PublishedBy,
    ) -> Result<(), PublishJobError> {
        let queue = &self.broker.topology().jobs;
        let span = tracing::info_span!(
            "publish",
            otel.name = format!("publish {queue}"),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.destination.name = %queue,
            zip.id = %zip_id,
            published_by = by.label(),
        );
        self.publish_in(conn, zip_id, by).instrument(span).await
    }

    async fn publish_in(
        &self,
        conn: &mut AsyncPgConnection,
        zip_id: ZipId,
        by: PublishedBy,
    ) -> Result<(), PublishJobError> {
        let traceparent = telemetry::traceparent(&tracing::Span::current());
        let message = JobMessage::first(zip_id, traceparent.clone());
        let published = self
            .broker
            .publish_job(OutgoingJob {
                id: &zip_id.to_string(),
                body: &message.to_bytes(),
                traceparent: traceparent.as_deref(),
            })
            .await;
        let counter = if published.is_ok() {
            metrics::JOBS_PUBLISHED
        } else {
            metrics::PUBLISH_FAILURES
        };
        ::metrics::counter!(counter, "by" => by.label()).increment(1);
        published?;
        Ok(Zip::mark_published(conn, zip_id).await?)
    }

    /// Republishes unconfirmed jobs older than `after` every `every`, until `stop` turns true.
    pub async fn sweep(self, after: Duration, every: Duration, mut stop: watch::Receiver<bool>) {
        let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::seconds(10));
        loop {
            if tokio::time::timeout(every, stop.changed()).await.is_ok() {
                return;
            }
            if !self.broker.is_connected() {
                continue;
            }
            let mut conn = match self.pool.get().await {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(error = %err, "sweeper: database unavailable");
                    continue;
                }
            };
            let pending = match Zip::unpublished(&mut conn, Utc::now() - after, 100).await {
                Ok(pending) => pending,
                Err(err) => {
                    tracing::warn!(error = %err, "sweeper: listing unpublished jobs failed");
                    continue;
                }
            };
            for (zip_id, traceparent) in pending {
                // The publish joins the trace of the request that stored the job.
                let span = tracing::info_span!("sweep", zip.id = %zip_id);
                telemetry::continue_trace(&span, traceparent.as_deref());
                match self
                    .publish(&mut conn, zip_id, PublishedBy::Sweeper)
                    .instrument(span)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(zip.id = %zip_id, "sweeper: published a job that had no confirmed message")
                    }
                    Err(err) => {
                        tracing::warn!(zip.id = %zip_id, error = %err, "sweeper: publishing failed; will retry");
                        break;
                    }
                }
            }
        }
    }
}
