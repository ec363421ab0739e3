//! Webhook deliveries: one per (event, endpoint), written when a zip ends in the same
//! transaction as its final state (so no event is lost), then attempted by any worker until one
//! attempt succeeds or the retry period ends. Every attempt is recorded.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::enums::DeliveryState;
use crate::ids::{ProjectId, WebhookDeliveryId, WebhookEndpointId, ZipId};
use crate::schema::{webhook_deliveries, webhook_delivery_attempts, webhook_endpoints};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = webhook_deliveries, check_for_backend(diesel::pg::Pg))]
pub struct WebhookDelivery {
    pub id: WebhookDeliveryId,
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: WebhookEndpointId,
    pub zip_id: Option<ZipId>,
    pub payload: serde_json::Value,
    pub state: DeliveryState,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The W3C trace context the event was queued in (the job's), so deliveries join its trace.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_delivery_attempts, check_for_backend(diesel::pg::Pg))]
pub struct DeliveryAttempt {
    pub delivery_id: WebhookDeliveryId,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub attempted_at: DateTime<Utc>,
}

/// How an attempt went, as the sender saw it.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    /// `Some(at)`: try again then; `None` with a 2xx: delivered; `None` otherwise: give up.
    pub retry_at: Option<DateTime<Utc>>,
}

impl WebhookDelivery {
    /// Queues `payload` for every enabled endpoint of the project; an event already queued for
    /// an endpoint is not queued twice. Returns how many deliveries were created.
    pub async fn enqueue(
        conn: &mut AsyncPgConnection,
        project: ProjectId,
        event_id: &str,
        event_type: &str,
        zip: Option<ZipId>,
        payload: &serde_json::Value,
        traceparent: Option<&str>,
    ) -> QueryResult<usize> {
        let endpoints: Vec<WebhookEndpointId> = webhook_endpoints::table
            .filter(webhook_endpoints::project_id.eq(project))
            .filter(webhook_endpoints::enabled.eq(true))
            .select(webhook_endpoints::id)
            .load(conn)
            .await?;
        Self::enqueue_for(
            conn,
            &endpoints,
            event_id,
            event_type,
            zip,
            payload,
            traceparent,
        )
        .await
    }

    /// Queues `payload` for the given endpoints (a test event goes to one).
    pub async fn enqueue_for(
        conn: &mut AsyncPgConnection,
        endpoints: &[WebhookEndpointId],
        event_id: &str,
        event_type: &str,
        zip: Option<ZipId>,
        payload: &serde_json::Value,
        traceparent: Option<&str>,
    ) -> QueryResult<usize> {
        let now = Utc::now();
        let rows: Vec<_> = endpoints
            .iter()
            .map(|endpoint| {
                (
                    webhook_deliveries::id.eq(WebhookDeliveryId::new()),
                    webhook_deliveries::event_id.eq(event_id),
                    webhook_deliveries::event_type.eq(event_type),
                    webhook_deliveries::endpoint_id.eq(*endpoint),
                    webhook_deliveries::zip_id.eq(zip),
                    webhook_deliveries::payload.eq(payload),
                    webhook_deliveries::next_attempt_at.eq(now),
                    webhook_deliveries::traceparent.eq(traceparent),
                )
            })
            .collect();
        if rows.is_empty() {
            return Ok(0);
        }
        diesel::insert_into(webhook_deliveries::table)
            .values(rows)
            .on_conflict_do_nothing()
            .execute(conn)
            .await
    }

    /// Takes up to `limit` due deliveries for this sender: their next attempt is pushed back by
    /// `lease`, so another worker does not send them meanwhile (a sender that dies releases them
    /// when the lease passes). Concurrent callers never take the same delivery.
    pub async fn take_due(
        conn: &mut AsyncPgConnection,
        limit: i64,
        lease: chrono::Duration,
    ) -> QueryResult<Vec<Self>> {
        // Raw SQL: the sub-select with SKIP LOCKED is clearer here than in the query builder.
        diesel::sql_query(
            "UPDATE webhook_deliveries SET next_attempt_at = now() + $2, updated_at = now() \
             WHERE id IN (SELECT id FROM webhook_deliveries \
                          WHERE state = 'pending' AND next_attempt_at <= now() \
                          ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind::<diesel::sql_types::BigInt, _>(limit)
        .bind::<diesel::sql_types::Interval, _>(lease)
        .load(conn)
        .await
    }

    /// Deliveries not yet made, due now or waiting for a retry (the metrics' webhook backlog).
    pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
        webhook_deliveries::table
            .filter(webhook_deliveries::state.eq("pending"))
            .count()
            .get_result(conn)
            .await
    }

    /// Records an attempt and moves the delivery on: delivered, retried later, or failed.
    pub async fn record_attempt(
        conn: &mut AsyncPgConnection,
        id: WebhookDeliveryId,
        result: &AttemptResult,
    ) -> QueryResult<()> {
        conn.transaction(async move |conn| {
            let attempt: i32 = diesel::update(webhook_deliveries::table.find(id))
                .set(webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1))
                .returning(webhook_deliveries::attempts)
                .get_result(conn)
                .await?;
            diesel::insert_into(webhook_delivery_attempts::table)
                .values((
                    webhook_delivery_attempts::delivery_id.eq(id),
                    webhook_delivery_attempts::attempt.eq(attempt),
                    webhook_delivery_attempts::status_code.eq(result.status_code),
                    webhook_delivery_attempts::error.eq(&result.error),
                    webhook_delivery_attempts::duration_ms.eq(result.duration_ms.max(0)),
                ))
                .execute(conn)
                .await?;
            let delivered = result.status_code.is_some_and(|c| (200..300).contains(&c));
            let state = match (delivered, result.retry_at) {
                (true, _) => DeliveryState::Succeeded,
                (false, Some(_)) => DeliveryState::Pending,
                (false, None) => DeliveryState::Failed,
            };
            diesel::update(webhook_deliveries::table.find(id))
                .set((
                    webhook_deliveries::state.eq(state),
                    webhook_deliveries::last_status_code.eq(result.status_code),
                    webhook_deliveries::next_attempt_at.eq(if delivered {
                        None
                    } else {
                        result.retry_at
                    }),
                    webhook_deliveries::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
            Ok(())
        })
        .await
    }

    pub async fn find(
        conn: &mut AsyncPgConnection,
        id: WebhookDeliveryId,
    ) -> QueryResult<Option<Self>> {
        webhook_deliveries::table
            .find(id)
            .select(WebhookDelivery::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// An endpoint's most recent deliveries, newest first.
    pub async fn recent(
        conn: &mut AsyncPgConnection,
        endpoint: WebhookEndpointId,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        webhook_deliveries::table
            .filter(webhook_deliveries::endpoint_id.eq(endpoint))
            .order(webhook_deliveries::created_at.desc())
            .limit(limit)
            .select(WebhookDelivery::as_select())
            .load(conn)
            .await
    }

    /// The deliveries of one event (one per endpoint).
    pub async fn for_event(conn: &mut AsyncPgConnection, event_id: &str) -> QueryResult<Vec<Self>> {
        webhook_deliveries::table
            .filter(webhook_deliveries::event_id.eq(event_id))
            .select(WebhookDelivery::as_select())
            .load(conn)
            .await
    }

    /// Every attempt at a delivery, in order.
    pub async fn attempts(
        conn: &mut AsyncPgConnection,
        id: WebhookDeliveryId,
    ) -> QueryResult<Vec<DeliveryAttempt>> {
        webhook_delivery_attempts::table
            .filter(webhook_delivery_attempts::delivery_id.eq(id))
            .order(webhook_delivery_attempts::attempt.asc())
            .select(DeliveryAttempt::as_select())
            .load(conn)
            .await
    }
}
