//! OpenAPI schemas of the text enums, from the domain's own lists of values, so a new variant
//! appears in the document by itself.

use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use crate::models::{Encryption, StorageClasses};
use crate::{Compression, OnError, Service, ZipStatus};

fn text_enum<'a>(values: impl IntoIterator<Item = &'a str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

pub fn zip_status() -> Object {
    text_enum(ZipStatus::ALL.iter().map(|v| v.as_str()))
}

pub fn service() -> Object {
    text_enum(Service::ALL.iter().map(|v| v.as_str()))
}

/// The storage classes a job may ask for.
pub fn storage_class() -> Object {
    text_enum(std::iter::once("STANDARD").chain(StorageClasses::TRIED))
}

/// The `x-amz-server-side-encryption` values a job may ask for.
pub fn encryption() -> Object {
    text_enum(Encryption::HEADERS)
}

pub fn compression() -> Object {
    text_enum(Compression::ALL.iter().map(|v| v.as_str()))
}

pub fn on_error() -> Object {
    text_enum(OnError::ALL.iter().map(|v| v.as_str()))
}
