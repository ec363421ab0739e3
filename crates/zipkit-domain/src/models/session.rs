//! Dashboard sessions and the failed-login throttle. The cookie carries a random token; only its
//! SHA-256 is stored, with the session's CSRF token and its expiry.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use secrecy::SecretString;

use crate::ids::{LoginFailureId, SessionId, UserId};
use crate::schema::{dashboard_sessions, login_failures};
use crate::tokens::{RandomError, TokenHash, random_secret};

#[derive(Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = dashboard_sessions, check_for_backend(diesel::pg::Pg))]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl Session {
    /// Signs `user` in for `lifetime`; returns the cookie's token (shown to the browser only).
    pub async fn start(
        conn: &mut AsyncPgConnection,
        user: UserId,
        lifetime: Duration,
    ) -> Result<(SecretString, Self), SessionError> {
        let token = random_secret()?;
        let session = diesel::insert_into(dashboard_sessions::table)
            .values((
                dashboard_sessions::id.eq(SessionId::new()),
                dashboard_sessions::token_hash.eq(TokenHash::of(&token).as_bytes()),
                dashboard_sessions::user_id.eq(user),
                dashboard_sessions::csrf_token.eq(random_secret()?),
                dashboard_sessions::expires_at.eq(Utc::now() + lifetime),
            ))
            .returning(Session::as_returning())
            .get_result(conn)
            .await?;
        Ok((SecretString::from(token), session))
    }

    /// The live session a cookie token names, if any.
    pub async fn find(conn: &mut AsyncPgConnection, token: &str) -> QueryResult<Option<Self>> {
        dashboard_sessions::table
            .filter(dashboard_sessions::token_hash.eq(TokenHash::of(token).as_bytes()))
            .filter(dashboard_sessions::expires_at.gt(Utc::now()))
            .select(Session::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// Signs out: the session stops working at once, whoever holds the cookie.
    pub async fn end(conn: &mut AsyncPgConnection, id: SessionId) -> QueryResult<()> {
        diesel::delete(dashboard_sessions::table.find(id))
            .execute(conn)
            .await
            .map(drop)
    }
}

/// Failed logins per email address, to slow down guessing.
#[derive(Debug)]
pub struct LoginThrottle;

impl LoginThrottle {
    /// Failed attempts for `email` since `since`.
    pub async fn failures_since(
        conn: &mut AsyncPgConnection,
        email: &str,
        since: DateTime<Utc>,
    ) -> QueryResult<i64> {
        login_failures::table
            .filter(login_failures::email.eq(email.to_lowercase()))
            .filter(login_failures::attempted_at.gt(since))
            .count()
            .get_result(conn)
            .await
    }

    pub async fn record_failure(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<()> {
        diesel::insert_into(login_failures::table)
            .values((
                login_failures::id.eq(LoginFailureId::new()),
                login_failures::email.eq(email.to_lowercase()),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// A successful login forgets the failures.
    pub async fn clear(conn: &mut AsyncPgConnection, email: &str) -> QueryResult<()> {
        diesel::delete(login_failures::table.filter(login_failures::email.eq(email.to_lowercase())))
            .execute(conn)
            .await
            .map(drop)
    }
}
