//! `POST /v1/zips`: the body as sent, and its validation into the domain's `NewZip` parts.
//! Every refusal names the exact parameter (`urls[3].filename`), and nothing is stored or
//! published unless all of it is valid.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{PartialSchema, ToSchema};
use zipkit_domain::models::{
    Encryption, ManifestFormat, NewListing, NewManifest, NewZipEntry, ResultSettings,
    StorageClasses,
};
use zipkit_domain::values::{
    BucketName, EntryName, KeyFilter, MAX_DECLARED_SIZE, ObjectKey, SourceItem, SourceLocation,
    WindowsSafeNames, parse_declared_size, parse_entry_time,
};
use zipkit_domain::{Compression, OnError, Service};

use crate::error::ApiError;

/// The body exactly as the contract defines it; anything else is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateZipBody {
    /// The sources, in archive order; or `manifest` instead.
    #[serde(default)]
    pub urls: Option<Vec<UrlItem>>,
    /// Instead of `urls`, for jobs of many sources: where to read them, one per line, in
    /// archive order: an http(s) URL, or an object of the project's bucket
    /// (`s3://<bucket_name>/<key>`, a bucket that lets jobs read it). At most the deployment's
    /// `api.max_manifest_entries` lines (1,000,000 unless changed), each an item as in `urls`
    /// (`url`, `filename`, `modified_at`, `size`; not a prefix). The job is accepted at once;
    /// the worker reads the manifest, and a bad line fails the job naming it (`manifest:17`).
    #[serde(default)]
    pub manifest: Option<String>,
    /// `jsonl` (one JSON object a line) or `csv` (a header line naming the columns, then a
    /// source a line). By default, `csv` when the manifest's path ends in `.csv`, else `jsonl`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub manifest_format: Option<String>,
    pub bucket_name: String,
    /// Object key of the archive: 1 to 1,024 bytes, no control characters or backslash, no
    /// empty, `.` or `..` segment between `/`.
    pub key: String,
    /// `s3` (default) or `r2`.
    #[serde(default)]
    #[schema(schema_with = zipkit_domain::views::schema::service)]
    pub service: Option<String>,
    /// A flat object of strings, echoed on the zip and in webhooks.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(default)]
    #[schema(schema_with = zipkit_domain::views::schema::compression)]
    pub compression: Option<String>,
    #[serde(default)]
    #[schema(schema_with = zipkit_domain::views::schema::on_error)]
    pub on_error: Option<String>,
    /// Rewrite names Windows cannot create (`< > : " | ? * \`, control characters, a trailing
    /// dot or space, device names such as `CON` or `LPT1.txt`, paths over 260 characters)
    /// instead of refusing the request: each of those characters becomes `_`, a trailing dot or
    /// space becomes `_`, a device name gets `_` after it, a long path has its file name
    /// shortened keeping the extension, and a name that then equals another gets ` (2)`,
    /// ` (3)`… before its extension. Default `false`.
    #[serde(default)]
    pub windows_safe_names: Option<bool>,
    /// Check the request and every source, and answer with the archive a job would build (its
    /// exact size, or a bound when an entry is deflated; its parts; each source that would be
    /// skipped or fail), without creating a job. Default `false`.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// How long the finished archive's presigned download link lives, in seconds
    /// (`result.download_url`): 1 to the deployment's `api.max_download_url_ttl_secs` (at most
    /// 7 days). Default: the deployment's `api.download_url_ttl_secs` (one hour unless changed).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 604_800)]
    pub download_url_ttl_secs: Option<Value>,
    /// The archive object's `Cache-Control` (1 to 256 visible ASCII characters and spaces).
    #[serde(default)]
    pub cache_control: Option<String>,
    /// The archive object's tags: at most 10, keys of 1 to 128 characters, values of at most 256.
    /// Only for a bucket whose test found it keeps tags (R2 does not).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tags: Option<Value>,
    /// `AES256` (the store's own keys) or `aws:kms`; only for a bucket whose test found the
    /// store accepts it (R2 has no KMS).
    #[serde(default)]
    #[schema(schema_with = zipkit_domain::views::schema::encryption)]
    pub server_side_encryption: Option<String>,
    /// The KMS key (id, ARN or alias) for `aws:kms`; without it, the store's default key.
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
    /// The archive object's storage class: `STANDARD`, or one the bucket's test found the store
    /// takes (`STANDARD_IA`, `ONEZONE_IA`, `INTELLIGENT_TIERING`, `REDUCED_REDUNDANCY`).
    #[serde(default)]
    #[schema(schema_with = zipkit_domain::views::schema::storage_class)]
    pub storage_class: Option<String>,
    /// Delete the archive this many days (1 to 3,650) after the job finished; only for a
    /// bucket whose test found its keys may delete.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlItem {
    /// An absolute http(s) URL without credentials; or an object in one of the project's
    /// buckets, `s3://<bucket_name>/<key>` (the key exactly as stored, not percent-encoded);
    /// or every object under a prefix of one, `s3://<bucket_name>/<prefix>/` (a trailing `/`;
    /// `s3://<bucket_name>/` for the whole bucket), listed by the worker in key order. A bucket
    /// read this way must allow it (`read_sources`, set on its dashboard page or with
    /// `zipkit-api bucket sources`).
    pub url: String,
    /// Path inside the archive; `/` makes folders. A name Windows cannot create (`< > : " | ? *`,
    /// a folder or file name ending in a dot or a space, a device name such as `CON` or
    /// `lpt1.txt`, over 260 UTF-16 units) is refused unless the body sets `windows_safe_names`.
    /// Required for an http(s) source; for a bucket object it defaults to the key's last
    /// segment; a prefix takes `path` instead.
    #[serde(default)]
    pub filename: Option<String>,
    /// The entry's modification time (RFC 3339, e.g. `2026-03-01T09:30:00Z`); by default the
    /// source's `Last-Modified`, else the job's creation time.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub modified_at: Option<String>,
    /// The source's size in bytes, when known ahead (a source that sends no `Content-Length`
    /// then gets no ZIP64 fields unless it needs them). The source must send exactly this many
    /// bytes, or the entry fails with `source_size_mismatch`.
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    pub size: Option<Value>,
    /// A prefix only: glob patterns on the key below the prefix; an object is taken when it
    /// matches one (all are taken when this is absent). `*`, `?` and `[…]` stay within a
    /// folder, `**` crosses folders, `{a,b}` is either; a pattern without `/` matches the file
    /// name at any depth (`*.pdf`). At most 20 patterns of 256 bytes.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// A prefix only: objects matching any of these glob patterns are left out (same rules as
    /// `include`).
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    /// A prefix only: the folder in the archive its objects go under, keeping their folders
    /// below the prefix (`2026/` puts `s3://b/photos/a/1.jpg` listed from `s3://b/photos/` at
    /// `2026/a/1.jpg`). By default, the archive's root.
    #[serde(default)]
    pub path: Option<String>,
}

/// Limits on a create request, from `[api]` settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_urls: usize,
    pub max_manifest_entries: u32,
    pub download_url_ttl_secs: u32,
    pub max_download_url_ttl_secs: u32,
}

/// Metadata bounds (as Stripe's): enough for ids and labels, never a payload store.
pub const MAX_METADATA_KEYS: usize = 50;
pub const MAX_METADATA_KEY_CHARS: usize = 40;
pub const MAX_METADATA_VALUE_CHARS: usize = 500;

/// A create request that passed every check; the bucket is resolved separately (it needs the caller).
#[derive(Debug)]
pub struct ValidZip {
    /// The sources given one by one, in request order.
    pub entries: Vec<NewZipEntry>,
    /// The prefixes the worker lists, each at its place among the items.
    pub listings: Vec<NewListing>,
    /// Instead of items: the manifest the worker reads them from.
    pub manifest: Option<NewManifest>,
    /// Each bucket the sources are read from, in request order, with the param of the first
    /// place naming it (`urls[3].url`, `manifest`).
    pub source_buckets: Vec<(BucketName, String)>,
    pub bucket_name: String,
    pub service: Service,
    pub key: ObjectKey,
    pub metadata: Map<String, Value>,
    pub compression: Compression,
    pub on_error: OnError,
    pub dry_run: bool,
    pub result_settings: ResultSettings,
}

/// Deserializes the JSON body into `CreateZipBody`, naming the parameter on failure. Only an
/// object is a body and only objects are url items: serde would also read a struct from an
/// array, by position. Unknown and missing members are found before serde reads the body, by
/// the names the OpenAPI document publishes for each object.
pub fn parse_body(value: Value) -> Result<CreateZipBody, ApiError> {
    let Some(body) = value.as_object() else {
        return Err(ApiError::bad_request(
            "parameter_invalid",
            "the body must be a JSON object with `urls`, `bucket_name` and `key`",
            None,
        ));
    };
    BODY_MEMBERS.check(body, "")?;
    if let Some(Value::Array(items)) = body.get("urls") {
        for (i, item) in items.iter().enumerate() {
            let Some(item) = item.as_object() else {
                return Err(ApiError::bad_request(
                    "parameter_invalid",
                    format!("`urls[{i}]` must be an object with `url` and `filename`"),
                    format!("urls[{i}]"),
                ));
            };
            ITEM_MEMBERS.check(item, &format!("urls[{i}]."))?;
        }
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let message = err.inner().to_string();
        match err.path().iter().next() {
            None => ApiError::bad_request("parameter_invalid", message, None),
            Some(_) => {
                let path = err.path().to_string();
                ApiError::bad_request("parameter_invalid", format!("`{path}`: {message}"), path)
            }
        }
    })
}

/// The members an object of the body may have and must have.
struct Members {
    known: Vec<String>,
    required: Vec<String>,
}

static BODY_MEMBERS: LazyLock<Members> = LazyLock::new(Members::of::<CreateZipBody>);
static ITEM_MEMBERS: LazyLock<Members> = LazyLock::new(Members::of::<UrlItem>);

impl Members {
    /// Read from the schema the OpenAPI document publishes for `T`, which the same fields as
    /// serde's derive make, so the check and the contract cannot disagree.
    fn of<T: PartialSchema>() -> Self {
        let schema = serde_json::to_value(T::schema()).unwrap_or_default();
        let names = |list: Option<Vec<&str>>| -> Vec<String> {
            list.unwrap_or_default()
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        Self {
            known: names(
                schema["properties"]
                    .as_object()
                    .map(|p| p.keys().map(String::as_str).collect()),
            ),
            required: names(
                schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect()),
            ),
        }
    }

    /// The first member not known (`parameter_unknown`), else the first required one absent
    /// (`parameter_missing`), named after `at` (`urls[2].`).
    fn check(&self, object: &Map<String, Value>, at: &str) -> Result<(), ApiError> {
        if let Some(name) = object.keys().find(|name| !self.known.contains(name)) {
            let param = format!("{at}{name}");
            return Err(ApiError::bad_request(
                "parameter_unknown",
                format!("`{param}` is not a known parameter"),
                param,
            ));
        }
        if let Some(name) = self
            .required
            .iter()
            .find(|name| !object.contains_key(*name))
        {
            let param = format!("{at}{name}");
            return Err(ApiError::bad_request(
                "parameter_missing",
                format!("`{param}` is required"),
                param,
            ));
        }
        Ok(())
    }
}

pub fn validate(body: CreateZipBody, limits: Limits) -> Result<ValidZip, ApiError> {
    let (urls, manifest) = match (body.urls, body.manifest) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "parameter_invalid",
                "give `urls` or `manifest`, not both",
                "manifest".to_owned(),
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "parameter_missing",
                "`urls` is required (or `manifest`, for jobs of many sources)",
                "urls".to_owned(),
            ));
        }
        (Some(urls), None) => (urls, None),
        (None, Some(manifest)) => (
            Vec::new(),
            Some(validate_manifest(
                &manifest,
                body.manifest_format.clone(),
                limits,
            )?),
        ),
    };
    if manifest.is_none() && urls.is_empty() {
        return Err(ApiError::bad_request(
            "urls_empty",
            "`urls` must list at least one source",
            "urls".to_owned(),
        ));
    }
    if manifest.is_none() && body.manifest_format.is_some() {
        return Err(ApiError::bad_request(
            "parameter_invalid",
            "`manifest_format` goes only with `manifest`",
            "manifest_format".to_owned(),
        ));
    }
    if urls.len() > limits.max_urls {
        return Err(ApiError::bad_request(
            "urls_too_many",
            format!(
                "`urls` lists {} sources; the limit is {} (a `manifest` takes up to {})",
                urls.len(),
                limits.max_urls,
                limits.max_manifest_entries
            ),
            "urls".to_owned(),
        ));
    }
    let Sources {
        entries,
        listings,
        buckets: mut source_buckets,
    } = validate_entries(urls, body.windows_safe_names.unwrap_or(false))?;
    if let Some(NewManifest { url, .. }) = &manifest
        && let SourceLocation::Bucket { bucket, .. } = url.location()
        && let Ok(bucket) = BucketName::parse(bucket)
    {
        source_buckets.push((bucket, "manifest".to_owned()));
    }
    let key = ObjectKey::parse(&body.key).map_err(|e| {
        ApiError::bad_request("key_invalid", format!("`key` {e}"), "key".to_owned())
    })?;
    let service = match body.service.as_deref() {
        None => Service::default(),
        Some(s) => s.parse().map_err(|e| {
            ApiError::bad_request(
                "service_invalid",
                format!("`service`: {e}"),
                "service".to_owned(),
            )
        })?,
    };
    let compression = match body.compression.as_deref() {
        None => Compression::default(),
        Some(s) => s.parse().map_err(|e| {
            ApiError::bad_request(
                "compression_invalid",
                format!("`compression`: {e}"),
                "compression".to_owned(),
            )
        })?,
    };
    let on_error = match body.on_error.as_deref() {
        None => OnError::default(),
        Some(s) => s.parse().map_err(|e| {
            ApiError::bad_request(
                "on_error_invalid",
                format!("`on_error`: {e}"),
                "on_error".to_owned(),
            )
        })?,
    };
    let metadata = validate_metadata(body.metadata)?;
    if body.bucket_name.is_empty() {
        return Err(ApiError::bad_request(
            "bucket_name_invalid",
            "`bucket_name` must not be empty",
            "bucket_name".to_owned(),
        ));
    }
    if body.bucket_name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bucket_name_invalid",
            "`bucket_name` must not contain control characters",
            "bucket_name".to_owned(),
        ));
    }
    let download_url_ttl_secs = match &body.download_url_ttl_secs {
        None => limits.download_url_ttl_secs,
        Some(value) => {
            whole_number(value, 1..=limits.max_download_url_ttl_secs).ok_or_else(|| {
                ApiError::bad_request(
                    "download_url_ttl_invalid",
                    format!(
                        "`download_url_ttl_secs` must be a whole number of seconds from 1 to {}",
                        limits.max_download_url_ttl_secs
                    ),
                    "download_url_ttl_secs".to_owned(),
                )
            })?
        }
    };
    let result_settings = ResultSettings {
        download_url_ttl_secs: Some(download_url_ttl_secs),
        cache_control: validate_cache_control(body.cache_control)?,
        tags: validate_tags(body.tags)?,
        encryption: validate_encryption(body.server_side_encryption, body.sse_kms_key_id)?,
        storage_class: validate_storage_class(body.storage_class)?,
        expires_in_days: body
            .expires_in_days
            .map(|days| {
                whole_number(&days, 1..=MAX_EXPIRES_IN_DAYS).ok_or_else(|| {
                    ApiError::bad_request(
                        "expires_in_days_invalid",
                        format!(
                            "`expires_in_days` must be a whole number of days from 1 to {MAX_EXPIRES_IN_DAYS}"
                        ),
                        "expires_in_days".to_owned(),
                    )
                })
            })
            .transpose()?,
    };
    Ok(ValidZip {
        entries,
        listings,
        manifest,
        source_buckets,
        bucket_name: body.bucket_name,
        service,
        key,
        metadata,
        compression,
        on_error,
        dry_run: body.dry_run.unwrap_or(false),
        result_settings,
    })
}

/// `manifest`: an http(s) URL or a bucket object (not a prefix), and its format.
fn validate_manifest(
    text: &str,
    format: Option<String>,
    limits: Limits,
) -> Result<NewManifest, ApiError> {
    let invalid = |why: String| {
        ApiError::bad_request(
            "manifest_invalid",
            format!("`manifest` {why}"),
            "manifest".to_owned(),
        )
    };
    let url = match SourceItem::parse(text).map_err(invalid)? {
        SourceItem::Web(url) | SourceItem::Object { url, .. } => url,
        SourceItem::Prefix { .. } => {
            return Err(invalid(
                "names a prefix; it must be one object (`s3://<bucket_name>/<key>`) or an \
                 http(s) URL"
                    .to_owned(),
            ));
        }
    };
    let format = match format.as_deref() {
        Some(text) => ManifestFormat::parse(text).ok_or_else(|| {
            ApiError::bad_request(
                "manifest_format_invalid",
                "`manifest_format` must be `jsonl` or `csv`",
                "manifest_format".to_owned(),
            )
        })?,
        None => {
            let path = match url.location() {
                SourceLocation::Web(web) => web.path().to_owned(),
                SourceLocation::Bucket { key, .. } => key.to_owned(),
            };
            if path.to_ascii_lowercase().ends_with(".csv") {
                ManifestFormat::Csv
            } else {
                ManifestFormat::JsonLines
            }
        }
    };
    Ok(NewManifest {
        url,
        format,
        max_entries: i32::try_from(limits.max_manifest_entries).unwrap_or(i32::MAX),
    })
}

/// The most days a job may keep its archive before it is deleted: ten years.
pub const MAX_EXPIRES_IN_DAYS: u32 = 3650;

/// A JSON number that is a whole number within `range` (JSON Schema's integers include `60.0`).
fn whole_number(value: &Value, range: std::ops::RangeInclusive<u32>) -> Option<u32> {
    let n = value.as_u64().or_else(|| {
        let f = value.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0)?;
        Some(f as u64)
    })?;
    u32::try_from(n).ok().filter(|n| range.contains(n))
}

/// A header value: visible ASCII and spaces, nothing a header could be split on.
fn header_text(text: &str, most: usize) -> bool {
    (1..=most).contains(&text.len()) && text.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

fn validate_cache_control(cache_control: Option<String>) -> Result<Option<String>, ApiError> {
    match cache_control {
        Some(value) if !header_text(&value, 256) => Err(ApiError::bad_request(
            "cache_control_invalid",
            "`cache_control` must be 1 to 256 visible ASCII characters and spaces",
            "cache_control".to_owned(),
        )),
        other => Ok(other),
    }
}

/// S3's limits on an object's tags.
pub const MAX_TAGS: usize = 10;
pub const MAX_TAG_KEY_CHARS: usize = 128;
pub const MAX_TAG_VALUE_CHARS: usize = 256;

fn validate_tags(tags: Option<Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let invalid = |why: String| ApiError::bad_request("tags_invalid", why, "tags".to_owned());
    let Some(tags) = tags else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(tags) = tags else {
        return Err(invalid("`tags` must be an object of strings".to_owned()));
    };
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!("`tags` may hold at most {MAX_TAGS} tags")));
    }
    tags.into_iter()
        .map(|(key, value)| {
            let Value::String(value) = value else {
                return Err(invalid(format!("`tags.{key}` must be a string")));
            };
            let keys = 1..=MAX_TAG_KEY_CHARS;
            if !keys.contains(&key.chars().count()) || key.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "each `tags` key must be 1 to {MAX_TAG_KEY_CHARS} characters without control characters"
                )));
            }
            if value.chars().count() > MAX_TAG_VALUE_CHARS || value.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "`tags.{key}` must be at most {MAX_TAG_VALUE_CHARS} characters without control characters"
                )));
            }
            Ok((key, value))
        })
        .collect()
}

/// `STANDARD` or a class the bucket test tries; the archive tiers are for lifecycle rules.
fn validate_storage_class(class: Option<String>) -> Result<Option<String>, ApiError> {
    match class {
        Some(class) if class != "STANDARD" && !StorageClasses::TRIED.contains(&class.as_str()) => {
            Err(ApiError::bad_request(
                "storage_class_invalid",
                format!(
                    "`storage_class` must be STANDARD or one of {}; move archives to GLACIER, \
                     GLACIER_IR or DEEP_ARCHIVE with a bucket lifecycle transition instead",
                    StorageClasses::TRIED.join(", ")
                ),
                "storage_class".to_owned(),
            ))
        }
        other => Ok(other),
    }
}

fn validate_encryption(
    mode: Option<String>,
    key_id: Option<String>,
) -> Result<Option<Encryption>, ApiError> {
    let key_invalid = |why: &str| {
        ApiError::bad_request(
            "sse_kms_key_id_invalid",
            format!("`sse_kms_key_id` {why}"),
            "sse_kms_key_id".to_owned(),
        )
    };
    if key_id
        .as_deref()
        .is_some_and(|k| !header_text(k, 2048) || k.contains(' '))
    {
        return Err(key_invalid("must be 1 to 2,048 visible ASCII characters"));
    }
    match (mode.as_deref(), key_id) {
        (None, None) => Ok(None),
        (Some("AES256"), None) => Ok(Some(Encryption::StoreKeys)),
        (Some("aws:kms"), key_id) => Ok(Some(Encryption::Kms { key_id })),
        (Some("AES256") | None, Some(_)) => Err(key_invalid(
            "goes only with `server_side_encryption: \"aws:kms\"`",
        )),
        (Some(_), _) => Err(ApiError::bad_request(
            "server_side_encryption_invalid",
            "`server_side_encryption` must be `AES256` or `aws:kms`",
            "server_side_encryption".to_owned(),
        )),
    }
}

/// Each url item parsed, its name checked for every system (or rewritten for Windows when the
/// job asks), no two names landing on the same file. Items are checked in order; names to
/// rewrite are rewritten after all, so that no rewritten name takes one given as it is.
fn validate_entries(items: Vec<UrlItem>, windows_safe_names: bool) -> Result<Sources, ApiError> {
    let filename_param = |i: usize| format!("urls[{i}].filename");
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
    let mut parsed = Vec::with_capacity(items.len());
    let mut listings = Vec::new();
    let mut buckets: Vec<(BucketName, String)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let source = parse_source(&item.url, i)?;
        if let SourceItem::Object { bucket, .. } | SourceItem::Prefix { bucket, .. } = &source
            && !buckets.iter().any(|(named, _)| named == bucket)
        {
            buckets.push((bucket.clone(), format!("urls[{i}].url")));
        }
        let (url, default_name) = match source {
            SourceItem::Prefix { bucket, prefix } => {
                listings.push(validate_listing(i, item, bucket, prefix)?);
                continue;
            }
            SourceItem::Web(url) => (url, None),
            SourceItem::Object { url, name, .. } => (url, Some(name)),
        };
        for (param, given) in [
            ("include", item.include.is_some()),
            ("exclude", item.exclude.is_some()),
            ("path", item.path.is_some()),
        ] {
            if given {
                return Err(ApiError::bad_request(
                    "parameter_invalid",
                    format!(
                        "`urls[{i}].{param}` goes only with a prefix (a `url` of the form \
                         `s3://<bucket_name>/<prefix>/`)"
                    ),
                    format!("urls[{i}].{param}"),
                ));
            }
        }
        let Some(given_name) = item.filename.or(default_name) else {
            return Err(ApiError::bad_request(
                "parameter_missing",
                format!("`urls[{i}].filename` is required"),
                filename_param(i),
            ));
        };
        let filename = if windows_safe_names && WindowsSafeNames::needs_rewrite(&given_name) {
            Err(given_name)
        } else {
            let filename = EntryName::parse(&given_name).map_err(|e| {
                ApiError::bad_request(
                    "filename_invalid",
                    format!("`urls[{i}].filename` {e}"),
                    filename_param(i),
                )
            })?;
            if let Some(problem) = filename.windows_problem() {
                return Err(ApiError::bad_request(
                    "filename_not_windows_safe",
                    format!(
                        "`urls[{i}].filename` ({filename}) {problem}: rename it, or send \
                         `\"windows_safe_names\": true` to have such names rewritten"
                    ),
                    filename_param(i),
                ));
            }
            if let Some(first) = seen.insert(filename.collision_key(), i) {
                return Err(ApiError::bad_request(
                    "filename_duplicate",
                    format!(
                        "`urls[{i}].filename` would overwrite `urls[{first}].filename` when \
                         extracted (names must differ in more than letter case or Unicode \
                         normalization)"
                    ),
                    filename_param(i),
                ));
            }
            Ok(filename)
        };
        let modified_at = item
            .modified_at
            .map(|text| {
                parse_entry_time(&text).map_err(|why| {
                    ApiError::bad_request(
                        "modified_at_invalid",
                        format!("`urls[{i}].modified_at` {why}"),
                        format!("urls[{i}].modified_at"),
                    )
                })
            })
            .transpose()?;
        let declared_size = match item.size {
            None | Some(Value::Null) => None,
            Some(size) => Some(parse_declared_size(&size).ok_or_else(|| {
                ApiError::bad_request(
                    "size_invalid",
                    format!(
                        "`urls[{i}].size` must be a whole number of bytes, 0 to {MAX_DECLARED_SIZE}"
                    ),
                    format!("urls[{i}].size"),
                )
            })?),
        };
        parsed.push((url, filename, modified_at, declared_size));
    }
    let mut rewrite =
        WindowsSafeNames::new(parsed.iter().filter_map(|(_, n, _, _)| n.as_ref().ok()));
    let mut entries = Vec::with_capacity(parsed.len());
    for (i, (url, filename, modified_at, declared_size)) in parsed.into_iter().enumerate() {
        let (filename, given_filename) = match filename {
            Ok(filename) => (filename, None),
            Err(given) => {
                let rewritten = rewrite.rewrite(&given).map_err(|e| {
                    ApiError::bad_request(
                        "filename_invalid",
                        format!("`urls[{i}].filename` {e}"),
                        filename_param(i),
                    )
                })?;
                (rewritten, Some(given))
            }
        };
        entries.push(NewZipEntry {
            url,
            filename,
            given_filename,
            modified_at,
            declared_size,
        });
    }
    Ok(Sources {
        entries,
        listings,
        buckets,
    })
}

/// The items of a request: sources given one by one, prefixes to list, and the buckets read.
struct Sources {
    entries: Vec<NewZipEntry>,
    listings: Vec<NewListing>,
    buckets: Vec<(BucketName, String)>,
}

fn parse_source(text: &str, i: usize) -> Result<SourceItem, ApiError> {
    SourceItem::parse(text).map_err(|why| {
        ApiError::bad_request(
            "url_invalid",
            format!("`urls[{i}].url` {why}"),
            format!("urls[{i}].url"),
        )
    })
}

/// A prefix item: only `include`, `exclude` and `path` go with it.
fn validate_listing(
    i: usize,
    item: UrlItem,
    bucket: BucketName,
    prefix: String,
) -> Result<NewListing, ApiError> {
    for (param, given) in [
        ("filename", item.filename.is_some()),
        ("modified_at", item.modified_at.is_some()),
        ("size", item.size.is_some()),
    ] {
        if given {
            return Err(ApiError::bad_request(
                "parameter_invalid",
                format!(
                    "`urls[{i}].{param}` does not go with a prefix (a `url` ending in `/`): its \
                     objects keep their names, sizes and times; `path` puts them in a folder"
                ),
                format!("urls[{i}].{param}"),
            ));
        }
    }
    let include = item.include.unwrap_or_default();
    let exclude = item.exclude.unwrap_or_default();
    KeyFilter::new(&include, &exclude).map_err(|e| {
        let param = match e.index {
            Some(n) => format!("urls[{i}].{}[{n}]", e.list),
            None => format!("urls[{i}].{}", e.list),
        };
        ApiError::bad_request("pattern_invalid", format!("`{param}` {}", e.message), param)
    })?;
    let path = match item.path.as_deref().map(|p| p.trim_end_matches('/')) {
        None | Some("") => String::new(),
        Some(folder) => {
            let param = format!("urls[{i}].path");
            // A folder is valid where a file in it would be.
            let name = EntryName::parse(&format!("{folder}/x")).map_err(|e| {
                ApiError::bad_request("path_invalid", format!("`{param}` {e}"), param.clone())
            })?;
            if let Some(problem) = name.windows_problem() {
                return Err(ApiError::bad_request(
                    "path_invalid",
                    format!("`{param}` ({folder}) {problem}"),
                    param,
                ));
            }
            format!("{folder}/")
        }
    };
    Ok(NewListing {
        item_index: i32::try_from(i).unwrap_or(i32::MAX),
        bucket,
        prefix,
        include,
        exclude,
        path,
    })
}

fn validate_metadata(metadata: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    let invalid =
        |message: String, param: String| ApiError::bad_request("metadata_invalid", message, param);
    let map = match metadata {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(invalid(
                "`metadata` must be an object of strings".into(),
                "metadata".into(),
            ));
        }
    };
    if map.len() > MAX_METADATA_KEYS {
        return Err(invalid(
            format!(
                "`metadata` has {} keys; the limit is {MAX_METADATA_KEYS}",
                map.len()
            ),
            "metadata".into(),
        ));
    }
    for (key, value) in &map {
        let param = format!("metadata.{key}");
        if key.is_empty()
            || key.chars().count() > MAX_METADATA_KEY_CHARS
            || key.chars().any(char::is_control)
        {
            return Err(invalid(
                format!(
                    "metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters, none of them a control character"
                ),
                param,
            ));
        }
        let Value::String(text) = value else {
            return Err(invalid(
                format!("`{param}` must be a string (metadata is a flat object of strings)"),
                param,
            ));
        };
        if text.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(invalid(
                format!("`{param}` is longer than {MAX_METADATA_VALUE_CHARS} characters"),
                param,
            ));
        }
        // PostgreSQL stores no U+0000 in text or JSON; refused here rather than failing there.
        if text.contains('\0') {
            return Err(invalid(
                format!("`{param}` must not contain the NUL character (U+0000)"),
                param,
            ));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        max_urls: 3,
        max_manifest_entries: 1_000_000,
        download_url_ttl_secs: 3600,
        max_download_url_ttl_secs: 86_400,
    };

    fn body(value: Value) -> Result<ValidZip, ApiError> {
        validate(parse_body(value)?, LIMITS)
    }

    fn err(value: Value) -> (String, String, Option<String>) {
        let e = body(value).expect_err("the body is refused");
        let param = match &e {
            ApiError::BadRequest { param, .. } => param.clone(),
            _ => None,
        };
        (e.code().to_owned(), e.to_string(), param)
    }

    fn valid() -> Value {
        json!({"urls": [{"url": "https://example.com/a.pdf", "filename": "docs/a.pdf"}], "bucket_name": "b", "key": "k.zip"})
    }

    #[test]
    fn a_minimal_body_gets_the_documented_defaults() {
        let zip = body(valid()).unwrap();
        assert_eq!(zip.service, Service::S3);
        assert_eq!(zip.compression, Compression::Auto);
        assert_eq!(zip.on_error, OnError::Fail);
        assert!(zip.metadata.is_empty());
        assert_eq!(zip.entries[0].filename.as_str(), "docs/a.pdf");
        let settings = &zip.result_settings;
        assert_eq!(
            settings.download_url_ttl_secs,
            Some(3600),
            "the deployment's default"
        );
        assert!(settings.cache_control.is_none() && settings.tags.is_empty());
        assert_eq!(settings.encryption, None);
        let mut asked = valid();
        asked["download_url_ttl_secs"] = json!(86_400);
        asked["cache_control"] = json!("private, max-age=600");
        asked["tags"] = json!({"project": "Q4", "owner": "finance team"});
        asked["server_side_encryption"] = json!("aws:kms");
        asked["sse_kms_key_id"] = json!("alias/archives");
        asked["expires_in_days"] = json!(30.0);
        asked["storage_class"] = json!("STANDARD_IA");
        let settings = body(asked).unwrap().result_settings;
        assert_eq!(settings.expires_in_days, Some(30));
        assert_eq!(settings.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(settings.download_url_ttl_secs, Some(86_400));
        assert_eq!(
            settings.cache_control.as_deref(),
            Some("private, max-age=600")
        );
        assert_eq!(settings.tags["owner"], "finance team");
        assert_eq!(
            settings.encryption,
            Some(Encryption::Kms {
                key_id: Some("alias/archives".to_owned())
            })
        );
    }

    #[test]
    fn bucket_objects_and_prefixes_take_their_places_and_their_own_parameters() {
        let items = json!([
            {"url": "https://example.com/a.pdf", "filename": "a.pdf"},
            {"url": "s3://photos/2026/", "include": ["*.jpg"], "exclude": ["drafts/**"], "path": "pics"},
            {"url": "s3://photos/docs/report final#1.pdf"},
            {"url": "s3://archive-bucket/"},
        ]);
        let zip = validate(
            parse_body(json!({"urls": items, "bucket_name": "b", "key": "k.zip"})).unwrap(),
            Limits {
                max_urls: 10,
                ..LIMITS
            },
        )
        .unwrap();
        assert_eq!(zip.entries.len(), 2);
        assert_eq!(
            zip.entries[1].url.as_str(),
            "s3://photos/docs/report final#1.pdf"
        );
        assert_eq!(
            zip.entries[1].filename.as_str(),
            "report final#1.pdf",
            "a bucket object is named after its key's last segment by default"
        );
        let listed: Vec<_> = zip
            .listings
            .iter()
            .map(|l| {
                (
                    l.item_index,
                    l.bucket.as_str(),
                    l.prefix.as_str(),
                    l.path.as_str(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (1, "photos", "2026/", "pics/"),
                (3, "archive-bucket", "", "")
            ]
        );
        assert_eq!(zip.listings[0].include, ["*.jpg"]);
        assert_eq!(
            zip.source_buckets
                .iter()
                .map(|(b, at)| (b.as_str(), at.as_str()))
                .collect::<Vec<_>>(),
            [("photos", "urls[1].url"), ("archive-bucket", "urls[3].url")]
        );

        let one = |item: Value| err(json!({"urls": [item], "bucket_name": "b", "key": "k.zip"}));
        let refused = [
            (
                json!({"url": "s3://photos/a/", "filename": "x"}),
                "parameter_invalid",
                "urls[0].filename",
            ),
            (
                json!({"url": "s3://photos/a/", "size": 3}),
                "parameter_invalid",
                "urls[0].size",
            ),
            (
                json!({"url": "s3://photos/a.txt", "include": ["*"]}),
                "parameter_invalid",
                "urls[0].include",
            ),
            (
                json!({"url": "https://e.com/a", "filename": "a", "path": "x/"}),
                "parameter_invalid",
                "urls[0].path",
            ),
            (
                json!({"url": "https://e.com/a"}),
                "parameter_missing",
                "urls[0].filename",
            ),
            (
                json!({"url": "s3://photos/a/", "include": ["ok", "a["]}),
                "pattern_invalid",
                "urls[0].include[1]",
            ),
            (
                json!({"url": "s3://photos/a/", "path": "../up"}),
                "path_invalid",
                "urls[0].path",
            ),
            (
                json!({"url": "s3://photos/a/", "path": "con/"}),
                "path_invalid",
                "urls[0].path",
            ),
            (
                json!({"url": "s3://Not_A_Bucket/a"}),
                "url_invalid",
                "urls[0].url",
            ),
            (json!({"url": "s3://photos"}), "url_invalid", "urls[0].url"),
        ];
        for (item, code, param) in refused {
            let (got, message, at) = one(item.clone());
            assert_eq!(
                (got.as_str(), at.as_deref()),
                (code, Some(param)),
                "{item}: {message}"
            );
        }
    }

    #[test]
    fn missing_and_unknown_fields_name_their_path() {
        let mut v = valid();
        v["urls"][0].as_object_mut().unwrap().remove("filename");
        assert_eq!(err(v).0, "parameter_missing");
        let mut v = valid();
        v["urls"][0].as_object_mut().unwrap().remove("filename");
        assert_eq!(err(v).2.as_deref(), Some("urls[0].filename"));
        let mut v = valid();
        v["colour"] = json!("red");
        assert_eq!(
            err(v),
            (
                "parameter_unknown".into(),
                "`colour` is not a known parameter".into(),
                Some("colour".into())
            )
        );
        let mut v = valid();
        v["urls"][0]["checksum"] = json!("abc");
        assert_eq!(err(v).2.as_deref(), Some("urls[0].checksum"));
        let mut v = valid();
        v["urls"] = json!("https://example.com");
        assert_eq!(err(v).0, "parameter_invalid");
        assert_eq!(err(json!([1, 2])).0, "parameter_invalid");
    }

    #[test]
    fn arrays_are_never_read_as_objects_and_no_message_names_a_rust_type() {
        let positional =
            json!([[{"url": "https://e.com/a", "filename": "a.txt"}], "bucket", "k.zip"]);
        assert_eq!(err(positional).0, "parameter_invalid");
        let items =
            json!({"urls": [["https://e.com/a", "a.txt"]], "bucket_name": "b", "key": "k.zip"});
        assert_eq!(
            err(items),
            (
                "parameter_invalid".into(),
                "`urls[0]` must be an object with `url` and `filename`".into(),
                Some("urls[0]".into())
            )
        );
        for bad in [
            json!([]),
            json!("x"),
            json!(null),
            json!({"urls": 5, "bucket_name": "b", "key": "k"}),
            json!({"urls": [{"url": 5, "filename": "a"}], "bucket_name": "b", "key": "k"}),
        ] {
            let (_, message, _) = err(bad.clone());
            for rust in ["CreateZipBody", "UrlItem", "struct", "Option"] {
                assert!(!message.contains(rust), "{bad}: {message}");
            }
        }
    }

    /// The job of these names, validated with room for all of them.
    fn names(names: &[&str], windows_safe_names: bool) -> Result<Vec<NewZipEntry>, ApiError> {
        let urls: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"url": format!("https://e.com/{i}"), "filename": n}))
            .collect();
        let value = json!({"urls": urls, "bucket_name": "b", "key": "k.zip", "windows_safe_names": windows_safe_names});
        let limits = Limits {
            max_urls: 100,
            ..LIMITS
        };
        validate(parse_body(value)?, limits).map(|zip| zip.entries)
    }

    #[test]
    fn names_windows_cannot_create_are_refused_naming_the_entry_and_the_rule() {
        let long = format!("{}/{}.pdf", "d".repeat(200), "f".repeat(70));
        let cases: Vec<(&str, &str)> = vec![
            ("a<b.txt", "contains `<`"),
            ("a>b.txt", "contains `>`"),
            ("ab:c.txt", "contains `:`"),
            ("a\"b.txt", "contains `\"`"),
            ("a|b.txt", "contains `|`"),
            ("a?b.txt", "contains `?`"),
            ("a*b.txt", "contains `*`"),
            ("report.", "ending in a dot or a space"),
            ("folder /a.txt", "ending in a dot or a space"),
            ("CON", "`CON`, a device name"),
            ("docs/nul.tar.gz", "`nul`, a device name"),
            ("COM9.log", "`COM9`, a device name"),
            ("lpt1", "`lpt1`, a device name"),
            (&long, "is 275 characters long"),
        ];
        for (name, why) in cases {
            let e = names(&["ok.txt", name], false).expect_err(name);
            let ApiError::BadRequest { param, .. } = &e else {
                panic!("{name}: {e:?}")
            };
            assert_eq!(e.code(), "filename_not_windows_safe", "{name}");
            assert_eq!(param.as_deref(), Some("urls[1].filename"), "{name}");
            let message = e.to_string();
            assert!(
                message.contains(why) && message.contains("windows_safe_names"),
                "{name}: {message}"
            );
        }
        // Backslash and control characters are refused as before (they are unsafe everywhere).
        for name in ["a\\b.txt", "a\tb.txt"] {
            assert_eq!(
                names(&[name], false).unwrap_err().code(),
                "filename_invalid"
            );
        }
    }

    #[test]
    fn windows_safe_names_rewrites_by_the_rule_and_keeps_every_name_distinct() {
        let long = format!("{}/{}.pdf", "d".repeat(200), "f".repeat(70));
        let given = [
            "a_b.txt",
            "a:b.txt",
            "a?b.txt",
            "report.",
            "CON.txt",
            "dir\\x.txt",
            "tab\tx",
            "ok/é.txt",
            &long,
        ];
        let entries = names(&given, true).unwrap();
        let got: Vec<(&str, Option<&str>)> = entries
            .iter()
            .map(|e| (e.filename.as_str(), e.given_filename.as_deref()))
            .collect();
        let shortened = format!("{}/{}.pdf", "d".repeat(200), "f".repeat(55));
        assert_eq!(
            got,
            [
                ("a_b.txt", None),
                ("a_b (2).txt", Some("a:b.txt")),
                ("a_b (3).txt", Some("a?b.txt")),
                ("report_", Some("report.")),
                ("CON_.txt", Some("CON.txt")),
                ("dir_x.txt", Some("dir\\x.txt")),
                ("tab_x", Some("tab\tx")),
                ("ok/é.txt", None),
                (shortened.as_str(), Some(long.as_str())),
            ]
        );
        // What is unsafe everywhere stays refused.
        let e = names(&["../x:y"], true).unwrap_err();
        assert_eq!(e.code(), "filename_invalid");
    }

    #[test]
    fn size_is_a_whole_number_of_bytes() {
        let zip = body(json!({"urls": [
            {"url": "https://e.com/1", "filename": "a", "size": 0},
            {"url": "https://e.com/2", "filename": "b", "size": 5_000_000_000u64},
            {"url": "https://e.com/3", "filename": "c", "size": null}], "bucket_name": "b", "key": "k"}))
        .unwrap();
        let sizes: Vec<_> = zip.entries.iter().map(|e| e.declared_size).collect();
        let whole = body(
            json!({"urls": [{"url": "https://e.com/1", "filename": "a", "size": 5.0}], "bucket_name": "b", "key": "k"}),
        );
        assert_eq!(whole.unwrap().entries[0].declared_size, Some(5));
        assert_eq!(sizes, [Some(0), Some(5_000_000_000), None]);
        for bad in [
            json!(-1),
            json!(1.5),
            json!("10"),
            json!(u64::MAX),
            json!(MAX_DECLARED_SIZE + 1),
            json!([1]),
        ] {
            let (code, message, param) = err(json!({"urls": [
                {"url": "https://e.com/1", "filename": "a", "size": bad}], "bucket_name": "b", "key": "k"}));
            assert_eq!(
                (code.as_str(), param.as_deref()),
                ("size_invalid", Some("urls[0].size")),
                "{bad}"
            );
            assert!(
                !message.contains("i64") && !message.contains("u64"),
                "{message}"
            );
        }
    }

    #[test]
    fn modified_at_takes_rfc_3339_and_refuses_anything_else() {
        let zip = body(json!({"urls": [
            {"url": "https://e.com/1", "filename": "a", "modified_at": "2026-03-01T09:30:00+01:00"},
            {"url": "https://e.com/2", "filename": "b"}], "bucket_name": "b", "key": "k"}))
        .unwrap();
        assert_eq!(
            zip.entries[0].modified_at.map(|t| t.to_rfc3339()),
            Some("2026-03-01T08:30:00+00:00".to_owned())
        );
        assert_eq!(zip.entries[1].modified_at, None);
        for bad in ["yesterday", "2026-03-01", "1700000000"] {
            let (code, _, param) = err(json!({"urls": [
                {"url": "https://e.com/1", "filename": "a", "modified_at": bad}], "bucket_name": "b", "key": "k"}));
            assert_eq!(
                (code.as_str(), param.as_deref()),
                ("modified_at_invalid", Some("urls[0].modified_at")),
                "{bad}"
            );
        }
    }

    #[test]
    fn duplicate_filenames_are_refused_case_insensitively() {
        let v = json!({"urls": [
            {"url": "https://e.com/1", "filename": "Report.pdf"},
            {"url": "https://e.com/2", "filename": "x.pdf"},
            {"url": "https://e.com/3", "filename": "report.PDF"}], "bucket_name": "b", "key": "k"});
        let (code, message, param) = err(v);
        assert_eq!(code, "filename_duplicate");
        assert_eq!(param.as_deref(), Some("urls[2].filename"));
        assert!(message.contains("urls[0]"), "{message}");
    }

    #[test]
    fn each_field_rule_has_its_code_and_param() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"urls": [], "bucket_name": "b", "key": "k"}),
                "urls_empty",
                "urls",
            ),
            (
                json!({"urls": [{"url":"https://e.com/1","filename":"1"},{"url":"https://e.com/2","filename":"2"},{"url":"https://e.com/3","filename":"3"},{"url":"https://e.com/4","filename":"4"}], "bucket_name": "b", "key": "k"}),
                "urls_too_many",
                "urls",
            ),
            (
                json!({"urls": [{"url": "ftp://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k"}),
                "url_invalid",
                "urls[0].url",
            ),
            (
                json!({"urls": [{"url": "https://u:p@e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k"}),
                "url_invalid",
                "urls[0].url",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "../a"}], "bucket_name": "b", "key": "k"}),
                "filename_invalid",
                "urls[0].filename",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "/a"}], "bucket_name": "b", "key": "k"}),
                "filename_invalid",
                "urls[0].filename",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a\\b"}], "bucket_name": "b", "key": "k"}),
                "filename_invalid",
                "urls[0].filename",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": ""}], "bucket_name": "b", "key": "k"}),
                "filename_invalid",
                "urls[0].filename",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": ""}),
                "key_invalid",
                "key",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "cache_control": "no-cache\r\nX-Evil: 1"}),
                "cache_control_invalid",
                "cache_control",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "tags": {"a": 1}}),
                "tags_invalid",
                "tags",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "tags": (0..11).map(|i| (format!("t{i}"), json!("v"))).collect::<Map<_, _>>()}),
                "tags_invalid",
                "tags",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "tags": {"": "v"}}),
                "tags_invalid",
                "tags",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "server_side_encryption": "aws:kms:dsse"}),
                "server_side_encryption_invalid",
                "server_side_encryption",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "server_side_encryption": "AES256", "sse_kms_key_id": "k1"}),
                "sse_kms_key_id_invalid",
                "sse_kms_key_id",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "storage_class": "GLACIER"}),
                "storage_class_invalid",
                "storage_class",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "expires_in_days": 3651}),
                "expires_in_days_invalid",
                "expires_in_days",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "expires_in_days": 1.5}),
                "expires_in_days_invalid",
                "expires_in_days",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "download_url_ttl_secs": 0}),
                "download_url_ttl_invalid",
                "download_url_ttl_secs",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "download_url_ttl_secs": 86_401}),
                "download_url_ttl_invalid",
                "download_url_ttl_secs",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "download_url_ttl_secs": "60"}),
                "download_url_ttl_invalid",
                "download_url_ttl_secs",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k".repeat(1025)}),
                "key_invalid",
                "key",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "service": "gcs"}),
                "service_invalid",
                "service",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "compression": "zstd"}),
                "compression_invalid",
                "compression",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "on_error": "ignore"}),
                "on_error_invalid",
                "on_error",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "metadata": [1]}),
                "metadata_invalid",
                "metadata",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "metadata": {"n": 1}}),
                "metadata_invalid",
                "metadata.n",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "", "key": "k"}),
                "bucket_name_invalid",
                "bucket_name",
            ),
            // U+0000 reached PostgreSQL and came back as a 500.
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b\u{0}", "key": "k"}),
                "bucket_name_invalid",
                "bucket_name",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "metadata": {"n": "a\u{0}b"}}),
                "metadata_invalid",
                "metadata.n",
            ),
            (
                json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "b", "key": "k", "metadata": {"\u{0}": "x"}}),
                "metadata_invalid",
                "metadata.\u{0}",
            ),
        ];
        for (value, code, param) in cases {
            let (got_code, message, got_param) = err(value.clone());
            assert_eq!(
                (got_code.as_str(), got_param.as_deref()),
                (code, Some(param)),
                "{value} -> {message}"
            );
        }
    }

    #[test]
    fn metadata_strings_within_bounds_are_kept() {
        let mut v = valid();
        v["metadata"] =
            json!({"order_id": "order_456", "note": "ü".repeat(MAX_METADATA_VALUE_CHARS)});
        let zip = body(v).unwrap();
        assert_eq!(zip.metadata["order_id"], "order_456");
        let mut v = valid();
        v["metadata"] = json!({"note": "x".repeat(MAX_METADATA_VALUE_CHARS + 1)});
        assert_eq!(err(v).0, "metadata_invalid");
    }
}
