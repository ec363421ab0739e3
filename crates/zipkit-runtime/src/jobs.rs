//! The jobs queue on the wire, owned here for both binaries: how a job message is published
//! (persistent, confirmed, the job's id as message id, the trace context as a `traceparent`
//! header), delayed through the retry queue, and read back, settled or dead-lettered by a
//! worker. The body is the domain's `JobMessage` in bytes; this module frames it.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::broker::{Broker, BrokerSettings, PublishError, Topology, connect, publish_confirmed};

/// The AMQP header that carries the W3C trace context of whoever published the message.
const TRACEPARENT: &str = "traceparent";

/// A job message to publish.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingJob<'a> {
    /// The job's id (the AMQP message id).
    pub id: &'a str,
    pub body: &'a [u8],
    /// The trace the consumer's span joins.
    pub traceparent: Option<&'a str>,
}

impl OutgoingJob<'_> {
    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        if let Some(traceparent) = self.traceparent {
            headers.insert(
                TRACEPARENT.into(),
                AMQPValue::LongString(traceparent.into()),
            );
        }
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(self.id.into())
            .with_headers(headers)
    }
}

impl Broker {
    /// Puts a job on the jobs queue; `Ok` once the broker has confirmed it.
    pub async fn publish_job(&self, job: OutgoingJob<'_>) -> Result<(), PublishError> {
        self.publish(&self.topology().jobs, job.body, job.properties())
            .await
    }

    /// Puts a job on the retry queue, which hands it back to the jobs queue after `delay`.
    pub async fn delay_job(
        &self,
        job: OutgoingJob<'_>,
        delay: Duration,
    ) -> Result<(), PublishError> {
        let expiration = delay.as_millis().to_string();
        let properties = job.properties().with_expiration(expiration.as_str().into());
        self.publish(&self.topology().retry, job.body, properties)
            .await
    }
}

/// Publishes one job on a connection of its own and closes it (the bench and tests, which keep
/// no `Broker`).
pub async fn publish_one(
    settings: &BrokerSettings,
    job: OutgoingJob<'_>,
) -> Result<(), PublishError> {
    let (connection, channel) = connect(settings).await?;
    let jobs = Topology::new(&settings.queue_prefix).jobs;
    let published = publish_confirmed(&channel, &jobs, job.body, job.properties()).await;
    let _ = connection.close(200, "done".into()).await;
    published
}

/// A job message a worker received, to be settled exactly once.
#[derive(Debug)]
pub struct IncomingJob {
    delivery: Delivery,
}

impl From<Delivery> for IncomingJob {
    fn from(delivery: Delivery) -> Self {
        Self { delivery }
    }
}

impl IncomingJob {
    pub fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    /// The `traceparent` header, when the publisher set one.
    pub fn traceparent(&self) -> Option<String> {
        let headers = self.delivery.properties.headers().as_ref()?;
        match headers.inner().get(TRACEPARENT)? {
            AMQPValue::LongString(value) => Some(value.to_string()),
            _ => None,
        }
    }

    /// Done with: the broker forgets the message.
    pub async fn ack(&self) -> Result<(), lapin::Error> {
        self.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
    }

    /// Back to the jobs queue at once (trouble on this side, or a worker stopping).
    pub async fn requeue(&self) -> Result<(), lapin::Error> {
        self.nack(true).await
    }

    /// To the dead-letter queue, for inspection (unreadable, or out of attempts).
    pub async fn dead_letter(&self) -> Result<(), lapin::Error> {
        self.nack(false).await
    }

    async fn nack(&self, requeue: bool) -> Result<(), lapin::Error> {
        let options = BasicNackOptions {
            requeue,
            ..BasicNackOptions::default()
        };
        self.delivery.acker.nack(options).await.map(drop)
    }
}
