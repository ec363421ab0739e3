//! The OpenAPI document, generated from the handlers' annotations and the very types that
//! serialize requests and responses, so it cannot drift from the code. Served at
//! `/v1/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use zipkit_domain::{Compression, OnError, Service, ZipStatus};

use crate::error::{ErrorBody, ErrorEnvelope};
use crate::routes::zips::{ZipList, ZipResponse};
use crate::zips::request::{CreateZipBody, UrlItem};
use crate::zips::view::{BucketRef, Progress, Skipped, ZipError, ZipObject, ZipResult};

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
        ZipResponse, ZipList, ErrorEnvelope, ErrorBody,
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

fn text_enum<'a>(values: impl IntoIterator<Item = &'a str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

// The enums' values come from the domain's own lists, so a new variant appears here by itself.
pub fn zip_status() -> Object {
    text_enum(ZipStatus::ALL.iter().map(|v| v.as_str()))
}

pub fn service() -> Object {
    text_enum(Service::ALL.iter().map(|v| v.as_str()))
}

pub fn compression() -> Object {
    text_enum(Compression::ALL.iter().map(|v| v.as_str()))
}

pub fn on_error() -> Object {
    text_enum(OnError::ALL.iter().map(|v| v.as_str()))
}
