//! Test harness on the real local services (see scripts/services.sh): each test gets its own
//! PostgreSQL database (copied from a migrated template), its own RabbitMQ vhost and its own
//! S3 bucket, all removed when the test ends, and leftovers of crashed runs swept by age.

pub mod broker;
pub mod bucket;
pub mod canned_http;
pub mod chart;
pub mod database;
pub mod exclusive;
pub mod internal;
pub mod leftovers;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod readers;
pub mod receiver;
pub mod serve;
pub mod services;
pub mod settings;
pub mod sources;
pub mod stack;
pub mod store_proxy;
pub mod tls;

pub use broker::TestBroker;
pub use bucket::TestBucket;
pub use database::TestDatabase;
