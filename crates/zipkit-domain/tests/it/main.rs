//! The domain's integration tests against a real PostgreSQL, one binary: each file a module.

mod common;
mod migrations;
mod models;
