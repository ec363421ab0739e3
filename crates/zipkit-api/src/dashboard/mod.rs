//! The dashboard, server-rendered under `/dashboard`: sign-in with server-side sessions, CSRF
//! tokens on every form, a throttle on failed sign-ins, the project picker, and per project its
//! zips, buckets, access tokens and webhooks. Every project page checks membership
//! (`context::Member`). Works without JavaScript; the stylesheet and the one small script are
//! compiled into the binary.

mod buckets;
mod context;
mod pages;
mod session;
mod tokens;
mod webhooks;
mod zips;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::Markup;
use secrecy::ExposeSecret;
use serde::Deserialize;
use zipkit_domain::models::{LoginThrottle, Session, User};
use zipkit_domain::tokens::{constant_time_eq, random_secret};

pub use session::SignedIn;
use session::{LOGIN_CSRF_COOKIE, SESSION_COOKIE};

use crate::state::AppState;

/// How long a sign-in lasts.
const SESSION_HOURS: i64 = 12;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/dashboard")
            .wrap(crate::middleware::dashboard_headers())
            .route("", web::get().to(projects))
            .route("/", web::get().to(projects))
            .route("/style.css", web::get().to(stylesheet))
            .route("/login", web::get().to(login_form))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/copy.js", web::get().to(copy_script))
            .service(
                web::scope("/projects/{project}")
                    .configure(zips::configure)
                    .configure(buckets::configure)
                    .configure(tokens::configure)
                    .configure(webhooks::configure),
            )
            .default_service(web::to(not_found)),
    );
}

async fn not_found() -> HttpResponse {
    problem(
        actix_web::http::StatusCode::NOT_FOUND,
        &context::PageError::NotFound.to_string(),
    )
}

async fn copy_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(include_str!("copy.js"))
}

fn html(status: actix_web::http::StatusCode, page: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.into_string())
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// A page for a failure that is not about a field: an expired form, a server error.
fn problem(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    html(
        status,
        pages::layout(
            "Something went wrong",
            None,
            maud::html! { div.card.narrow { h1 { "Something went wrong" } p.error { (message) } p { a href="/dashboard" { "Back to the dashboard" } } } },
        ),
    )
}

fn cookie<'a>(state: &AppState, name: &'a str, value: String, same_site: SameSite) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/dashboard")
        .http_only(true)
        .secure(state.secure_cookies)
        .same_site(same_site)
        .finish()
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(include_str!("style.css"))
}

/// The sign-in form. Before there is a session, CSRF is a double-submit: a random value in a
/// strict same-site cookie that the form must echo.
async fn login_form(state: web::Data<AppState>, signed_in: Option<SignedIn>) -> HttpResponse {
    if signed_in.is_some() {
        return see_other("/dashboard");
    }
    login_page(&state, "", None, actix_web::http::StatusCode::OK)
}

fn login_page(
    state: &AppState,
    email: &str,
    error: Option<&str>,
    status: actix_web::http::StatusCode,
) -> HttpResponse {
    let Ok(csrf) = random_secret() else {
        return problem(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "Please try again.",
        );
    };
    let mut response = html(status, pages::login(&csrf, email, error));
    let _ = response.add_cookie(&cookie(state, LOGIN_CSRF_COOKIE, csrf, SameSite::Strict));
    response
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn login(
    state: web::Data<AppState>,
    request: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let form = form.into_inner();
    let expected = request
        .cookie(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(&expected, &form.csrf) {
        return problem(
            StatusCode::FORBIDDEN,
            "This form expired or did not come from this site. Reload the sign-in page and try again.",
        );
    }
    let email = form.email.trim().to_lowercase();
    let Ok(mut conn) = state.pool.get().await else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is unavailable; try again shortly.",
        );
    };
    // Failures count against the client address, alone and with this account: a stranger's
    // wrong passwords lock out the stranger's address, never the owner signing in from theirs.
    let limits = &state.rate_limits.settings;
    let address = state
        .rate_limits
        .client_address(&request)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let window = chrono::Duration::minutes(i64::from(limits.sign_in_window_minutes));
    let since = chrono::Utc::now() - window;
    match LoginThrottle::failures_since(&mut conn, &email, &address, since).await {
        Ok(recent)
            if recent.account_from_address
                >= i64::from(limits.sign_in_failures_per_account_and_address)
                || recent.from_address >= i64::from(limits.sign_in_failures_per_address) =>
        {
            let mut page = login_page(
                &state,
                &email,
                Some(&format!(
                    "Too many failed sign-ins from your network. Wait {} minutes and try again.",
                    window.num_minutes()
                )),
                StatusCode::TOO_MANY_REQUESTS,
            );
            if let Ok(value) = header::HeaderValue::from_str(&window.num_seconds().to_string()) {
                page.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return page;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading the login throttle failed");
            return problem(StatusCode::INTERNAL_SERVER_ERROR, "Please try again.");
        }
    }
    let user = User::find_by_email(&mut conn, &email).await.ok().flatten();
    // Argon2 is deliberately slow and memory-hungry: on the password pool's few threads, and
    // refused at once when they and their queue are full. An unknown address costs the same.
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let Ok(verifying) = state.passwords.verify(form.password, stored) else {
        drop(conn);
        let mut busy = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sign-ins are being checked right now. Try again in a moment.",
        );
        busy.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return busy;
    };
    let verified = verifying.await;
    let Some(user) = user.filter(|_| verified) else {
        if let Err(e) = LoginThrottle::record_failure(&mut conn, &email, &address).await {
            tracing::warn!(error = %e, "recording a failed sign-in failed");
        }
        return login_page(
            &state,
            &email,
            Some("Wrong email or password."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let _ = LoginThrottle::clear(&mut conn, &email, &address).await;
    let (token, _) =
        match Session::start(&mut conn, user.id, chrono::Duration::hours(SESSION_HOURS)).await {
            Ok(started) => started,
            Err(e) => {
                tracing::error!(error = %e, "starting a session failed");
                return problem(StatusCode::INTERNAL_SERVER_ERROR, "Please try again.");
            }
        };
    let mut response = see_other("/dashboard");
    let mut session = cookie(
        &state,
        SESSION_COOKIE,
        token.expose_secret().to_owned(),
        SameSite::Lax,
    );
    session.set_max_age(actix_web::cookie::time::Duration::hours(SESSION_HOURS));
    let _ = response.add_cookie(&session);
    let mut spent = cookie(&state, LOGIN_CSRF_COOKIE, String::new(), SameSite::Strict);
    spent.make_removal();
    let _ = response.add_cookie(&spent);
    response
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    state: web::Data<AppState>,
    signed_in: SignedIn,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    if !signed_in.csrf_ok(&form.csrf) {
        return problem(
            actix_web::http::StatusCode::FORBIDDEN,
            "This form expired or did not come from this site. Reload the page and try again.",
        );
    }
    if let Ok(mut conn) = state.pool.get().await {
        let _ = Session::end(&mut conn, signed_in.session.id).await;
    }
    let mut response = see_other("/dashboard/login");
    let mut gone = cookie(&state, SESSION_COOKIE, String::new(), SameSite::Lax);
    gone.make_removal();
    let _ = response.add_cookie(&gone);
    response
}

async fn projects(state: web::Data<AppState>, signed_in: SignedIn) -> HttpResponse {
    let Ok(mut conn) = state.pool.get().await else {
        return problem(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "The database is unavailable; try again shortly.",
        );
    };
    match signed_in.user.projects(&mut conn).await {
        Ok(list) => html(
            actix_web::http::StatusCode::OK,
            pages::projects(&signed_in.user.email, &signed_in.session.csrf_token, &list),
        ),
        Err(e) => {
            tracing::error!(error = %e, "listing projects failed");
            problem(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Please try again.",
            )
        }
    }
}
