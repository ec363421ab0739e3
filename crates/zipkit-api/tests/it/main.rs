//! The API's integration tests, one binary: each file a module, `common` the in-process API
//! on a test's own database and vhost. The real binaries, the chart, the image and a browser are
//! driven from here too.

mod api_docs;
mod binary;
mod browser;
mod cli;
mod common;
mod container;
mod dashboard;
mod headers;
mod health;
mod helm_chart;
mod limits;
mod monitoring;
mod observability;
mod openapi;
mod release;
mod schemathesis;
mod zips;
