//! The OpenAPI document, generated from the handlers' annotations and the very types that
//! serialize requests and responses, so it cannot drift from the code. Served at
//! `/v1/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
// The enums' schemas, for `schema_with` in this crate's annotations.
pub use zipkit_domain::views::schema::{compression, on_error, service, zip_status};

use crate::error::{ErrorBody, ErrorEnvelope};
use crate::routes::zips::{ZipList, ZipResponse};
use crate::zips::request::{CreateZipBody, UrlItem};
use zipkit_domain::views::{
    BucketRef, Event, EventData, Progress, Skipped, ZipError, ZipObject, ZipResult,
};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "zipkit", description = "Stream URLs into one ZIP archive in your own S3 or R2 bucket."),
    paths(
        crate::routes::zips::create,
        crate::routes::zips::get,
        crate::routes::zips::list,
        crate::routes::zips::cancel,
    ),
    components(schemas(
        CreateZipBody, UrlItem, ZipObject, BucketRef, Progress, ZipResult, Skipped, ZipError,
        ZipResponse, ZipList, ErrorEnvelope, ErrorBody, Event, EventData,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
