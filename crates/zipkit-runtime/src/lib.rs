//! Plumbing both zipkit binaries share: layered settings, telemetry, the broker connection and
//! its topology, the jobs queue's message framing, readiness, metrics, the shutdown signal, the backoff schedule and the
//! allocator's settings.

pub mod allocator;
pub mod backoff;
pub mod broker;
pub mod jobs;
pub mod metrics;
pub mod readiness;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
