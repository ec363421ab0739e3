//! The RabbitMQ connection both binaries keep open, and the queue topology they both declare.
//!
//! Topology (all durable, on the default exchange):
//! - `<prefix>.jobs`: work queue; a message rejected without requeue dead-letters to `.dead`.
//! - `<prefix>.jobs.retry`: delay queue; a message published with a per-message expiration
//!   returns to `.jobs` when it expires (exponential backoff without a plugin).
//! - `<prefix>.jobs.dead`: jobs that exhausted their attempts, kept for inspection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::watch;

/// `[broker]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`).
    pub url: SecretString,
    /// Prefix of every queue name, so several deployments can share one broker.
    pub queue_prefix: String,
    /// Shown in the RabbitMQ management UI.
    pub connection_name: String,
    /// Upper bound of the reconnect backoff.
    pub reconnect_max_secs: u64,
}

/// The queue names derived from the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub jobs: String,
    pub retry: String,
    pub dead: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Self {
            jobs: format!("{prefix}.jobs"),
            retry: format!("{prefix}.jobs.retry"),
            dead: format!("{prefix}.jobs.dead"),
        }
    }

    /// Declares the queues; idempotent, and identical in both binaries (RabbitMQ refuses a
    /// redeclaration with other arguments).
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let dead_letter_to = |queue: &str| {
            let mut args = FieldTable::default();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(queue.into()),
            );
            args
        };
        channel
            .queue_declare(
                ShortString::from(self.dead.as_str()),
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                ShortString::from(self.jobs.as_str()),
                durable,
                dead_letter_to(&self.dead),
            )
            .await?;
        channel
            .queue_declare(
                ShortString::from(self.retry.as_str()),
                durable,
                dead_letter_to(&self.jobs),
            )
            .await?;
        Ok(())
    }
}

/// Largest AMQP frame this side asks for (bytes); bigger messages are split into several frames.
const FRAME_MAX: u32 = 16 * 1024;

/// Opens a connection, declares the topology, and returns a channel with publisher confirms on.
pub async fn connect(settings: &BrokerSettings) -> lapin::Result<(Connection, Channel)> {
    let properties = ConnectionProperties::default()
        .with_connection_name(settings.connection_name.as_str().into());
    let mut uri: AMQPUri = settings
        .url
        .expose_secret()
        .parse()
        .map_err(|e: String| lapin::Error::from(std::io::Error::other(e)))?;
    // lapin keeps two buffers of 32 frames each per connection: at RabbitMQ's 128 KiB frame that
    // is 8 MiB of a worker's memory for messages of a few hundred bytes. A URL's own `frame_max`
    // wins.
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    let connection = Connection::connect_uri(uri, properties).await?;
    let channel = connection.create_channel().await?;
    Topology::new(&settings.queue_prefix)
        .declare(&channel)
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// Why a message is not known to be safely in its queue.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message")]
    Nacked,
    #[error("no queue `{0}` to route the message to")]
    Unroutable(String),
    #[error("no confirmation from the broker within {0:?}")]
    Timeout(Duration),
}

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes a persistent message to `queue` (mandatory) and waits for the broker's confirm:
/// `Ok` means RabbitMQ has taken responsibility for it.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let properties = properties.with_delivery_mode(2); // persistent
    let confirm = async {
        channel
            .basic_publish("".into(), queue.into(), options, payload, properties)
            .await?
            .await
    };
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| PublishError::Timeout(CONFIRM_TIMEOUT))??;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable(queue.to_owned())),
        Confirmation::Nack(_) | Confirmation::NotRequested => Err(PublishError::Nacked),
    }
}

struct Live {
    connection: Arc<Connection>,
    channel: Channel,
}

struct Inner {
    live: Mutex<Option<Live>>,
    stop: watch::Sender<bool>,
}

/// A supervised broker connection: (re)connects in the background with capped exponential
/// backoff, so the process starts and keeps serving while RabbitMQ is away.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
    topology: Topology,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("connected", &self.is_connected())
            .field("topology", &self.topology)
            .finish()
    }
}

impl Broker {
    /// Starts the supervisor; must be called inside a Tokio runtime.
    pub fn start(settings: BrokerSettings) -> Self {
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            live: Mutex::new(None),
            stop,
        });
        let broker = Self {
            inner: Arc::clone(&inner),
            topology: Topology::new(&settings.queue_prefix),
        };
        tokio::spawn(supervise(Arc::downgrade(&inner), settings, stopped));
        broker
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn is_connected(&self) -> bool {
        self.live()
            .is_some_and(|(connection, _)| connection.status().connected())
    }

    /// A channel with the topology declared, when connected.
    pub fn channel(&self) -> Option<Channel> {
        self.live()
            .filter(|(c, _)| c.status().connected())
            .map(|(_, channel)| channel)
    }

    fn live(&self) -> Option<(Arc<Connection>, Channel)> {
        let guard = self
            .inner
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .as_ref()
            .map(|l| (Arc::clone(&l.connection), l.channel.clone()))
    }

    /// A new channel on the live connection (consumers use their own channel).
    pub async fn open_channel(&self) -> Option<Channel> {
        let (connection, _) = self.live().filter(|(c, _)| c.status().connected())?;
        connection.create_channel().await.ok()
    }

    /// The messages ready in each queue of the topology (`jobs`, `retry`, `dead`), read with
    /// passive declares on a channel of their own (a passive declare of a missing queue closes
    /// its channel); `None` when not connected or the broker did not answer.
    pub async fn queue_depths(&self) -> Option<[(&'static str, u32); 3]> {
        let channel = self.open_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let topology = self.topology();
        let mut depths = [("jobs", 0), ("retry", 0), ("dead", 0)];
        let names = [&topology.jobs, &topology.retry, &topology.dead];
        for ((_, depth), name) in depths.iter_mut().zip(names) {
            let queue = channel
                .queue_declare(name.as_str().into(), passive, FieldTable::default())
                .await
                .ok()?;
            *depth = queue.message_count();
        }
        let _ = channel.close(200, "done".into()).await;
        Some(depths)
    }

    /// Publishes with confirms on the supervised channel (see `publish_confirmed`).
    pub async fn publish(
        &self,
        queue: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let channel = self.channel().ok_or(PublishError::NotConnected)?;
        publish_confirmed(&channel, queue, payload, properties).await
    }

    /// Waits until connected, or gives up after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_connected() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.is_connected()
    }

    /// Stops reconnecting and closes the connection politely.
    pub async fn close(&self) {
        let _ = self.inner.stop.send(true);
        let live = self
            .inner
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(live) = live
            && live.connection.status().connected()
        {
            let _ = live.connection.close(200, "shutting down".into()).await;
        }
    }
}

async fn supervise(
    inner: std::sync::Weak<Inner>,
    settings: BrokerSettings,
    mut stopped: watch::Receiver<bool>,
) {
    let backoff = crate::backoff::Backoff::new(
        Duration::from_millis(250),
        Duration::from_secs(settings.reconnect_max_secs.max(1)),
    );
    let mut failures = 0;
    loop {
        if *stopped.borrow() {
            return;
        }
        let healthy = {
            let Some(inner) = inner.upgrade() else { return };
            let guard = inner
                .live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guard
                .as_ref()
                .is_some_and(|l| l.connection.status().connected())
        };
        if !healthy {
            match connect(&settings).await {
                Ok((connection, channel)) => {
                    let Some(inner) = inner.upgrade() else { return };
                    if *stopped.borrow() {
                        let _ = connection.close(200, "shutting down".into()).await;
                        return;
                    }
                    tracing::info!("connected to the broker");
                    *inner
                        .live
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Live {
                        connection: Arc::new(connection),
                        channel,
                    });
                    failures = 0;
                }
                Err(err) => {
                    failures += 1;
                    let delay = backoff.delay(failures);
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "broker unreachable");
                    if tokio::time::timeout(delay, stopped.changed()).await.is_ok() {
                        return;
                    }
                    continue;
                }
            }
        }
        // Connected: look again shortly (lapin reports a dropped connection through its status).
        if tokio::time::timeout(Duration::from_millis(500), stopped.changed())
            .await
            .is_ok()
        {
            return;
        }
    }
}
