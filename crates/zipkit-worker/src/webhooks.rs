//! Webhooks: when a zip ends, its `zip.completed` event is queued for every enabled endpoint of
//! its project in the same transaction as the final state (`enqueue_completed`); any worker's
//! dispatcher then delivers due events, signed, and records every attempt, retrying with
//! exponential backoff for `webhooks.retry_for_secs`.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use secrecy::ExposeSecret;
use tokio::sync::watch;
use zipkit_domain::ZipStatus;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::{AttemptResult, Bucket, WebhookDelivery, WebhookEndpoint, Zip};
use zipkit_domain::views::{BucketRef, Event, ZipObject};
use zipkit_domain::webhooks::{SIGNATURE_HEADER, WebhookSettings, signature};

use crate::egress;

/// Queues the `zip.completed` event of a zip that just succeeded or failed. Call inside the
/// transaction that set its final state.
pub async fn enqueue_completed(
    conn: &mut AsyncPgConnection,
    zip: &Zip,
) -> diesel::QueryResult<usize> {
    if !matches!(zip.status, ZipStatus::Succeeded | ZipStatus::Failed) {
        return Ok(0);
    }
    let bucket = match Bucket::find_any(conn, zip.bucket_id).await? {
        Some(b) => BucketRef {
            service: b.service,
            name: b.name,
        },
        None => return Ok(0),
    };
    let skipped = Zip::skipped_entries(conn, &[zip.id]).await?;
    let event = Event::zip_completed(
        ZipObject::new(zip.clone(), bucket, skipped),
        zip.finished_at.unwrap_or_else(chrono::Utc::now),
    );
    let payload = serde_json::to_value(&event)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    WebhookDelivery::enqueue(
        conn,
        zip.project_id,
        &event.id,
        &event.event_type,
        Some(zip.id),
        &payload,
    )
    .await
}

/// Delivers due webhook events until stopped.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub pool: PgPool,
    pub keyring: Arc<KeyRing>,
    pub settings: WebhookSettings,
    pub http: reqwest::Client,
}

/// Deliveries taken per round.
const BATCH: i64 = 16;
/// How often to look for due deliveries when there were none.
const IDLE: Duration = Duration::from_millis(500);

impl Dispatcher {
    pub fn new(
        pool: PgPool,
        keyring: Arc<KeyRing>,
        settings: WebhookSettings,
        allow_private: bool,
    ) -> Self {
        // Endpoint URLs are customer-supplied like sources: the same SSRF guard, no redirects.
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("zipkit-webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(egress::GuardedResolver);
        }
        let http = builder
            .build()
            .expect("the webhook HTTP client configuration is valid");
        Self {
            pool,
            keyring,
            settings,
            http,
        }
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        // A taken delivery is held for longer than one attempt can last.
        let lease = chrono::Duration::seconds(
            i64::try_from(self.settings.timeout_secs).unwrap_or(10) * 2 + 5,
        );
        while !*stop.borrow() {
            let due = match self.pool.get().await {
                Ok(mut conn) => WebhookDelivery::take_due(&mut conn, BATCH, lease)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let due = due.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not look for due webhooks");
                Vec::new()
            });
            if due.is_empty() {
                let _ = tokio::time::timeout(IDLE, stop.changed()).await;
                continue;
            }
            futures_util::future::join_all(due.into_iter().map(|d| self.deliver(d))).await;
        }
    }

    /// One attempt at one delivery, recorded whatever happens.
    async fn deliver(&self, delivery: WebhookDelivery) {
        let Ok(mut conn) = self.pool.get().await else {
            return;
        };
        let endpoint = match WebhookEndpoint::find(&mut conn, delivery.endpoint_id).await {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => return, // removed: its deliveries went with it
            Err(e) => {
                tracing::warn!(error = %e, "could not load a webhook endpoint");
                return;
            }
        };
        drop(conn);
        let started = tokio::time::Instant::now();
        let (status_code, error) = match self.send(&endpoint, &delivery).await {
            Ok(status) => (Some(i32::from(status)), None),
            Err(e) => (None, Some(e)),
        };
        let delivered = status_code.is_some_and(|c| (200..300).contains(&c));
        let attempt = delivery.attempts + 1;
        let next = chrono::Utc::now()
            + chrono::Duration::from_std(self.settings.retry_delay(attempt)).unwrap_or_default();
        let give_up_at = delivery.created_at
            + chrono::Duration::seconds(
                i64::try_from(self.settings.retry_for_secs).unwrap_or(i64::MAX / 2),
            );
        let result = AttemptResult {
            status_code,
            error: error.clone(),
            duration_ms: i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX),
            retry_at: (!delivered && next <= give_up_at).then_some(next),
        };
        tracing::info!(
            delivery.id = %delivery.id, event.id = %delivery.event_id, attempt,
            status = ?status_code, error = ?error, "webhook attempt"
        );
        match self.pool.get().await {
            Ok(mut conn) => {
                if let Err(e) =
                    WebhookDelivery::record_attempt(&mut conn, delivery.id, &result).await
                {
                    tracing::warn!(error = %e, "could not record a webhook attempt");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not record a webhook attempt"),
        }
    }

    /// POSTs the event, signed; the answer's status, or why there was none.
    async fn send(
        &self,
        endpoint: &WebhookEndpoint,
        delivery: &WebhookDelivery,
    ) -> Result<u16, String> {
        let secret = endpoint.signing_secret(&self.keyring).map_err(|_| {
            "the endpoint's signing secret cannot be decrypted with the configured keys".to_owned()
        })?;
        let body = serde_json::to_vec(&delivery.payload).map_err(|e| e.to_string())?;
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .http
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(secret.expose_secret(), timestamp, &body),
            )
            .header("Zipkit-Event-Id", &delivery.event_id)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if egress::is_forbidden(&e) {
                    "the endpoint's address is private, loopback or link-local".to_owned()
                } else if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    "connection failed".to_owned()
                }
            })?;
        Ok(response.status().as_u16())
    }
}
