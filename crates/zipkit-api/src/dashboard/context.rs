//! What every project page starts from: a database connection, the signed-in user's membership
//! of the project in the URL (checked on every request), and the CSRF check of every form.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use diesel_async::AsyncPgConnection;
use zipkit_domain::ProjectId;
use zipkit_domain::db::PooledConn;
use zipkit_domain::models::Project;

use super::SignedIn;
use crate::state::AppState;

/// Why a page could not be shown; rendered as a page, never as JSON.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Also for anything of another project: its existence is not revealed.
    #[error(
        "There is nothing here. It may have been deleted, or it belongs to a project you are not a member of."
    )]
    NotFound,
    #[error("This form expired or did not come from this site. Reload the page and try again.")]
    Forbidden,
    #[error("The database is unavailable; try again shortly.")]
    Unavailable,
    #[error("Something failed on our side; please try again.")]
    Internal,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        super::problem(self.status_code(), &self.to_string())
    }
}

impl From<diesel::result::Error> for PageError {
    fn from(err: diesel::result::Error) -> Self {
        tracing::error!(error = %err, "a dashboard query failed");
        Self::Internal
    }
}

impl From<zipkit_domain::models::ModelError> for PageError {
    fn from(err: zipkit_domain::models::ModelError) -> Self {
        tracing::error!(error = %err, "a dashboard operation failed");
        Self::Internal
    }
}

pub type PageResult = Result<HttpResponse, PageError>;

pub async fn conn(state: &AppState) -> Result<PooledConn<'_>, PageError> {
    state.pool.get().await.map_err(|_| PageError::Unavailable)
}

/// The signed-in user as a member of the project named in the URL.
#[derive(Debug)]
pub struct Member {
    pub signed_in: SignedIn,
    pub project: Project,
}

impl Member {
    /// Loads the project if the user is a member of it; `NotFound` otherwise (a malformed id,
    /// an unknown project and another project all look the same).
    pub async fn of(
        conn: &mut AsyncPgConnection,
        signed_in: SignedIn,
        project: &str,
    ) -> Result<Self, PageError> {
        let id: ProjectId = project.parse().map_err(|_| PageError::NotFound)?;
        if Project::role_of(conn, id, signed_in.user.id)
            .await?
            .is_none()
        {
            return Err(PageError::NotFound);
        }
        let project = Project::find(conn, id).await?.ok_or(PageError::NotFound)?;
        Ok(Self { signed_in, project })
    }

    /// As [`Member::of`], for a posted form: its CSRF token must be the session's.
    pub async fn posting(
        conn: &mut AsyncPgConnection,
        signed_in: SignedIn,
        project: &str,
        csrf: &str,
    ) -> Result<Self, PageError> {
        if !signed_in.csrf_ok(csrf) {
            return Err(PageError::Forbidden);
        }
        Self::of(conn, signed_in, project).await
    }

    pub fn csrf(&self) -> &str {
        &self.signed_in.session.csrf_token
    }

    pub fn email(&self) -> &str {
        &self.signed_in.user.email
    }

    /// The project's base path, e.g. `/dashboard/projects/<id>`.
    pub fn base(&self) -> String {
        format!("/dashboard/projects/{}", self.project.id)
    }

    pub fn id(&self) -> ProjectId {
        self.project.id
    }
}

/// Parses an id from the URL; anything malformed is simply not found.
pub fn parse_id<T: std::str::FromStr>(text: &str) -> Result<T, PageError> {
    text.parse().map_err(|_| PageError::NotFound)
}

/// A form that carries nothing but its CSRF token (delete, revoke, test buttons).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct CsrfForm {
    pub csrf: String,
}

/// `?notice=…`: what a redirect after a change tells the page it lands on.
#[derive(Debug, Default, serde::Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}
