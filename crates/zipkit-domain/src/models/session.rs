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

/// Failed sign-ins, by account (the email as typed, lower-cased, so an unknown address is
/// throttled like a known one) and by the client address they came from.
#[derive(Debug)]
pub struct LoginThrottle;

/// Failures counted since a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentFailures {
    /// For this account from this client address.
    pub account_from_address: i64,
    /// From this client address, for any account.
    pub from_address: i64,
}

impl LoginThrottle {
    pub async fn failures_since(
        conn: &mut AsyncPgConnection,
        email: &str,
        client_address: &str,
        since: DateTime<Utc>,
    ) -> QueryResult<RecentFailures> {
        let recent = login_failures::table
            .filter(login_failures::client_address.eq(client_address))
            .filter(login_failures::attempted_at.gt(since));
        let from_address = recent.count().get_result(conn).await?;
        let account_from_address = recent
            .filter(login_failures::email.eq(email.to_lowercase()))
            .count()
            .get_result(conn)
            .await?;
        Ok(RecentFailures {
            account_from_address,
            from_address,
        })
    }

    pub async fn record_failure(
        conn: &mut AsyncPgConnection,
        email: &str,
        client_address: &str,
    ) -> QueryResult<()> {
        diesel::insert_into(login_failures::table)
            .values((
                login_failures::id.eq(LoginFailureId::new()),
                login_failures::email.eq(email.to_lowercase()),
                login_failures::client_address.eq(client_address),
            ))
            .execute(conn)
            .await
            .map(drop)
    }

    /// A successful sign-in forgets that address's failures for the account (not a stranger's
    /// failures from elsewhere, nor the address's failures for other accounts).
    pub async fn clear(
        conn: &mut AsyncPgConnection,
        email: &str,
        client_address: &str,
    ) -> QueryResult<()> {
        diesel::delete(
            login_failures::table
                .filter(login_failures::email.eq(email.to_lowercase()))
                .filter(login_failures::client_address.eq(client_address)),
        )
        .execute(conn)
        .await
        .map(drop)
    }

    /// Forgets failures older than `before` (they no longer count for anything).
    pub async fn forget_before(
        conn: &mut AsyncPgConnection,
        before: DateTime<Utc>,
    ) -> QueryResult<usize> {
        diesel::delete(login_failures::table.filter(login_failures::attempted_at.lt(before)))
            .execute(conn)
            .await
    }
}
