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

use tracing::Instrument;
use zipkit_egress::EgressPolicy;
use zipkit_runtime::backoff::Backoff;
use zipkit_runtime::telemetry;
use zipkit_storage::BucketClients;

/// Queues the `zip.completed` event of a zip that just succeeded or failed. Call inside the
/// transaction that set its final state.
pub async fn enqueue_completed(
    conn: &mut AsyncPgConnection,
    zip: &Zip,
    links: (&BucketClients, &KeyRing),
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
    let skipped = Zip::skipped_entries(conn, &[zip.id])
        .await?
        .remove(&zip.id)
        .unwrap_or_default();
    let expected_size = Zip::expected_size(conn, zip.id).await?;
    // The link lives from now: a delivery retried later carries the same one.
    let source = Zip::download_sources(conn, &[zip.id]).await?.pop();
    let link = match &source {
        Some(source) if zip.status == ZipStatus::Succeeded => {
            let (buckets, keyring) = links;
            buckets
                .download_link(keyring, source, &zip.object_key)
                .await
        }
        _ => None,
    };
    let event = Event::zip_completed(
        ZipObject::new(zip.clone(), bucket, expected_size, skipped)
            .with_result(source.as_ref(), link),
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
        zipkit_runtime::telemetry::traceparent(&tracing::Span::current()).as_deref(),
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
    pub egress: EgressPolicy,
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
        egress: EgressPolicy,
    ) -> Self {
        // Endpoint URLs are customer-supplied like sources: the same egress policy, no redirects.
        let http = zipkit_egress::reqwest_builder(&egress, 0)
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .user_agent(concat!("zipkit-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the webhook HTTP client configuration is valid");
        Self {
            pool,
            keyring,
            settings,
            http,
            egress,
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
    /// One attempt at a delivery, in the trace of the job whose event it carries.
    async fn deliver(&self, delivery: WebhookDelivery) {
        let span = tracing::info_span!(
            "webhook delivery",
            otel.kind = "client",
            delivery.id = %delivery.id,
            event.kind = %delivery.event_type,
            attempt = delivery.attempts + 1,
        );
        telemetry::continue_trace(&span, delivery.traceparent.as_deref());
        self.attempt(delivery).instrument(span).await;
    }

    async fn attempt(&self, delivery: WebhookDelivery) {
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
        let (status_code, error, worth_retrying) = match self.send(&endpoint, &delivery).await {
            Ok(status) => (Some(i32::from(status)), None, true),
            Err(e) => (None, Some(e.message), !e.forbidden),
        };
        let delivered = status_code.is_some_and(|c| (200..300).contains(&c));
        let attempt = delivery.attempts + 1;
        // Doubling from `first_retry_secs`, at most an hour apart.
        let backoff = Backoff::new(
            Duration::from_secs(self.settings.first_retry_secs),
            Duration::from_secs(3600),
        );
        let delay = backoff.delay(u32::try_from(attempt).unwrap_or(1));
        let next = chrono::Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let give_up_at = delivery.created_at
            + chrono::Duration::seconds(
                i64::try_from(self.settings.retry_for_secs).unwrap_or(i64::MAX / 2),
            );
        let result = AttemptResult {
            status_code,
            error: error.clone(),
            duration_ms: i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX),
            retry_at: (!delivered && worth_retrying && next <= give_up_at).then_some(next),
        };
        let outcome = match (delivered, result.retry_at.is_some(), worth_retrying) {
            (true, _, _) => "delivered",
            (false, true, _) => "retrying",
            (false, false, true) => "failed",
            (false, false, false) => "refused",
        };
        metrics::counter!(zipkit_runtime::metrics::WEBHOOK_DELIVERIES, "outcome" => outcome)
            .increment(1);
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
    ) -> Result<u16, SendError> {
        let secret = endpoint.signing_secret(&self.keyring).map_err(|_| {
            SendError::retry(
                "the endpoint's signing secret cannot be decrypted with the configured keys",
            )
        })?;
        // reqwest resolves names through the policy but connects to literals directly.
        let url = url::Url::parse(&endpoint.url).map_err(|_| SendError::retry("not a URL"))?;
        if self.egress.check_url(&url).is_err() {
            return Err(SendError::forbidden());
        }
        let body =
            serde_json::to_vec(&delivery.payload).map_err(|e| SendError::retry(e.to_string()))?;
        let timestamp = chrono::Utc::now().timestamp();
        let response = self
            .http
            .post(url)
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
                if zipkit_egress::is_forbidden(&e) {
                    SendError::forbidden()
                } else if e.is_timeout() {
                    SendError::retry("timed out")
                } else {
                    SendError::retry("connection failed")
                }
            })?;
        Ok(response.status().as_u16())
    }
}

/// Why an attempt got no answer. An address the egress policy refuses is not retried: it will
/// be refused again.
#[derive(Debug)]
struct SendError {
    message: String,
    forbidden: bool,
}

impl SendError {
    fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            forbidden: false,
        }
    }

    fn forbidden() -> Self {
        Self {
            message: "the endpoint's address is private, loopback, link-local or otherwise internal, which this deployment does not send webhooks to".into(),
            forbidden: true,
        }
    }
}
