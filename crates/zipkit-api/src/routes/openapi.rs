//! The OpenAPI document, generated from the handlers' annotations and the very types that
//! serialize requests and responses, so it cannot drift from the code. Served at
//! `/v1/openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorEnvelope};
use crate::routes::zips::{CreateAnswer, SkippedList, ZipList, ZipResponse};
use crate::zips::dry_run::{DryRun, DryRunResponse, Failure, Problem};
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
        crate::routes::zips::skipped,
    ),
    components(schemas(
        CreateZipBody, UrlItem, ZipObject, BucketRef, Progress, ZipResult, Skipped, ZipError,
        ZipResponse, ZipList, SkippedList, ErrorEnvelope, ErrorBody, Event, EventData, CreateAnswer,
        DryRunResponse, DryRun, Problem, Failure,
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

pub async fn document(state: actix_web::web::Data<crate::state::AppState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.openapi)
}

/// What a key or filename character may not be, as a regex class body: `/` (the separator,
/// handled by the patterns), backslash, and control characters (C0, DEL, C1).
const NOT_IN_SEGMENT: &str = r"/\\\u0000-\u001f\u007f-\u009f";

/// Control characters (C0, DEL, C1), as a regex class body.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// One segment of at most `max` characters that is neither `.` nor `..`, as a regex without
/// look-arounds (so schema-driven generators can produce it).
fn segment(max: usize) -> String {
    let c = NOT_IN_SEGMENT;
    format!(
        r"([^.{c}][^{c}]{{0,{a}}}|\.[^.{c}][^{c}]{{0,{b}}}|\.\.[^{c}]{{1,{b}}})",
        a = max - 1,
        b = max - 2,
    )
}

/// A `/`-separated path: `first`, then segments as `segment(max)` describes.
fn path_pattern(first: &str, max: usize) -> String {
    format!("^{first}(/{})*$", segment(max))
}

/// A filename's first segment: as any segment, and not starting with a drive letter (`C:`).
fn first_filename_segment(max: usize) -> String {
    let c = NOT_IN_SEGMENT;
    format!(
        r"([A-Za-z]|[A-Za-z][^:{c}][^{c}]{{0,{b}}}|[^A-Za-z.{c}][^{c}]{{0,{a}}}|\.[^.{c}][^{c}]{{0,{b}}}|\.\.[^{c}]{{1,{b}}})",
        a = max - 1,
        b = max - 2,
    )
}

/// The document as served: utoipa's, plus what the validators enforce and annotations cannot
/// state — patterns and bounds from the domain's own constants and this deployment's settings —
/// so generated clients and schema-driven testers send what the server accepts and nothing it
/// refuses. The rules that JSON Schema cannot express (filenames unique ignoring case and
/// Unicode normalization; URLs the URL standard parses) are in the descriptions.
/// An optional object of at most `most` strings, keys of 1 to `key_chars` characters without
/// control characters, values of at most `value_chars` matching `value_pattern`.
fn string_map(
    description: &str,
    (most, key_chars, value_chars): (usize, usize, usize),
    value_pattern: &str,
) -> serde_json::Value {
    serde_json::json!({
        "type": ["object", "null"],
        "description": description,
        "maxProperties": most,
        "propertyNames": {
            "minLength": 1,
            "maxLength": key_chars,
            "pattern": format!("^[^{CONTROL}]+$"),
        },
        "additionalProperties": {
            "type": "string",
            "maxLength": value_chars,
            "pattern": value_pattern,
        },
    })
}

pub fn served(limits: crate::zips::request::Limits) -> serde_json::Value {
    use serde_json::json;
    use zipkit_domain::values::{
        MAX_ENTRY_NAME_BYTES, MAX_OBJECT_KEY_BYTES, MAX_SEGMENT_BYTES, MAX_SOURCE_URL_BYTES,
    };

    use crate::zips::request::{
        MAX_METADATA_KEY_CHARS, MAX_METADATA_KEYS, MAX_METADATA_VALUE_CHARS, MAX_TAG_KEY_CHARS,
        MAX_TAG_VALUE_CHARS, MAX_TAGS,
    };

    // A conservative form of "absolute http(s) URL without credentials": a lower-case host whose
    // last label starts with a letter (a numeric one would be read as an IPv4 address), an
    // optional port, a path of unreserved characters; or an object or prefix of a bucket.
    const SOURCE_PATTERN: &str = r"^(https?://([a-z0-9]{1,20}\.){0,3}[a-z][a-z0-9]{0,19}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]*)*|s3://[a-z0-9][a-z0-9-]{1,20}[a-z0-9]/([A-Za-z0-9_~-]{1,20}/){0,3}([A-Za-z0-9_~-]{1,20}(\.[a-z0-9]{1,5})?)?)$";
    // A manifest is one object: http(s), or a bucket's key that does not end in `/`.
    const MANIFEST_PATTERN: &str = r"^(https?://([a-z0-9]{1,20}\.){0,3}[a-z][a-z0-9]{0,19}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]*)*|s3://[a-z0-9][a-z0-9-]{1,20}[a-z0-9]/([A-Za-z0-9_~-]{1,20}/){0,3}[A-Za-z0-9_~-]{1,20}\.(jsonl|csv))$";
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let schemas = &mut doc["components"]["schemas"];
    let body = &mut schemas["CreateZipBody"]["properties"];
    body["urls"]["minItems"] = json!(1);
    body["urls"]["maxItems"] = json!(limits.max_urls);
    // This deployment's bound, not only SigV4's.
    body["download_url_ttl_secs"]["maximum"] = json!(limits.max_download_url_ttl_secs);
    // Two identical items would put one file in twice; the full rule (no two filenames equal
    // ignoring case and Unicode normalization) is beyond JSON Schema and in the description.
    body["urls"]["uniqueItems"] = json!(true);
    body["urls"]["description"] = json!(
        "The sources, in archive order. No two `filename`s may be equal ignoring letter case and \
         Unicode normalization (they would overwrite each other when extracted on Windows or macOS)."
    );
    // `urls` or `manifest`, one of them.
    schemas["CreateZipBody"]["oneOf"] = json!([{"required": ["urls"]}, {"required": ["manifest"]}]);
    let body = &mut schemas["CreateZipBody"]["properties"];
    // Present means given: neither takes `null`.
    body["urls"]["type"] = json!("array");
    body["manifest"]["type"] = json!("string");
    body["manifest"]["pattern"] = json!(MANIFEST_PATTERN);
    body["manifest"]["maxLength"] = json!(MAX_SOURCE_URL_BYTES);
    body["manifest_format"]["enum"] = json!(["jsonl", "csv"]);
    body["bucket_name"]["minLength"] = json!(1);
    body["bucket_name"]["pattern"] = json!(format!("^[^{CONTROL}]+$"));
    body["key"]["minLength"] = json!(1);
    body["key"]["maxLength"] = json!(MAX_OBJECT_KEY_BYTES);
    body["key"]["pattern"] = json!(path_pattern(
        &segment(MAX_OBJECT_KEY_BYTES),
        MAX_OBJECT_KEY_BYTES
    ));
    body["metadata"] = string_map(
        "A flat object of strings, echoed on the zip and in webhooks.",
        (
            MAX_METADATA_KEYS,
            MAX_METADATA_KEY_CHARS,
            MAX_METADATA_VALUE_CHARS,
        ),
        r"^[^\u0000]*$",
    );
    // The archive object's headers: visible ASCII (and spaces), S3's limits on tags.
    body["cache_control"]["pattern"] = json!("^[ -~]{1,256}$");
    body["sse_kms_key_id"]["pattern"] = json!("^[!-~]{1,2048}$");
    body["tags"] = string_map(
        "The archive object's tags, only for a bucket found to keep tags.",
        (MAX_TAGS, MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS),
        &format!("^[^{CONTROL}]*$"),
    );
    let item = &mut schemas["UrlItem"]["properties"];
    item["url"]["pattern"] = json!(SOURCE_PATTERN);
    // A conservative form of the globs a prefix takes: folders of plain characters, a `*` in
    // each, or `**` for any depth (the full syntax is in the descriptions).
    let glob = r"(\*\*|[A-Za-z0-9_-]{0,20}\*?[A-Za-z0-9_.-]{0,20})";
    for list in ["include", "exclude"] {
        item[list]["type"] = json!("array");
        item[list]["maxItems"] = json!(zipkit_domain::values::MAX_PATTERNS);
        item[list]["items"] = json!({
            "type": "string",
            "minLength": 1,
            "maxLength": zipkit_domain::values::MAX_PATTERN_BYTES,
            "pattern": format!("^{glob}(/{glob}){{0,3}}$"),
        });
    }
    item["path"]["pattern"] = json!(r"^([A-Za-z0-9_-]{1,20}/){0,3}$");
    item["url"]["maxLength"] = json!(MAX_SOURCE_URL_BYTES);
    item["filename"]["minLength"] = json!(1);
    item["filename"]["maxLength"] = json!(MAX_ENTRY_NAME_BYTES);
    item["filename"]["pattern"] = json!(path_pattern(
        &first_filename_segment(MAX_SEGMENT_BYTES),
        MAX_SEGMENT_BYTES
    ));

    for (path, method) in [
        ("/v1/zips", "post"),
        ("/v1/zips", "get"),
        ("/v1/zips/{uuid}", "get"),
        ("/v1/zips/{uuid}/cancel", "post"),
        ("/v1/zips/{uuid}/skipped", "get"),
    ] {
        let operation = &mut doc["paths"][path][method];
        let responses = &mut operation["responses"];
        responses["429"] = json!({
            "description": "Over a rate limit; retry after `Retry-After` seconds",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
        });
        if (path, method) == ("/v1/zips", "get") {
            responses["404"] = json!({
                "description": "`starting_after` names no zip of the caller's project",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
            });
        }
        if path.contains("{uuid}") {
            responses["400"] = json!({
                "description": "Not a uuid",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
            });
        }
        if let Some(parameters) = operation["parameters"].as_array_mut() {
            for parameter in parameters {
                let skipped = path.ends_with("/skipped");
                match parameter["name"].as_str() {
                    Some("limit") => {
                        parameter["schema"]["minimum"] = json!(1);
                        parameter["schema"]["maximum"] = json!(if skipped {
                            crate::routes::zips::MAX_SKIPPED_PAGE
                        } else {
                            crate::routes::zips::MAX_PAGE
                        });
                    }
                    // A source's index.
                    Some("starting_after") if skipped => {
                        parameter["schema"]["minimum"] = json!(0);
                        parameter["schema"]["maximum"] = json!(i32::MAX);
                    }
                    Some("starting_after") => parameter["schema"]["format"] = json!("uuid"),
                    Some("Idempotency-Key") => {
                        parameter["schema"]["pattern"] = json!(r"^[\x21-\x7e]{1,255}$");
                    }
                    _ => {}
                }
            }
        }
    }
    doc
}
