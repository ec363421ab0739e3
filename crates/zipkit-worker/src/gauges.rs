//! What the worker reads from outside itself for `/metrics`, every `EVERY`: the broker's queue
//! depths (jobs waiting, waiting for a retry, dead-lettered) and the webhook backlog. Every
//! worker reports the same figures; dashboards and alerts take their maximum.

use std::time::Duration;

use tokio::sync::watch;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::WebhookDelivery;
use zipkit_runtime::broker::Broker;
use zipkit_runtime::metrics as names;

const EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Gauges {
    pub broker: Broker,
    pub pool: PgPool,
}

impl Gauges {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            self.read().await;
            let _ = tokio::time::timeout(EVERY, stop.changed()).await;
        }
    }

    /// One reading; a figure that cannot be read keeps its last value.
    pub async fn read(&self) {
        if let Some(depths) = self.broker.queue_depths().await {
            for (queue, depth) in depths {
                metrics::gauge!(names::QUEUE_MESSAGES, "queue" => queue).set(f64::from(depth));
            }
        }
        let backlog = match self.pool.get().await {
            Ok(mut conn) => WebhookDelivery::backlog(&mut conn).await.ok(),
            Err(_) => None,
        };
        if let Some(backlog) = backlog {
            metrics::gauge!(names::WEBHOOK_BACKLOG).set(backlog as f64);
        }
    }
}
