//! Plumbing both zipkit binaries share: layered settings, telemetry, the broker connection and
//! its topology, readiness, metrics, and the shutdown signal.

pub mod broker;
pub mod metrics;
pub mod readiness;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
