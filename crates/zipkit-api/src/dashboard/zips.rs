//! Zips: the project's recent jobs (filter by status, older pages), and one job's detail with
//! its entries and timings. Pages reload themselves while a job is still moving.

use actix_web::http::StatusCode;
use actix_web::web;
use maud::{Markup, html};
use serde::Deserialize;
use zipkit_domain::enums::{EntryState, ZipStatus};
use zipkit_domain::models::{Zip, ZipPage, ZipWithBucket};
use zipkit_domain::values::WINDOWS_SAFE_RULE;
use zipkit_domain::{Service, ZipId};

use super::context::{Member, PageError, PageResult, conn, parse_id};
use super::pages::{self, Section};
use super::{SignedIn, html as page};
use crate::state::AppState;

const PAGE_SIZE: i64 = 25;
/// Entries listed on a job's page; a job may have tens of thousands.
const ENTRIES_SHOWN: usize = 500;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(to_zips))
        .route("/", web::get().to(to_zips))
        .route("/zips", web::get().to(list))
        .route("/zips/{zip}", web::get().to(detail));
}

async fn to_zips(path: web::Path<String>) -> actix_web::HttpResponse {
    super::see_other(&format!("/dashboard/projects/{}/zips", path.into_inner()))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    status: Option<String>,
    after: Option<String>,
}

fn status_badge(status: ZipStatus) -> Markup {
    let label = match status {
        ZipStatus::None => "queued",
        other => other.as_str(),
    };
    html! { span class={ "badge " (status.as_str()) } { (label) } }
}

fn service_name(service: Service) -> &'static str {
    match service {
        Service::S3 => "S3",
        Service::R2 => "R2",
    }
}

fn files(n: i32) -> String {
    if n == 1 {
        "1 file".to_owned()
    } else {
        format!("{n} files")
    }
}

fn progress(zip: &Zip) -> Markup {
    html! {
        @if zip.status == ZipStatus::Processing {
            @let percent = if zip.files_total > 0 { zip.files_done * 100 / zip.files_total } else { 0 };
            progress max="100" value=(percent) { (percent) "%" }
            " " (zip.files_done) "/" (files(zip.files_total)) " · " (pages::bytes(zip.bytes_uploaded)) " uploaded"
        } @else if let Some(size) = zip.result_size {
            (files(zip.result_entries.unwrap_or(zip.files_done))) " · " (pages::bytes(size))
        } @else {
            (files(zip.files_total))
        }
    }
}

fn error_of(zip: &Zip) -> Markup {
    html! {
        @if let (Some(code), Some(message)) = (&zip.error_code, &zip.error_message) {
            span.bad { code { (code) } " " (message) }
            @if let Some(param) = &zip.error_param { " " span.muted { "(" (param) ")" } }
        }
    }
}

async fn list(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> PageResult {
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &path).await?;
    // An unknown filter shows everything rather than an error: it only ever comes from a URL.
    let status = query.status.as_deref().and_then(|s| {
        if s == "queued" {
            Some(ZipStatus::None)
        } else {
            s.parse().ok()
        }
    });
    let after = match query.after.as_deref() {
        Some(id) => Some(parse_id::<ZipId>(id)?),
        None => None,
    };
    let zips = Zip::list(
        &mut conn,
        member.id(),
        ZipPage {
            status,
            starting_after: after,
            limit: PAGE_SIZE + 1,
        },
    )
    .await?
    .ok_or(PageError::NotFound)?;
    let more = zips.len() as i64 > PAGE_SIZE;
    let zips = &zips[..zips.len().min(PAGE_SIZE as usize)];
    let moving = zips.iter().any(|row| !row.zip.status.is_terminal());
    Ok(page(
        StatusCode::OK,
        pages::project_page_with(
            &member,
            Section::Zips,
            "Zips",
            moving,
            list_page(&member, zips, status, more),
        ),
    ))
}

fn status_filter(status: Option<ZipStatus>) -> &'static str {
    match status {
        None => "",
        Some(ZipStatus::None) => "queued",
        Some(s) => s.as_str(),
    }
}

fn list_page(
    member: &Member,
    zips: &[ZipWithBucket],
    status: Option<ZipStatus>,
    more: bool,
) -> Markup {
    let base = member.base();
    let filters = [
        ("", "All"),
        ("queued", "Queued"),
        ("processing", "Processing"),
        ("succeeded", "Succeeded"),
        ("failed", "Failed"),
        ("cancelled", "Cancelled"),
    ];
    let current = status_filter(status);
    html! {
        div.card {
            h1 { "Zips" }
            nav.choice aria-label="Filter by status" {
                @for (value, label) in filters {
                    @let href = if value.is_empty() { format!("{base}/zips") } else { format!("{base}/zips?status={value}") };
                    a.active[value == current] href=(href) { (label) }
                }
            }
            @if zips.is_empty() {
                p.muted { "No zip here yet. Create one with " code { "POST /v1/zips" } " and an access token of this project." }
            } @else {
                table.list.zips {
                    thead { tr { th { "Zip" } th { "Status" } th { "Created" } th { "Bucket" } th { "Progress" } th { "Error" } } }
                    tbody {
                        @for ZipWithBucket { zip, service, bucket, .. } in zips {
                            tr {
                                td data-label="Zip" { a href={ (base) "/zips/" (zip.id) } { code { (zip.id) } } br; span.muted { (zip.object_key) } }
                                td data-label="Status" { (status_badge(zip.status)) }
                                td data-label="Created" { (pages::moment(zip.created_at)) }
                                td data-label="Bucket" { (bucket) " " span.muted { "(" (service_name(*service)) ")" } }
                                td data-label="Progress" { (progress(zip)) }
                                td data-label="Error" { (error_of(zip)) }
                            }
                        }
                    }
                }
                @if more {
                    @if let Some(ZipWithBucket { zip: last, .. }) = zips.last() {
                        @let filter = status_filter(status);
                        p { a href={ (base) "/zips?after=" (last.id) @if !filter.is_empty() { "&status=" (filter) } } { "Older zips →" } }
                    }
                }
            }
        }
    }
}

fn duration(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> String {
    let ms = (to - from).num_milliseconds().max(0);
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{}m {:02}s", s / 60, s % 60)
    }
}

async fn detail(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
) -> PageResult {
    let (project, zip) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &project).await?;
    let id: ZipId = parse_id(&zip)?;
    let ZipWithBucket {
        zip,
        service,
        bucket,
        expected_size,
    } = Zip::find_with_bucket(&mut conn, member.id(), id)
        .await?
        .ok_or(PageError::NotFound)?;
    let entries = Zip::first_entries(&mut conn, zip.id, ENTRIES_SHOWN as i64).await?;
    let total = usize::try_from(zip.files_total)
        .unwrap_or(0)
        .max(entries.len());
    // A fresh link on each view, where the bucket's keys may read (as GET /v1/zips/{id}).
    let source = match zip.status {
        ZipStatus::Succeeded => Zip::download_sources(&mut conn, &[zip.id]).await?.pop(),
        _ => None,
    };
    let download = match &source {
        Some(source) => {
            let key = &zip.object_key;
            state
                .buckets
                .download_link(&state.keyring, source, key)
                .await
        }
        None => None,
    };
    let expires_at = source.as_ref().and_then(|s| {
        let days = chrono::Duration::days(s.expires_in_days?.into());
        Some(zip.finished_at? + days)
    });
    let deleted_at = source.as_ref().and_then(|s| s.archive_deleted_at);
    let base = member.base();
    let body = html! {
        p { a href={ (base) "/zips" } { "← All zips" } }
        div.card {
            h1 { "Zip " code { (zip.id) } }
            dl.facts {
                dt { "Status" } dd { (status_badge(zip.status)) }
                dt { "Bucket" } dd { (bucket) " (" (service_name(service)) ")" }
                dt { "Object key" } dd { code { (zip.object_key) } }
                dt { "Compression" } dd { (zip.compression.as_str()) " · on error: " (zip.on_error.as_str()) }
                dt { "Progress" } dd { (progress(&zip)) " · " (pages::bytes(zip.bytes_downloaded)) " downloaded" }
                @if let (Some(size), None) = (expected_size, zip.result_size) {
                    dt { "Expected size" } dd { (pages::bytes(size)) }
                }
                @if let Some(etag) = &zip.result_etag { dt { "ETag" } dd { code { (etag) } } }
                @if let Some(link) = &download {
                    dt { "Download" } dd {
                        a href=(link.url) rel="noreferrer" { "Download the archive" }
                        " " span.muted { "link valid until " (pages::moment(link.expires_at)) }
                    }
                }
                @if let Some(at) = deleted_at {
                    dt { "Archive" } dd { "deleted " (pages::moment(at)) ", as the job asked" }
                } @else if let Some(at) = expires_at {
                    dt { "Expires" } dd { "the archive is deleted " (pages::moment(at)) }
                }
                dt { "Created" } dd { (pages::moment(zip.created_at)) }
                @if let Some(started) = zip.started_at {
                    dt { "Started" } dd { (pages::moment(started)) " · waited " (duration(zip.created_at, started)) }
                }
                @if let Some(finished) = zip.finished_at {
                    dt { "Finished" } dd {
                        (pages::moment(finished))
                        @if let Some(started) = zip.started_at { " · took " (duration(started, finished)) }
                    }
                }
                dt { "Attempts" } dd { (zip.attempts) }
                @if zip.error_code.is_some() { dt { "Error" } dd { (error_of(&zip)) } }
            }
        }
        div.card {
            h2 { "Entries" }
            @if total > entries.len() {
                p.muted { "The first " (entries.len()) " of " (total) " entries." }
            }
            @if entries.iter().any(|e| e.given_filename.is_some()) {
                p.rule {
                    "Names Windows cannot create were rewritten (" code { "windows_safe_names" } "): "
                    (WINDOWS_SAFE_RULE)
                }
            }
            table.list.entries {
                thead { tr { th { "#" } th { "File name" } th { "Source" } th { "State" } th { "Size" } th { "CRC-32" } } }
                tbody {
                    @for e in &entries {
                        tr {
                            td data-label="#" { (e.entry_index) }
                            td data-label="File name" {
                                (e.filename)
                                @if let Some(given) = &e.given_filename {
                                    br; span.muted { "given as " code { (given) } }
                                }
                            }
                            td data-label="Source" { span.url { (e.url) } }
                            td data-label="State" {
                                @match e.state {
                                    EntryState::Done => span.ok { "done" },
                                    EntryState::Pending => span.muted { "pending" },
                                    EntryState::Skipped => span.bad { "skipped" },
                                    EntryState::Failed => span.bad { "failed" },
                                }
                                @if let Some(code) = &e.error_code {
                                    br; code { (code) } " " span.muted { (e.error_message.as_deref().unwrap_or_default()) }
                                }
                            }
                            td data-label="Size" { (e.size.map(pages::bytes).unwrap_or_default()) }
                            td data-label="CRC-32" { @if let Some(crc) = e.crc32 { code { (format!("{crc:08x}")) } } }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        pages::project_page_with(
            &member,
            Section::Zips,
            "Zip",
            !zip.status.is_terminal(),
            body,
        ),
    ))
}
