//! Access tokens: create (the token is shown once), list, revoke — through `admin::tokens`.

use actix_web::http::StatusCode;
use actix_web::web;
use maud::{Markup, html};
use secrecy::ExposeSecret;
use serde::Deserialize;
use zipkit_domain::AccessTokenId;
use zipkit_domain::models::AccessToken;

use super::context::{CsrfForm, Member, NoticeQuery, PageError, PageResult, conn, parse_id};
use super::pages::{self, FieldErrors, Section};
use super::{SignedIn, html as page, see_other};
use crate::admin::tokens::{self as admin, TokenAdminError};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::get().to(list))
        .route("/tokens", web::post().to(create))
        .route("/tokens/{token}/revoke", web::post().to(revoke));
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenForm {
    csrf: String,
    name: String,
}

async fn list(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<String>,
    query: web::Query<NoticeQuery>,
) -> PageResult {
    let mut conn = conn(&state).await?;
    let member = Member::of(&mut conn, signed_in, &path).await?;
    let tokens = AccessToken::list(&mut conn, member.id()).await?;
    let notice = match query.notice.as_deref() {
        Some("revoked") => Some("The token was revoked; requests using it are now refused."),
        _ => None,
    };
    Ok(page(
        StatusCode::OK,
        list_page(&member, &tokens, "", &FieldErrors::default(), notice),
    ))
}

fn list_page(
    member: &Member,
    tokens: &[AccessToken],
    name: &str,
    errors: &FieldErrors,
    notice: Option<&str>,
) -> Markup {
    let base = member.base();
    pages::project_page(
        member,
        Section::Tokens,
        "Access tokens",
        html! {
            @if let Some(text) = notice { (pages::notice("ok", text)) }
            div.card {
                h1 { "Access tokens" }
                p.muted { "Programs use a token as " code { "Authorization: Bearer …" } " to create zips in this project." }
                form.inline method="post" action={ (base) "/tokens" } {
                    (pages::csrf(member.csrf()))
                    (pages::field("New token name", "name", "text", name, errors, Some("What uses it, e.g. \"billing export job\".")))
                    button type="submit" { "Create token" }
                }
            }
            div.card {
                @if tokens.is_empty() {
                    p.muted { "No token yet." }
                } @else {
                    table.list {
                        thead { tr { th { "Name" } th { "Prefix" } th { "Created" } th { "Last used" } th { "State" } th { span.sr { "Actions" } } } }
                        tbody {
                            @for t in tokens {
                                tr {
                                    td data-label="Name" { strong { (t.name) } }
                                    td data-label="Prefix" { code { (t.prefix) "…" } }
                                    td data-label="Created" { (pages::day(t.created_at)) }
                                    td data-label="Last used" { (t.last_used_at.map_or_else(|| "never".to_owned(), pages::moment)) }
                                    td data-label="State" {
                                        @if let Some(at) = t.revoked_at { span.bad { "revoked " (pages::day(at)) } } @else { span.ok { "live" } }
                                    }
                                    td.actions {
                                        @if t.revoked_at.is_none() {
                                            form method="post" action={ (base) "/tokens/" (t.id) "/revoke" } {
                                                (pages::csrf(member.csrf()))
                                                button.link.danger type="submit" aria-label={ "Revoke " (t.name) } { "Revoke" }
                                            }
                                        }
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
    form: web::Form<TokenForm>,
) -> PageResult {
    let mut conn = conn(&state).await?;
    let member = Member::posting(&mut conn, signed_in, &path, &form.csrf).await?;
    match admin::create(&mut conn, member.id(), &form.name).await {
        Ok(created) => {
            let base = member.base();
            Ok(page(
                StatusCode::CREATED,
                pages::project_page(
                    &member,
                    Section::Tokens,
                    "Token created",
                    html! {
                        div.card {
                            h1 { "Token “" (created.stored.name) "” created" }
                            (pages::shown_once("Your new token", created.secret.expose_secret()))
                            p { a href={ (base) "/tokens" } { "Done — back to the tokens" } }
                        }
                    },
                ),
            ))
        }
        Err(TokenAdminError::InvalidName) => {
            let mut errors = FieldErrors::default();
            errors.add("name", "A name of 1 to 200 characters is required");
            let tokens = AccessToken::list(&mut conn, member.id()).await?;
            Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                list_page(&member, &tokens, &form.name, &errors, None),
            ))
        }
        Err(err) => Err(internal(err)),
    }
}

fn internal(err: TokenAdminError) -> PageError {
    match err {
        TokenAdminError::NotFound => PageError::NotFound,
        other => {
            tracing::error!(error = %other, "a token operation failed");
            PageError::Internal
        }
    }
}

async fn revoke(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> PageResult {
    let (project, token) = path.into_inner();
    let mut conn = conn(&state).await?;
    let member = Member::posting(&mut conn, signed_in, &project, &form.csrf).await?;
    let token: AccessTokenId = parse_id(&token)?;
    admin::revoke(&mut conn, member.id(), token)
        .await
        .map_err(internal)?;
    Ok(see_other(&format!(
        "{}/tokens?notice=revoked",
        member.base()
    )))
}
