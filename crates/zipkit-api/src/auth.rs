//! `Authorization: Bearer <token>` on every `/v1` route: the token names exactly one project.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use chrono::Utc;
use secrecy::SecretString;
use zipkit_domain::ProjectId;
use zipkit_domain::models::AccessToken;
use zipkit_domain::models::access_token::LAST_USED_RESOLUTION;
use zipkit_domain::tokens::hash_presented;

use crate::error::ApiError;
use crate::state::AppState;

/// The caller: a live access token and its project.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub project_id: ProjectId,
}

fn bearer(req: &HttpRequest) -> Option<SecretString> {
    let mut headers = req
        .headers()
        .get_all(actix_web::http::header::AUTHORIZATION);
    let header = headers.next()?.to_str().ok()?;
    // Two credentials give two meanings to one request (a proxy may read the other): refused.
    if headers.next().is_some() {
        return None;
    }
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| SecretString::from(token.trim().to_owned()))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let token = token.ok_or_else(|| ApiError::Unauthenticated {
                code: "authentication_required",
                message: "send your access token as one `Authorization: Bearer <token>` header"
                    .into(),
            })?;
            let invalid = || ApiError::Unauthenticated {
                code: "invalid_api_key",
                message: "the access token is not valid (unknown or revoked)".into(),
            };
            let hash = hash_presented(&token).ok_or_else(invalid)?;
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            let mut conn = state
                .pool
                .get()
                .await
                .map_err(zipkit_domain::db::DbError::from)?;
            let found = AccessToken::authenticate(&mut conn, &hash)
                .await?
                .ok_or_else(invalid)?;
            state
                .rate_limits
                .check_token(&mut conn, &found.id.to_string())
                .await?;
            let now = Utc::now();
            // Skip the write unless the recorded time is stale: auth stays a read on most requests.
            if found
                .last_used_at
                .is_none_or(|t| t < now - LAST_USED_RESOLUTION)
            {
                AccessToken::touch(&mut conn, found.id, now).await?;
            }
            Ok(Caller {
                project_id: found.project_id,
            })
        })
    }
}
