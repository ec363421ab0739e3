//! Creating and revoking a project's API access tokens (CLI and dashboard).

use diesel_async::AsyncPgConnection;
use secrecy::SecretString;
use zipkit_domain::models::AccessToken;
use zipkit_domain::tokens::generate_token;
use zipkit_domain::{AccessTokenId, ProjectId};

#[derive(Debug, thiserror::Error)]
pub enum TokenAdminError {
    #[error("the name must be 1 to 200 characters")]
    InvalidName,
    #[error("no such token in this project")]
    NotFound,
    #[error("the system random generator failed")]
    Random,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// A token just created: the stored row and the token itself, which is shown once.
#[derive(Debug)]
pub struct CreatedToken {
    pub stored: AccessToken,
    pub secret: SecretString,
}

pub async fn create(
    conn: &mut AsyncPgConnection,
    project: ProjectId,
    name: &str,
) -> Result<CreatedToken, TokenAdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(TokenAdminError::InvalidName);
    }
    let token = generate_token().map_err(|_| TokenAdminError::Random)?;
    let stored = AccessToken::create(conn, project, name, &token).await?;
    Ok(CreatedToken {
        stored,
        secret: token.secret,
    })
}

/// Revokes a token of this project; `Ok(false)` when it was already revoked.
pub async fn revoke(
    conn: &mut AsyncPgConnection,
    project: ProjectId,
    id: AccessTokenId,
) -> Result<bool, TokenAdminError> {
    let exists = AccessToken::list(conn, project)
        .await?
        .into_iter()
        .any(|t| t.id == id);
    if !exists {
        return Err(TokenAdminError::NotFound);
    }
    Ok(AccessToken::revoke(conn, project, id).await?)
}
