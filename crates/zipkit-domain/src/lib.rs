//! zipkit's domain: the database schema and models, typed ids, parsed values, the job message,
//! and the cryptography for secrets and tokens. It knows nothing of HTTP, AMQP or S3.

pub mod crypto;
pub mod db;
pub mod enums;
pub mod ids;
pub mod messages;
pub mod models;
pub mod schema;
pub mod tokens;
pub mod values;
pub mod views;
pub mod webhooks;

pub use enums::{Compression, DeliveryState, EntryState, OnError, Service, ZipStatus};
pub use ids::{
    AccessTokenId, BucketId, ProjectId, UserId, WebhookDeliveryId, WebhookEndpointId, ZipId,
};
