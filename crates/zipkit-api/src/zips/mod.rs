//! Zip jobs as the API sees them: the create request and its validation, and the zip object.

pub mod dry_run;
pub mod request;
pub mod strict_json;
