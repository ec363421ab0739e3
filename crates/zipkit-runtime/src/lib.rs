//! Plumbing both zipkit binaries share: layered settings, telemetry, the broker connection and
//! its topology, readiness, metrics, the shutdown signal and the backoff schedule.

pub mod backoff;
pub mod broker;
pub mod metrics;
pub mod readiness;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
