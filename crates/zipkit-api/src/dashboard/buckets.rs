//! Buckets: the list, "Add Bucket" with Save and Test, editing credentials (retested), and
//! deletion (confirmed, refused while zip jobs refer to the bucket). Every operation is the one
//! the operator CLI runs (`admin::buckets`); this module only turns forms into it and back.

use actix_web::http::StatusCode;
use actix_web::web;
use maud::{Markup, html};
use secrecy::SecretString;
use serde::Deserialize;
use zipkit_domain::models::Bucket;
use zipkit_domain::{BucketId, Service};

use super::context::{CsrfForm, Member, NoticeQuery, PageError, PageResult, conn, parse_id};
use super::pages::{self, FieldErrors, Section};
use super::{SignedIn, html as page, see_other};
use crate::admin::buckets::{self as admin, BucketAdminError, BucketInput};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/buckets", web::get().to(list))
        .route("/buckets", web::post().to(create))
        .route("/buckets/new", web::get().to(new_form))
        .route("/buckets/{bucket}/edit", web::get().to(edit_form))
        .route("/buckets/{bucket}", web::get().to(show))
        .route("/buckets/{bucket}", web::post().to(update))
        .route("/buckets/{bucket}/sources", web::post().to(set_sources))
        .route("/buckets/{bucket}/delete", web::get().to(confirm_delete))
        .route("/buckets/{bucket}/delete", web::post().to(delete));
}

/// The "Add Bucket" and "Edit" forms as posted. Secrets are never sent back to the browser.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BucketForm {
    csrf: String,
    service: String,
    name: String,
    region: String,
    account_id: String,
    endpoint_url: String,
    path_style: Option<String>,
    acl: String,
    access_key_id: String,
    secret_access_key: String,
}

impl BucketForm {
    fn service(&self) -> Service {
        self.service.parse().unwrap_or_default()
    }

    fn input(&self) -> BucketInput {
        let service = self.service();
        let optional = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        BucketInput {
            service,
            name: self.name.trim().to_owned(),
            region: self.region.trim().to_owned(),
            account_id: optional(&self.account_id),
            endpoint_url: optional(&self.endpoint_url),
            path_style: self.path_style.is_some(),
            acl: optional(&self.acl),
            access_key_id: SecretString::from(self.access_key_id.trim().to_owned()),
            secret_access_key: SecretString::from(self.secret_access_key.clone()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct NewQuery {
    service: Option<String>,
}

async fn list(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<String>,
    query: web::Query<NoticeQuery>,
) -> PageResult {
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &path).await?;
    let buckets = Bucket::list(&mut conn, member.id()).await?;
    let notice = match query.notice.as_deref() {
        Some("added") => Some(("ok", "The bucket passed the write test and was saved.")),
        Some("updated") => Some((
            "ok",
            "The new credentials passed the write test and were saved.",
        )),
        Some("deleted") => Some(("ok", "The bucket was deleted.")),
        Some("sources_allowed") => Some((
            "ok",
            "Jobs may now read their sources from the bucket (s3://<bucket>/<key>).",
        )),
        Some("sources_denied") => Some(("ok", "Jobs may no longer read sources from the bucket.")),
        _ => None,
    };
    Ok(page(
        StatusCode::OK,
        list_page(&member, &buckets, notice.map(|(k, t)| (k, t.to_owned()))),
    ))
}

fn service_label(bucket: &Bucket) -> String {
    match (bucket.service, &bucket.endpoint_url) {
        (Service::R2, _) => "R2".to_owned(),
        (Service::S3, None) => "S3".to_owned(),
        (Service::S3, Some(endpoint)) => {
            let host = url::Url::parse(endpoint)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| endpoint.clone());
            format!("S3-compatible ({host})")
        }
    }
}

/// Why a bucket should have a lifecycle rule for incomplete multipart uploads: the one safety net
/// for parts a job could not abort (docs/JOBS.md, orphaned uploads).
fn lifecycle_hint() -> Markup {
    html! {
        section.hint aria-labelledby="lifecycle-title" {
            h2 #lifecycle-title { "Add a lifecycle rule for incomplete uploads" }
            p {
                "Large archives go up as multipart uploads. A job that fails or is cancelled aborts its upload, "
                "but only if your keys may (" code { "s3:AbortMultipartUpload" } "; zipkit itself needs only "
                code { "s3:PutObject" } "), and a worker that dies mid-job cannot. The parts of such an upload "
                "stay in your bucket, billed, until removed. Add a lifecycle rule that aborts incomplete "
                "multipart uploads after one day: on S3 under Management → Lifecycle rules, on R2 under "
                "Settings → Object lifecycle rules."
            }
        }
    }
}

fn list_page(member: &Member, buckets: &[Bucket], notice: Option<(&str, String)>) -> Markup {
    let base = member.base();
    pages::project_page(
        member,
        Section::Buckets,
        "Buckets",
        html! {
            @if let Some((kind, text)) = &notice { (pages::notice(kind, text)) }
            div.card {
                div.card-head {
                    h1 { "Buckets" }
                    a.button href={ (base) "/buckets/new" } { "Add Bucket" }
                }
                @if buckets.is_empty() {
                    p.muted { "No bucket yet. Add one: zipkit writes archives into your own bucket, which must already exist." }
                } @else {
                    table.list {
                        thead { tr { th { "Bucket" } th { "Service" } th { "Region" } th { "Created" } th { "Access key" } th { "Last test" } th { span.sr { "Actions" } } } }
                        tbody {
                            @for b in buckets {
                                tr {
                                    td data-label="Bucket" { strong { (b.name) } }
                                    td data-label="Service" { (service_label(b)) }
                                    td data-label="Region" { (b.region) }
                                    td data-label="Created" { (pages::day(b.created_at)) }
                                    td data-label="Access key" { code { (b.access_key_hint) } }
                                    td data-label="Last test" {
                                        @match (b.last_test_ok, b.last_tested_at) {
                                            (Some(true), Some(at)) => span.ok { "passed " (pages::day(at)) },
                                            (Some(false), Some(at)) => span.bad title=[b.last_test_message.as_deref()] { "failed " (pages::day(at)) },
                                            _ => span.muted { "not tested" },
                                        }
                                    }
                                    td.actions {
                                        a href={ (base) "/buckets/" (b.id) "/edit" } { "Edit" }
                                        a href={ (base) "/buckets/" (b.id) "/delete" } { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
                (lifecycle_hint())
            }
        },
    )
}

async fn new_form(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<String>,
    query: web::Query<NewQuery>,
) -> PageResult {
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &path).await?;
    let form = BucketForm {
        service: query.service.clone().unwrap_or_else(|| "s3".into()),
        ..BucketForm::default()
    };
    Ok(page(
        StatusCode::OK,
        add_page(&member, &form, &FieldErrors::default(), None),
    ))
}

async fn create(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<String>,
    form: web::Form<BucketForm>,
) -> PageResult {
    let mut conn = conn(&state).await?;
    let member = Member::posting(&mut conn, signed_in, &path, &form.csrf).await?;
    match admin::add(
        &mut conn,
        &state.keyring,
        member.id(),
        form.input(),
        false,
        &state.buckets,
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!(
            "{}/buckets?notice=added",
            member.base()
        ))),
        Err(err) => {
            let (errors, failure) = explain(err)?;
            Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                add_page(&member, &form, &errors, failure.as_deref()),
            ))
        }
    }
}

/// A refusal as messages for the form: per field, or about the whole bucket (the test).
fn explain(err: BucketAdminError) -> Result<(FieldErrors, Option<String>), PageError> {
    let mut errors = FieldErrors::default();
    let mut failure = None;
    match err {
        BucketAdminError::Invalid { field, message } => {
            errors.add(field, pages::capitalized(&message))
        }
        e @ BucketAdminError::Duplicate { .. } => {
            errors.add("name", pages::capitalized(&e.to_string()))
        }
        BucketAdminError::TestFailed(e) => {
            failure = Some(format!("The test upload failed, so nothing was saved. {e}"));
        }
        BucketAdminError::NotFound => return Err(PageError::NotFound),
        BucketAdminError::InUse { .. } | BucketAdminError::Model(_) => {
            tracing::error!(error = %err, "saving a bucket failed");
            return Err(PageError::Internal);
        }
    }
    Ok((errors, failure))
}

fn add_page(
    member: &Member,
    form: &BucketForm,
    errors: &FieldErrors,
    failure: Option<&str>,
) -> Markup {
    let base = member.base();
    let service = form.service();
    pages::project_page(
        member,
        Section::Buckets,
        "Add Bucket",
        html! {
            div.card {
                h1 { "Add Bucket" }
                nav.choice aria-label="Provider" {
                    a.active[service == Service::S3] href={ (base) "/buckets/new?service=s3" } { "AWS S3 or S3-compatible" }
                    a.active[service == Service::R2] href={ (base) "/buckets/new?service=r2" } { "Cloudflare R2" }
                }
                @if let Some(failure) = failure { (pages::notice("bad", failure)) }
                form method="post" action={ (base) "/buckets" } {
                    (pages::csrf(member.csrf()))
                    input type="hidden" name="service" value=(service.as_str());
                    (pages::field("Bucket name", "name", "text", &form.name, errors, Some("The bucket must already exist; zipkit never creates it.")))
                    @if service == Service::R2 {
                        (pages::field("Account ID", "account_id", "text", &form.account_id, errors, Some("32 hexadecimal characters, shown in the R2 overview.")))
                    } @else {
                        (pages::field("Region", "region", "text", &form.region, errors, Some("For example us-east-1.")))
                    }
                    (pages::field("Access key ID", "access_key_id", "text", &form.access_key_id, errors, None))
                    (pages::field("Secret access key", "secret_access_key", "password", "", errors, Some("Stored encrypted; never shown again.")))
                    @if service == Service::S3 {
                        details open[!form.endpoint_url.is_empty() || form.path_style.is_some() || !form.acl.is_empty() || errors.get("endpoint_url").is_some() || errors.get("acl").is_some()] {
                            summary { "Advanced: another S3-compatible store" }
                            (pages::field("Custom endpoint", "endpoint_url", "url", &form.endpoint_url, errors, Some("MinIO, Garage, Ceph, Backblaze B2…; leave empty for AWS.")))
                            div.check {
                                input #f-path_style type="checkbox" name="path_style" value="on" checked[form.path_style.is_some()];
                                label for="f-path_style" { "Path-style addressing" }
                            }
                            (pages::field("Canned ACL", "acl", "text", &form.acl, errors, Some("Optional, e.g. bucket-owner-full-control; most buckets need none.")))
                        }
                    }
                    div.form-actions {
                        button type="submit" { "Save and Test" }
                        a href={ (base) "/buckets" } { "Cancel" }
                    }
                }
                (lifecycle_hint())
            }
        },
    )
}

async fn find(
    conn: &mut diesel_async::AsyncPgConnection,
    member: &Member,
    id: &str,
) -> Result<Bucket, PageError> {
    let id: BucketId = parse_id(id)?;
    Bucket::find(conn, member.id(), id)
        .await?
        .ok_or(PageError::NotFound)
}

/// A bucket's own address (where its edit form posts): reloading it leads back to the form.
async fn show(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
) -> PageResult {
    let (project, bucket) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &project).await?;
    let bucket = find(&mut conn, &member, &bucket).await?;
    Ok(see_other(&format!(
        "{}/buckets/{}/edit",
        member.base(),
        bucket.id
    )))
}

async fn edit_form(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
) -> PageResult {
    let (project, bucket) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &project).await?;
    let bucket = find(&mut conn, &member, &bucket).await?;
    let form = BucketForm {
        region: bucket.region.clone(),
        ..BucketForm::default()
    };
    Ok(page(
        StatusCode::OK,
        edit_page(&member, &bucket, &form, &FieldErrors::default(), None),
    ))
}

async fn update(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
    form: web::Form<BucketForm>,
) -> PageResult {
    let (project, bucket) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::posting(&mut conn, signed_in, &project, &form.csrf).await?;
    let bucket = find(&mut conn, &member, &bucket).await?;
    let mut errors = FieldErrors::default();
    if form.access_key_id.trim().is_empty() {
        errors.add("access_key_id", "The access key ID is required");
    }
    if form.secret_access_key.is_empty() {
        errors.add("secret_access_key", "The secret access key is required");
    }
    if !errors.is_empty() {
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            edit_page(&member, &bucket, &form, &errors, None),
        ));
    }
    let credentials = zipkit_domain::models::BucketCredentials {
        access_key_id: SecretString::from(form.access_key_id.trim().to_owned()),
        secret_access_key: SecretString::from(form.secret_access_key.clone()),
    };
    let region = (bucket.service == Service::S3).then(|| form.region.trim().to_owned());
    match admin::edit_credentials(
        &mut conn,
        &state.keyring,
        member.id(),
        bucket.id,
        admin::CredentialsEdit {
            credentials,
            region,
            skip_test: false,
        },
        &state.buckets,
    )
    .await
    {
        Ok(_) => Ok(see_other(&format!(
            "{}/buckets?notice=updated",
            member.base()
        ))),
        Err(err) => {
            let (errors, failure) = explain(err)?;
            Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                edit_page(&member, &bucket, &form, &errors, failure.as_deref()),
            ))
        }
    }
}

fn edit_page(
    member: &Member,
    bucket: &Bucket,
    form: &BucketForm,
    errors: &FieldErrors,
    failure: Option<&str>,
) -> Markup {
    let base = member.base();
    pages::project_page(
        member,
        Section::Buckets,
        "Edit bucket",
        html! {
            div.card {
                h1 { "Edit " (bucket.name) }
                p.muted { (service_label(bucket)) " · created " (pages::day(bucket.created_at)) " · current access key " code { (bucket.access_key_hint) } }
                p { "Enter the new credentials; they are tested with a small upload before they replace the current ones." }
                @if let Some(failure) = failure { (pages::notice("bad", failure)) }
                form method="post" action={ (base) "/buckets/" (bucket.id) } {
                    (pages::csrf(member.csrf()))
                    @if bucket.service == Service::S3 {
                        (pages::field("Region", "region", "text", &form.region, errors, None))
                    }
                    (pages::field("Access key ID", "access_key_id", "text", &form.access_key_id, errors, None))
                    (pages::field("Secret access key", "secret_access_key", "password", "", errors, None))
                    div.form-actions {
                        button type="submit" { "Save and Test" }
                        a href={ (base) "/buckets" } { "Cancel" }
                    }
                }
                (lifecycle_hint())
            }
            (sources_card(member, bucket))
            (capabilities_card(bucket))
        },
    )
}

#[derive(Debug, Deserialize)]
struct SourcesForm {
    csrf: String,
    /// `on` lets jobs read the bucket, anything else stops them.
    read_sources: String,
}

async fn set_sources(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
    form: web::Form<SourcesForm>,
) -> PageResult {
    let (project, bucket) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::posting(&mut conn, signed_in, &project, &form.csrf).await?;
    let bucket = find(&mut conn, &member, &bucket).await?;
    let allow = form.read_sources == "on";
    match admin::set_read_sources(&mut conn, member.id(), bucket.id, allow).await {
        Ok(_) => {}
        Err(admin::BucketAdminError::NotFound) => return Err(PageError::NotFound),
        Err(e) => {
            tracing::error!(error = %e, "switching a bucket's sources failed");
            return Err(PageError::Internal);
        }
    }
    let notice = if allow {
        "sources_allowed"
    } else {
        "sources_denied"
    };
    Ok(see_other(&format!(
        "{}/buckets?notice={notice}",
        member.base()
    )))
}

/// Whether jobs may read their sources from the bucket, and the switch.
fn sources_card(member: &Member, bucket: &Bucket) -> Markup {
    let base = member.base();
    html! {
        div.card #sources {
            h2 { "Sources" }
            p { "Jobs may name objects of this bucket as their sources: " code { "s3://" (bucket.name) "/<key>" } ", or every object under a prefix with " code { "s3://" (bucket.name) "/<prefix>/" } ". They are read with this bucket's keys, which then need " code { "s3:GetObject" } " and " code { "s3:ListBucket" } " beyond writing." }
            @if bucket.read_sources {
                p { span.ok { "On" } " — jobs may read sources from this bucket." }
                @if let Some(missing) = admin::read_sources_missing(bucket) {
                    (pages::notice("bad", &format!("But {missing}.")))
                }
            } @else {
                p { span.muted { "Off" } " — jobs naming this bucket as a source are refused." }
            }
            form method="post" action={ (base) "/buckets/" (bucket.id) "/sources" } {
                (pages::csrf(member.csrf()))
                @if bucket.read_sources {
                    input type="hidden" name="read_sources" value="off";
                    button type="submit" { "Stop jobs reading sources" }
                } @else {
                    input type="hidden" name="read_sources" value="on";
                    button type="submit" { "Let jobs read sources" }
                }
            }
        }
    }
}

/// What the last test found the keys may do, each with what grants it where it is missing.
fn capabilities_card(bucket: &Bucket) -> Markup {
    html! {
        div.card {
            h2 { "What the keys may do" }
            @if let Some(found) = &bucket.capabilities {
                p.muted { "As Save and Test found on " (pages::day(bucket.last_tested_at.unwrap_or(bucket.updated_at))) ", each checked on the test object alone." }
                dl.facts {
                    @for line in found.lines() {
                        dt { (line.label) }
                        @if line.allowed { dd { span.ok { "yes" } } }
                        @else { dd { span.bad { "no" } " " span.muted { "needs " (line.needs) } } }
                    }
                }
            } @else {
                p.muted { "Not checked yet. Save and Test finds what the keys may do beyond writing: read, list, abort uploads, ACLs, checksums and part copies." }
            }
        }
    }
}

async fn confirm_delete(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
) -> PageResult {
    let (project, bucket) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &project).await?;
    let bucket = find(&mut conn, &member, &bucket).await?;
    let base = member.base();
    Ok(page(
        StatusCode::OK,
        pages::project_page(
            &member,
            Section::Buckets,
            "Delete bucket",
            html! {
                div.card {
                    h1 { "Delete " (bucket.name) "?" }
                    p { "zipkit forgets this bucket and its credentials. The bucket itself and the archives in it are not touched." }
                    form method="post" action={ (base) "/buckets/" (bucket.id) "/delete" } {
                        (pages::csrf(member.csrf()))
                        div.form-actions {
                            button.danger type="submit" { "Delete bucket" }
                            a href={ (base) "/buckets" } { "Cancel" }
                        }
                    }
                }
            },
        ),
    ))
}

async fn delete(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> PageResult {
    let (project, bucket) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::posting(&mut conn, signed_in, &project, &form.csrf).await?;
    let bucket = find(&mut conn, &member, &bucket).await?;
    match admin::delete(&mut conn, member.id(), bucket.id).await {
        Ok(()) => Ok(see_other(&format!(
            "{}/buckets?notice=deleted",
            member.base()
        ))),
        Err(BucketAdminError::NotFound) => Err(PageError::NotFound),
        Err(BucketAdminError::InUse { jobs }) => {
            let buckets = Bucket::list(&mut conn, member.id()).await?;
            let why = format!(
                "The bucket {} was not deleted: {} to it. Jobs keep their bucket so their history stays complete.",
                bucket.name,
                admin::still_refer(jobs),
            );
            Ok(page(
                StatusCode::CONFLICT,
                list_page(&member, &buckets, Some(("bad", why))),
            ))
        }
        Err(err) => {
            tracing::error!(error = %err, "deleting a bucket failed");
            Err(PageError::Internal)
        }
    }
}
