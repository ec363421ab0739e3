//! Getting job messages onto the broker without ever losing an accepted job: the request
//! publishes after its transaction commits; the sweeper republishes every job whose message the
//! broker has not confirmed (broker down, nack, process killed between commit and publish).
//! A message published twice is harmless: workers claim jobs with a conditional UPDATE.

use std::time::Duration;

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::watch;
use zipkit_domain::ZipId;
use zipkit_domain::db::PgPool;
use zipkit_domain::messages::JobMessage;
use zipkit_domain::models::Zip;
use zipkit_runtime::broker::{Broker, PublishError};
use zipkit_runtime::metrics;

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
    Record(String),
}

impl JobPublisher {
    /// Publishes the job's message with confirms, then records that the broker has it.
    /// Publishes the job's message with confirms, then records on `conn` that the broker has it.
    /// The caller's connection is used (not one more from the pool), so a request holding a
    /// connection can never wait on the pool for a second one.
    pub async fn publish(
        &self,
        conn: &mut AsyncPgConnection,
        zip_id: ZipId,
        traceparent: Option<String>,
        by: PublishedBy,
    ) -> Result<(), PublishJobError> {
        let message = JobMessage::first(zip_id, traceparent.clone());
        let mut headers = FieldTable::default();
        if let Some(traceparent) = traceparent {
            headers.insert(
                "traceparent".into(),
                AMQPValue::LongString(traceparent.into()),
            );
        }
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(zip_id.to_string().into())
            .with_headers(headers);
        let published = self
            .broker
            .publish(
                &self.broker.topology().jobs,
                &message.to_bytes(),
                properties,
            )
            .await;
        let counter = if published.is_ok() {
            metrics::JOBS_PUBLISHED
        } else {
            metrics::PUBLISH_FAILURES
        };
        ::metrics::counter!(counter, "by" => by.label()).increment(1);
        published?;
        Zip::mark_published(conn, zip_id)
            .await
            .map_err(|e| PublishJobError::Record(e.to_string()))
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
            for zip_id in pending {
                match self
                    .publish(&mut conn, zip_id, None, PublishedBy::Sweeper)
                    .await
                {
                    Ok(()) => {
                        ::metrics::counter!(metrics::SWEEPER_REPUBLISHED).increment(1);
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

/// The W3C trace context for the job: a child of the request's `traceparent` when it sent a
/// valid one, otherwise a new trace. (Full OpenTelemetry export comes with the operations work.)
pub fn traceparent(incoming: Option<&str>) -> String {
    let span = hex(&random::<8>());
    match incoming.and_then(parse_trace_id) {
        Some(trace) => format!("00-{trace}-{span}-01"),
        None => format!("00-{}-{span}-01", hex(&random::<16>())),
    }
}

fn parse_trace_id(header: &str) -> Option<&str> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && is_hex(trace, 32)
        && is_hex(span, 16)
        && is_hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    valid.then_some(trace)
}

fn random<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    // A trace id only needs to be unique; fall back to the clock if the OS RNG fails.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_le_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = nanos[i % nanos.len()];
        }
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_incoming_traceparent_keeps_its_trace_id() {
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let child = traceparent(Some(incoming));
        assert!(
            child.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{child}"
        );
        assert_ne!(child, incoming, "a new span id");
    }

    #[test]
    fn a_missing_or_malformed_traceparent_starts_a_new_trace() {
        for incoming in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        ] {
            let fresh = traceparent(incoming);
            let trace = parse_trace_id(&fresh).expect("well-formed");
            assert_ne!(trace, "00000000000000000000000000000000");
        }
    }
}
