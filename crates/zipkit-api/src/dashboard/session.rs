//! `SignedIn`: the dashboard user behind the session cookie. A request without a live session
//! is sent to the sign-in page.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use zipkit_domain::models::{Session, User};
use zipkit_domain::tokens::constant_time_eq;

use crate::state::AppState;

pub const SESSION_COOKIE: &str = "zipkit_session";
pub const LOGIN_CSRF_COOKIE: &str = "zipkit_login_csrf";

#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    pub session: Session,
}

impl SignedIn {
    /// Whether a posted CSRF token is this session's.
    pub fn csrf_ok(&self, posted: &str) -> bool {
        constant_time_eq(&self.session.csrf_token, posted)
    }
}

/// No live session: go and sign in.
#[derive(Debug, thiserror::Error)]
#[error("sign in first")]
pub struct NotSignedIn;

impl ResponseError for NotSignedIn {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::SEE_OTHER
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/dashboard/login"))
            .finish()
    }
}

impl FromRequest for SignedIn {
    type Error = NotSignedIn;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let token = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let (Some(token), Some(state)) = (token, state) else {
                return Err(NotSignedIn);
            };
            let mut conn = state.pool.get().await.map_err(|_| NotSignedIn)?;
            let session = Session::find(&mut conn, &token)
                .await
                .ok()
                .flatten()
                .ok_or(NotSignedIn)?;
            let user = User::find(&mut conn, session.user_id)
                .await
                .ok()
                .flatten()
                .ok_or(NotSignedIn)?;
            Ok(Self { user, session })
        })
    }
}
