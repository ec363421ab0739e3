//! `/v1/zips`: create, get, list and cancel zip jobs of the caller's project, and page through
//! the sources a job left out.

use crate::publisher::PublishedBy;
use actix_web::{HttpRequest, HttpResponse, web};
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tracing::Instrument;
use utoipa::{IntoParams, ToSchema};

use zipkit_domain::models::{
    Bucket, Encryption, ModelError, NewZip, ResultSettings, SkippedEntries, Zip, ZipPage,
    ZipWithBucket,
};
use zipkit_domain::{ZipId, ZipStatus};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorEnvelope};
use crate::extractors::KnownQuery;
use crate::state::AppState;
use crate::zips::dry_run::DryRunResponse;
use crate::zips::request::{CreateZipBody, ValidZip, parse_body, validate};
use crate::zips::strict_json::StrictJson;
use zipkit_domain::views::{BucketRef, Skipped, ZipObject};

/// `{"data": <zip object>}`
#[derive(Debug, Serialize, ToSchema)]
pub struct ZipResponse {
    pub data: ZipObject,
}

/// What a create answers with 200: the job an earlier request with the same key created, or a
/// dry run's answer. (For the OpenAPI document only.)
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CreateAnswer {
    Zip(Box<ZipResponse>),
    DryRun(DryRunResponse),
}

/// One page of zips, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ZipList {
    /// Always `list`.
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    pub data: Vec<ZipObject>,
    pub has_more: bool,
    /// Pass as `starting_after` to get the next page; null on the last page.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub next_cursor: Option<ZipId>,
}

/// One page of the sources a job left out, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedList {
    /// Always `list`.
    #[schema(value_type = String, example = "list")]
    pub object: &'static str,
    pub data: Vec<Skipped>,
    pub has_more: bool,
    /// Pass as `starting_after` to get the next page (the last source's `index`); null on the
    /// last page.
    pub next_cursor: Option<i32>,
}

const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.headers().get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = raw.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(
            "idempotency_key_invalid",
            format!(
                "the {IDEMPOTENCY_HEADER} header must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ),
            None,
        ));
    }
    Ok(Some(key.to_owned()))
}

fn parse_zip_id(raw: &str) -> Result<ZipId, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(
            "parameter_invalid",
            format!("`{raw}` is not a zip uuid"),
            "uuid".to_owned(),
        )
    })
}

fn zip_not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(
        "zip_not_found",
        format!("no zip `{id}` in this project"),
        "uuid".to_owned(),
    )
}

/// The zip objects for rows, with skipped entries loaded in one query and a fresh download link
/// on each finished archive its bucket's keys may read.
async fn objects(
    state: &AppState,
    conn: &mut diesel_async::AsyncPgConnection,
    rows: Vec<ZipWithBucket>,
) -> Result<Vec<ZipObject>, ApiError> {
    // Succeeded jobs list what they left out in `result`, failed ones in `error`.
    let with_results: Vec<ZipId> = rows
        .iter()
        .filter(|row| row.zip.result_size.is_some() || row.zip.error_code.is_some())
        .map(|row| row.zip.id)
        .collect();
    let mut skipped = if with_results.is_empty() {
        HashMap::new()
    } else {
        Zip::skipped_entries(conn, &with_results).await?
    };
    let finished: Vec<ZipId> = rows
        .iter()
        .filter(|row| row.zip.status == ZipStatus::Succeeded)
        .map(|row| row.zip.id)
        .collect();
    let downloads = if finished.is_empty() {
        Vec::new()
    } else {
        Zip::download_sources(conn, &finished).await?
    };
    let mut objects = Vec::with_capacity(rows.len());
    for row in rows {
        let mine = skipped.remove(&row.zip.id).unwrap_or_default();
        let source = downloads.iter().find(|d| d.zip_id == row.zip.id);
        let link = match source {
            Some(source) => {
                let key = &row.zip.object_key;
                state
                    .buckets
                    .download_link(&state.keyring, source, key)
                    .await
            }
            None => None,
        };
        let bucket = BucketRef {
            service: row.service,
            name: row.bucket,
        };
        let object = ZipObject::new(row.zip, bucket, row.expected_size, mine);
        objects.push(object.with_result(source, link));
    }
    Ok(objects)
}

async fn object(
    state: &AppState,
    conn: &mut diesel_async::AsyncPgConnection,
    caller: Caller,
    id: ZipId,
) -> Result<ZipObject, ApiError> {
    let row = Zip::find_with_bucket(conn, caller.project_id, id)
        .await?
        .ok_or_else(|| zip_not_found(id))?;
    let mut list = objects(state, conn, vec![row]).await?;
    list.pop()
        .ok_or_else(|| ApiError::internal("zip object vanished"))
}

/// The request's bucket in the caller's project. Same answer for "no such bucket" and "another
/// project's bucket": nothing is revealed.
async fn find_bucket(
    conn: &mut diesel_async::AsyncPgConnection,
    caller: &Caller,
    valid: &ValidZip,
) -> Result<Bucket, ApiError> {
    let bucket = Bucket::find_by_name(conn, caller.project_id, valid.service, &valid.bucket_name)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "bucket_not_found",
                format!(
                    "no {} bucket named `{}` is configured in this project",
                    valid.service, valid.bucket_name
                ),
                "bucket_name".to_owned(),
            )
        })?;
    accepts(&bucket, &valid.result_settings)?;
    Ok(bucket)
}

/// Each bucket the sources are read from is the project's and lets jobs read it: refused now,
/// naming the first item (or the manifest) that reads it. The bucket of that name registered for the job's
/// `service` is read, else the one for the other service.
async fn readable_sources(
    conn: &mut diesel_async::AsyncPgConnection,
    caller: &Caller,
    valid: &ValidZip,
) -> Result<(), ApiError> {
    // In request order: the first place that cannot be read is the one named.
    for (name, param) in &valid.source_buckets {
        let param = param.clone();
        let found = Bucket::named(conn, caller.project_id, name.as_str(), valid.service).await?;
        let Some(bucket) = found.into_iter().next() else {
            return Err(ApiError::not_found(
                "source_bucket_not_found",
                format!(
                    "`{param}` reads bucket `{name}`, which is not configured in this project: \
                     add it (with keys that may read and list it) first"
                ),
                param,
            ));
        };
        if !bucket.read_sources {
            return Err(ApiError::conflict(
                "bucket_sources_not_allowed",
                format!(
                    "`{param}` reads bucket `{name}`, which does not let jobs read their sources \
                     from it: turn on \"Jobs may read sources\" on its dashboard page (or run \
                     `zipkit-api bucket sources --allow`), with keys that may s3:GetObject and \
                     s3:ListBucket"
                ),
                param,
            ));
        }
    }
    Ok(())
}

/// What the job asks of its archive object, only where the bucket's test found the store
/// accepts it: refused now, in words, rather than failing the job at its first upload. A 409: the
/// request is right, the bucket's state is not (testing it again may change the answer).
fn accepts(bucket: &Bucket, settings: &ResultSettings) -> Result<(), ApiError> {
    let class = settings
        .storage_class
        .as_deref()
        .filter(|c| *c != "STANDARD");
    let asked = [
        ("tags", !settings.tags.is_empty(), "tagging"),
        (
            "server_side_encryption",
            settings.encryption == Some(Encryption::StoreKeys),
            "sse_s3",
        ),
        (
            "server_side_encryption",
            matches!(settings.encryption, Some(Encryption::Kms { .. })),
            "sse_kms",
        ),
        ("storage_class", class.is_some(), "storage_classes"),
        (
            "expires_in_days",
            settings.expires_in_days.is_some(),
            "delete",
        ),
    ];
    for (param, wanted, capability) in asked {
        if !wanted {
            continue;
        }
        let Some(found) = &bucket.capabilities else {
            return Err(ApiError::conflict(
                "bucket_capability_unknown",
                format!(
                    "`{param}` needs a bucket whose test found the store accepts it, and bucket `{}` \
                     has not been tested for that: test it (the dashboard's Edit, or `zipkit-api \
                     bucket test`), or leave out `{param}`",
                    bucket.name
                ),
                param.to_owned(),
            ));
        };
        let missing = |what: String| {
            ApiError::conflict(
                "bucket_capability_missing",
                format!(
                    "bucket `{}` was found not to accept `{param}` ({what}); test it again after \
                     changing that, or leave out `{param}`",
                    bucket.name
                ),
                param.to_owned(),
            )
        };
        // A storage class: that one class must be among those the store took.
        if let Some(class) = class.filter(|_| param == "storage_class") {
            if !found.storage_classes.accepts(class) {
                let took = found.storage_classes.names().join(", ");
                let took = if took.is_empty() {
                    "none besides STANDARD".to_owned()
                } else {
                    took
                };
                return Err(missing(format!("{class}: the store took {took}")));
            }
            continue;
        }
        let line = found.lines().into_iter().find(|l| l.name == capability);
        if let Some(line) = line.filter(|l| !l.allowed) {
            return Err(missing(format!("{}: needs {}", line.label, line.needs)));
        }
    }
    Ok(())
}

/// A repeat with the same key: the same job if the body is the same, else a conflict.
async fn replay(
    state: &AppState,
    conn: &mut diesel_async::AsyncPgConnection,
    caller: Caller,
    existing: Zip,
    request_hash: &[u8],
) -> Result<HttpResponse, ApiError> {
    if existing.request_hash.as_deref() != Some(request_hash) {
        return Err(ApiError::conflict(
            "idempotency_key_reused",
            format!("this {IDEMPOTENCY_HEADER} was already used with a different request body"),
            None,
        ));
    }
    Ok(
        HttpResponse::Ok().json(CreateAnswer::Zip(Box::new(ZipResponse {
            data: object(state, conn, caller, existing.id).await?,
        }))),
    )
}

/// Create a zip job.
#[utoipa::path(
    post, path = "/v1/zips", tag = "zips",
    request_body = CreateZipBody,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Same key and body return the same job; another body is a 409."),
        ("traceparent" = Option<String>, Header, description = "W3C trace context, continued into the job."),
    ),
    responses(
        (status = 202, description = "Accepted: stored and queued", body = ZipResponse),
        (status = 200, description = "An idempotent replay of an earlier request (the job), or the answer to a dry run", body = CreateAnswer),
        (status = 400, description = "Invalid request", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid token", body = ErrorEnvelope),
        (status = 404, description = "No such bucket in the caller's project", body = ErrorEnvelope),
        (status = 409, description = "Idempotency key reused with another body", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 415, description = "Body not JSON", body = ErrorEnvelope),
    ),
)]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: web::Json<StrictJson>,
) -> Result<HttpResponse, ApiError> {
    let idempotency = idempotency_key(&req)?;
    let body = body.into_inner().0;
    // Only a request with an Idempotency-Key needs its body fingerprinted.
    let request_hash = match &idempotency {
        Some(_) => digest(
            &SHA256,
            &serde_json::to_vec(&body).map_err(ApiError::internal)?,
        )
        .as_ref()
        .to_vec(),
        None => Vec::new(),
    };
    let valid = validate(parse_body(body)?, state.limits)?;

    if valid.dry_run && (!valid.source_buckets.is_empty() || valid.manifest.is_some()) {
        return Err(ApiError::bad_request(
            "dry_run_unsupported",
            "`dry_run` fetches only http(s) sources given in `urls`; leave out `dry_run`, or the \
             `s3://` sources and the manifest",
            "dry_run".to_owned(),
        ));
    }
    let mut conn = state.conn().await?;
    readable_sources(&mut conn, &caller, &valid).await?;
    if valid.dry_run {
        let bucket = find_bucket(&mut conn, &caller, &valid).await?;
        drop(conn);
        let data = state.dry_runs.run(&valid, bucket.service).await;
        return Ok(HttpResponse::Ok().json(CreateAnswer::DryRun(DryRunResponse { data })));
    }
    if let Some(key) = &idempotency
        && let Some(existing) =
            Zip::find_by_idempotency_key(&mut conn, caller.project_id, key).await?
    {
        return replay(&state, &mut conn, caller, existing, &request_hash).await;
    }
    let bucket = find_bucket(&mut conn, &caller, &valid).await?;
    // Known before the first byte when every source is stored and gives its size (and none is
    // a prefix still to list).
    let expected_size = zipkit_zip::layout::certain_size(
        valid.compression,
        valid.entries.iter().map(|e| {
            let size = e.declared_size.and_then(|s| u64::try_from(s).ok());
            (e.filename.as_str(), size)
        }),
    )
    .and_then(|size| i64::try_from(size).ok())
    .filter(|_| valid.listings.is_empty() && valid.manifest.is_none());
    let new = NewZip {
        project_id: caller.project_id,
        bucket_id: bucket.id,
        key: valid.key,
        metadata: valid.metadata,
        compression: valid.compression,
        on_error: valid.on_error,
        idempotency: idempotency.clone().map(|key| (key, request_hash.clone())),
        entries: valid.entries,
        listings: valid.listings,
        manifest: valid.manifest,
        traceparent: zipkit_runtime::telemetry::traceparent(&tracing::Span::current()),
        expected_size,
        result_settings: valid.result_settings,
    };
    let store = tracing::info_span!("store job", project.id = %caller.project_id);
    let zip = match Zip::create(&mut conn, new).instrument(store).await {
        Ok(zip) => zip,
        // Two requests with one key raced; the other one stored its job first.
        Err(ModelError::IdempotencyKeyTaken) => {
            let key = idempotency.as_deref().unwrap_or_default();
            let existing = Zip::find_by_idempotency_key(&mut conn, caller.project_id, key)
                .await?
                .ok_or_else(|| ApiError::internal("idempotent job vanished"))?;
            return replay(&state, &mut conn, caller, existing, &request_hash).await;
        }
        Err(err) => return Err(ApiError::internal(err)),
    };
    metrics::counter!(zipkit_runtime::metrics::JOBS_ACCEPTED).increment(1);
    // The job is committed; if the broker is away the sweeper publishes it later.
    if let Err(err) = state
        .publisher
        .publish(&mut conn, zip.id, PublishedBy::Request)
        .await
    {
        tracing::warn!(zip.id = %zip.id, error = %err, "job stored but not yet published; the sweeper will retry");
    }
    let object = ZipObject::new(
        zip,
        BucketRef {
            service: bucket.service,
            name: bucket.name,
        },
        expected_size,
        SkippedEntries::default(),
    );
    Ok(HttpResponse::Accepted().json(ZipResponse { data: object }))
}

/// Get one zip job.
#[utoipa::path(
    get, path = "/v1/zips/{uuid}", tag = "zips",
    params(("uuid" = String, Path, format = Uuid, description = "The zip's uuid")),
    responses(
        (status = 200, description = "The zip", body = ZipResponse),
        (status = 400, description = "Not a uuid", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid token", body = ErrorEnvelope),
        (status = 404, description = "No such zip in the caller's project", body = ErrorEnvelope),
    ),
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_zip_id(&path)?;
    let mut conn = state.conn().await?;
    Ok(HttpResponse::Ok().json(ZipResponse {
        data: object(&state, &mut conn, caller, id).await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100, default 20.
    limit: Option<i64>,
    /// The `uuid` of the last zip of the previous page.
    starting_after: Option<String>,
    /// Only zips with this status.
    #[param(schema_with = zipkit_domain::views::schema::zip_status)]
    status: Option<String>,
}

pub const DEFAULT_PAGE: i64 = 20;
pub const MAX_PAGE: i64 = 100;

/// A list's `limit`: `default` when not given, else 1 to `max`.
fn page_limit(given: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = given.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(
            "parameter_invalid",
            format!("`limit` must be between 1 and {max}"),
            "limit".to_owned(),
        ));
    }
    Ok(limit)
}

/// List the project's zip jobs, newest first.
#[utoipa::path(
    get, path = "/v1/zips", tag = "zips",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of zips", body = ZipList),
        (status = 400, description = "Invalid query parameter", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid token", body = ErrorEnvelope),
    ),
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    KnownQuery(query): KnownQuery<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<ZipStatus>)
        .transpose()
        .map_err(|e| {
            ApiError::bad_request(
                "parameter_invalid",
                format!("`status`: {e}"),
                "status".to_owned(),
            )
        })?;
    let starting_after = query
        .starting_after
        .as_deref()
        .map(|raw| {
            raw.parse::<ZipId>().map_err(|_| {
                ApiError::bad_request(
                    "parameter_invalid",
                    format!("`{raw}` is not a zip uuid"),
                    "starting_after".to_owned(),
                )
            })
        })
        .transpose()?;
    let mut conn = state.conn().await?;
    // One more than asked tells whether another page follows.
    let page = ZipPage {
        status,
        starting_after,
        limit: limit + 1,
    };
    let mut rows = Zip::list(&mut conn, caller.project_id, page)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "zip_not_found",
                "`starting_after` names no zip of this project",
                "starting_after".to_owned(),
            )
        })?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let data = objects(&state, &mut conn, rows).await?;
    let next = if has_more {
        data.last().map(|z| z.id)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(ZipList {
        object: "list",
        data,
        has_more,
        next_cursor: next,
    }))
}

/// Cancel a zip job that has not ended.
#[utoipa::path(
    post, path = "/v1/zips/{uuid}/cancel", tag = "zips",
    params(("uuid" = String, Path, format = Uuid, description = "The zip's uuid")),
    responses(
        (status = 200, description = "Cancelled (also when it already was)", body = ZipResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorEnvelope),
        (status = 404, description = "No such zip in the caller's project", body = ErrorEnvelope),
        (status = 409, description = "Already succeeded or failed", body = ErrorEnvelope),
    ),
)]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_zip_id(&path)?;
    let mut conn = state.conn().await?;
    let zip = Zip::cancel(&mut conn, caller.project_id, id)
        .await?
        .ok_or_else(|| zip_not_found(id))?;
    if matches!(zip.status, ZipStatus::Succeeded | ZipStatus::Failed) {
        return Err(ApiError::conflict(
            "zip_not_cancellable",
            format!("the zip already ended with status `{}`", zip.status),
            "uuid".to_owned(),
        ));
    }
    Ok(HttpResponse::Ok().json(ZipResponse {
        data: object(&state, &mut conn, caller, id).await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SkippedQuery {
    /// 1 to 1000, default 100.
    limit: Option<i64>,
    /// The `index` of the last source of the previous page.
    starting_after: Option<i64>,
}

pub const DEFAULT_SKIPPED_PAGE: i64 = 100;
pub const MAX_SKIPPED_PAGE: i64 = 1_000;

/// Page through the sources a job left out (`on_error: skip`), in order, each with its reason:
/// all of them, where the zip object lists the first 100.
#[utoipa::path(
    get, path = "/v1/zips/{uuid}/skipped", tag = "zips",
    params(
        ("uuid" = String, Path, format = Uuid, description = "The zip's uuid"),
        SkippedQuery,
    ),
    responses(
        (status = 200, description = "A page of the sources left out", body = SkippedList),
        (status = 400, description = "Not a uuid, or an invalid query parameter", body = ErrorEnvelope),
        (status = 401, description = "Missing or invalid token", body = ErrorEnvelope),
        (status = 404, description = "No such zip in the caller's project", body = ErrorEnvelope),
    ),
)]
pub async fn skipped(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    KnownQuery(query): KnownQuery<SkippedQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_zip_id(&path)?;
    let limit = page_limit(query.limit, DEFAULT_SKIPPED_PAGE, MAX_SKIPPED_PAGE)?;
    let after = match query.starting_after {
        None => -1,
        Some(index) => i32::try_from(index)
            .ok()
            .filter(|i| *i >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "parameter_invalid",
                    "`starting_after` must be a source's index (0 or more)",
                    "starting_after".to_owned(),
                )
            })?,
    };
    let mut conn = state.conn().await?;
    Zip::find_with_bucket(&mut conn, caller.project_id, id)
        .await?
        .ok_or_else(|| zip_not_found(id))?;
    // One more than asked tells whether another page follows.
    let mut rows = Zip::skipped_page(&mut conn, id, after, limit + 1).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let data: Vec<Skipped> = rows.into_iter().map(Skipped::from).collect();
    let next_cursor = if has_more {
        data.last().map(|s| s.index)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(SkippedList {
        object: "list",
        data,
        has_more,
        next_cursor,
    }))
}
