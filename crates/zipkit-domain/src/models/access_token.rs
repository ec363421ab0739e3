//! API access tokens of a project; only their SHA-256 hash is stored.

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::ids::{AccessTokenId, ProjectId};
use crate::schema::access_tokens;
use crate::tokens::{GeneratedToken, TokenHash};

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = access_tokens, check_for_backend(diesel::pg::Pg))]
pub struct AccessToken {
    pub id: AccessTokenId,
    pub project_id: ProjectId,
    pub name: String,
    pub prefix: String,
    pub token_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = access_tokens)]
pub struct NewAccessToken<'a> {
    pub id: AccessTokenId,
    pub project_id: ProjectId,
    pub name: &'a str,
    pub prefix: &'a str,
    pub token_hash: &'a [u8],
}

/// `last_used_at` is written at most this often per token, so auth is not a write per request.
pub const LAST_USED_RESOLUTION: Duration = Duration::minutes(1);

impl AccessToken {
    /// Stores a freshly generated token (its hash and display prefix) for a project.
    pub async fn create(
        conn: &mut AsyncPgConnection,
        project_id: ProjectId,
        name: &str,
        token: &GeneratedToken,
    ) -> QueryResult<Self> {
        diesel::insert_into(access_tokens::table)
            .values(NewAccessToken {
                id: AccessTokenId::new(),
                project_id,
                name,
                prefix: &token.display_prefix,
                token_hash: token.hash.as_bytes(),
            })
            .returning(AccessToken::as_returning())
            .get_result(conn)
            .await
    }

    /// The live (not revoked) token with this hash.
    pub async fn authenticate(
        conn: &mut AsyncPgConnection,
        hash: &TokenHash,
    ) -> QueryResult<Option<Self>> {
        access_tokens::table
            .filter(access_tokens::token_hash.eq(hash.as_bytes()))
            .filter(access_tokens::revoked_at.is_null())
            .select(AccessToken::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// Records use, skipping the write when the stored time is recent enough.
    pub async fn touch(
        conn: &mut AsyncPgConnection,
        id: AccessTokenId,
        now: DateTime<Utc>,
    ) -> QueryResult<bool> {
        let updated = diesel::update(access_tokens::table.find(id))
            .filter(
                access_tokens::last_used_at
                    .is_null()
                    .or(access_tokens::last_used_at.lt(now - LAST_USED_RESOLUTION)),
            )
            .set(access_tokens::last_used_at.eq(now))
            .execute(conn)
            .await?;
        Ok(updated == 1)
    }

    pub async fn list(
        conn: &mut AsyncPgConnection,
        project_id: ProjectId,
    ) -> QueryResult<Vec<Self>> {
        access_tokens::table
            .filter(access_tokens::project_id.eq(project_id))
            .order(access_tokens::created_at.desc())
            .select(AccessToken::as_select())
            .load(conn)
            .await
    }

    /// Revokes a token of this project; returns whether one was live. Idempotent.
    pub async fn revoke(
        conn: &mut AsyncPgConnection,
        project_id: ProjectId,
        id: AccessTokenId,
    ) -> QueryResult<bool> {
        let updated = diesel::update(access_tokens::table.find(id))
            .filter(access_tokens::project_id.eq(project_id))
            .filter(access_tokens::revoked_at.is_null())
            .set(access_tokens::revoked_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        Ok(updated == 1)
    }
}
