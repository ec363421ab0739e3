//! Webhook endpoints: create (the signing secret is shown once), list, an endpoint's recent
//! deliveries with their status codes, a test event, delete — through `admin::webhooks`.

use actix_web::http::StatusCode;
use actix_web::web;
use maud::{Markup, html};
use secrecy::ExposeSecret;
use serde::Deserialize;
use zipkit_domain::WebhookEndpointId;
use zipkit_domain::enums::DeliveryState;
use zipkit_domain::models::{WebhookDelivery, WebhookEndpoint};

use super::context::{CsrfForm, Member, NoticeQuery, PageError, PageResult, conn, parse_id};
use super::pages::{self, FieldErrors, Section};
use super::{SignedIn, html as page, see_other};
use crate::admin::webhooks::{self as admin, WebhookAdminError};
use crate::state::AppState;

/// Deliveries shown on an endpoint's page.
const RECENT_DELIVERIES: i64 = 20;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks", web::get().to(list))
        .route("/webhooks", web::post().to(create))
        .route("/webhooks/{endpoint}", web::get().to(detail))
        .route("/webhooks/{endpoint}/test", web::post().to(send_test))
        .route("/webhooks/{endpoint}/delete", web::post().to(delete));
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EndpointForm {
    csrf: String,
    url: String,
    description: String,
}

fn failed(err: WebhookAdminError) -> PageError {
    match err {
        WebhookAdminError::NotFound => PageError::NotFound,
        other => {
            tracing::error!(error = %other, "a webhook operation failed");
            PageError::Internal
        }
    }
}

async fn list(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<String>,
    query: web::Query<NoticeQuery>,
) -> PageResult {
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &path).await?;
    let endpoints = with_last_delivery(&mut conn, &member).await?;
    let notice =
        (query.notice.as_deref() == Some("deleted")).then_some("The endpoint was deleted.");
    Ok(page(
        StatusCode::OK,
        list_page(
            &member,
            &endpoints,
            &EndpointForm::default(),
            &FieldErrors::default(),
            notice,
            state.allow_http_webhooks,
        ),
    ))
}

async fn with_last_delivery(
    conn: &mut diesel_async::AsyncPgConnection,
    member: &Member,
) -> Result<Vec<(WebhookEndpoint, Option<WebhookDelivery>)>, PageError> {
    let mut out = Vec::new();
    for endpoint in WebhookEndpoint::list(conn, member.id()).await? {
        let last = WebhookDelivery::recent(conn, endpoint.id, 1).await?;
        out.push((endpoint, last.into_iter().next()));
    }
    Ok(out)
}

fn delivery_state(d: &WebhookDelivery) -> Markup {
    let code = d.last_status_code.map(|c| format!(" · HTTP {c}"));
    html! {
        @match d.state {
            DeliveryState::Succeeded => span.ok { "delivered" (code.unwrap_or_default()) },
            DeliveryState::Pending if d.attempts == 0 => span.muted { "queued" },
            DeliveryState::Pending => span.bad { "retrying" (code.unwrap_or_default()) },
            _ => span.bad { "failed" (code.unwrap_or_default()) },
        }
    }
}

fn list_page(
    member: &Member,
    endpoints: &[(WebhookEndpoint, Option<WebhookDelivery>)],
    form: &EndpointForm,
    errors: &FieldErrors,
    notice: Option<&str>,
    allow_http: bool,
) -> Markup {
    let base = member.base();
    let url_hint = if allow_http {
        "https:// (http:// is accepted in this development setup)."
    } else {
        "Must be https://."
    };
    pages::project_page(
        member,
        Section::Webhooks,
        "Webhooks",
        html! {
            @if let Some(text) = notice { (pages::notice("ok", text)) }
            div.card {
                h1 { "Webhooks" }
                p.muted { "When a zip ends, each endpoint receives a signed " code { "zip.completed" } " event." }
                form method="post" action={ (base) "/webhooks" } {
                    (pages::csrf(member.csrf()))
                    (pages::field("Endpoint URL", "url", "url", &form.url, errors, Some(url_hint)))
                    (pages::field("Description", "description", "text", &form.description, errors, Some("Optional.")))
                    button type="submit" { "Add endpoint" }
                }
            }
            div.card {
                @if endpoints.is_empty() {
                    p.muted { "No endpoint yet." }
                } @else {
                    table.list {
                        thead { tr { th { "URL" } th { "Description" } th { "Created" } th { "Last delivery" } } }
                        tbody {
                            @for (e, last) in endpoints {
                                tr {
                                    td data-label="URL" { a href={ (base) "/webhooks/" (e.id) } { (e.url) } }
                                    td data-label="Description" { (e.description) }
                                    td data-label="Created" { (pages::day(e.created_at)) }
                                    td data-label="Last delivery" {
                                        @if let Some(d) = last { (delivery_state(d)) } @else { span.muted { "none" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

async fn create(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<String>,
    form: web::Form<EndpointForm>,
) -> PageResult {
    let mut conn = conn(&state).await?;
    let member = Member::posting(&mut conn, signed_in, &path, &form.csrf).await?;
    match admin::create(
        &mut conn,
        &state.keyring,
        member.id(),
        &form.url,
        &form.description,
        state.allow_http_webhooks,
        &state.egress,
    )
    .await
    {
        Ok(created) => {
            let base = member.base();
            Ok(page(
                StatusCode::CREATED,
                pages::project_page(
                    &member,
                    Section::Webhooks,
                    "Endpoint added",
                    html! {
                        div.card {
                            h1 { "Endpoint added" }
                            p { code { (created.endpoint.url) } }
                            (pages::shown_once("Signing secret", created.secret.expose_secret()))
                            p.muted { "Check the " code { "Zipkit-Signature" } " header of every event with it (see the API reference)." }
                            p { a href={ (base) "/webhooks/" (created.endpoint.id) } { "Done — go to the endpoint" } }
                        }
                    },
                ),
            ))
        }
        Err(WebhookAdminError::Invalid { field, message }) => {
            let mut errors = FieldErrors::default();
            errors.add(field, pages::capitalized(&message));
            let endpoints = with_last_delivery(&mut conn, &member).await?;
            Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                list_page(
                    &member,
                    &endpoints,
                    &form,
                    &errors,
                    None,
                    state.allow_http_webhooks,
                ),
            ))
        }
        Err(err) => Err(failed(err)),
    }
}

async fn detail(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
    query: web::Query<NoticeQuery>,
) -> PageResult {
    let (project, endpoint) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &project).await?;
    let id: WebhookEndpointId = parse_id(&endpoint)?;
    let endpoint = admin::find(&mut conn, member.id(), id)
        .await
        .map_err(failed)?;
    let deliveries = WebhookDelivery::recent(&mut conn, endpoint.id, RECENT_DELIVERIES).await?;
    // Reload while a delivery has not been attempted yet, so its outcome appears by itself.
    let waiting = deliveries
        .iter()
        .any(|d| d.state == DeliveryState::Pending && d.attempts == 0);
    let notice = (query.notice.as_deref() == Some("test-queued"))
        .then_some("A test event was queued; a worker delivers it within seconds.");
    let base = member.base();
    Ok(page(
        StatusCode::OK,
        pages::project_page_with(
            &member,
            Section::Webhooks,
            "Webhook endpoint",
            waiting,
            html! {
                @if let Some(text) = notice { (pages::notice("ok", text)) }
                div.card {
                    h1 { "Webhook endpoint" }
                    dl.facts {
                        dt { "URL" } dd { code { (endpoint.url) } }
                        @if !endpoint.description.is_empty() { dt { "Description" } dd { (endpoint.description) } }
                        dt { "Created" } dd { (pages::moment(endpoint.created_at)) }
                        dt { "State" } dd { @if endpoint.enabled { "enabled" } @else { "disabled" } }
                        dt { "Signing secret" } dd.muted { "shown once, when the endpoint was added" }
                    }
                    div.form-actions {
                        form method="post" action={ (base) "/webhooks/" (endpoint.id) "/test" } {
                            (pages::csrf(member.csrf()))
                            button type="submit" { "Send test event" }
                        }
                        form method="post" action={ (base) "/webhooks/" (endpoint.id) "/delete" } {
                            (pages::csrf(member.csrf()))
                            button.danger type="submit" { "Delete endpoint" }
                        }
                    }
                }
                div.card {
                    h2 { "Recent deliveries" }
                    @if deliveries.is_empty() {
                        p.muted { "Nothing sent yet." }
                    } @else {
                        table.list.deliveries {
                            thead { tr { th { "Event" } th { "Type" } th { "Created" } th { "Attempts" } th { "Status" } } }
                            tbody {
                                @for d in &deliveries {
                                    tr {
                                        td data-label="Event" { code { (d.event_id) } }
                                        td data-label="Type" { (d.event_type) }
                                        td data-label="Created" { (pages::moment(d.created_at)) }
                                        td data-label="Attempts" { (d.attempts) }
                                        td data-label="Status" { (delivery_state(d)) }
                                    }
                                }
                            }
                        }
                    }
                }
            },
        ),
    ))
}

async fn send_test(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> PageResult {
    let (project, endpoint) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::posting(&mut conn, signed_in, &project, &form.csrf).await?;
    let id: WebhookEndpointId = parse_id(&endpoint)?;
    let endpoint = admin::find(&mut conn, member.id(), id)
        .await
        .map_err(failed)?;
    admin::queue_test(&mut conn, &endpoint)
        .await
        .map_err(failed)?;
    Ok(see_other(&format!(
        "{}/webhooks/{}?notice=test-queued",
        member.base(),
        endpoint.id
    )))
}

async fn delete(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> PageResult {
    let (project, endpoint) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::posting(&mut conn, signed_in, &project, &form.csrf).await?;
    let id: WebhookEndpointId = parse_id(&endpoint)?;
    admin::remove(&mut conn, member.id(), id)
        .await
        .map_err(failed)?;
    Ok(see_other(&format!(
        "{}/webhooks?notice=deleted",
        member.base()
    )))
}
