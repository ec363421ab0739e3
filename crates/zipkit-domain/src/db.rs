//! The PostgreSQL connection pool and the embedded migrations.

use std::time::Duration;

use diesel::Connection as _;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub type PgPool = bb8::Pool<AsyncPgConnection>;
pub type PooledConn<'a> = bb8::PooledConnection<'a, AsyncPgConnection>;

/// Every migration in `migrations/`, compiled into the binaries; applied only by `migrate`.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// `[database]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`
    pub url: SecretString,
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("could not reach PostgreSQL: {0}")]
    Pool(String),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("migrations failed: {0}")]
    Migration(String),
}

impl From<bb8::RunError> for DbError {
    fn from(err: bb8::RunError) -> Self {
        Self::Pool(err.to_string())
    }
}

/// A pool that opens connections lazily: the process starts even while PostgreSQL is down,
/// and readiness reports it.
pub fn pool(settings: &DatabaseSettings) -> PgPool {
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new(settings.url.expose_secret());
    bb8::Pool::builder()
        .max_size(settings.max_connections)
        .connection_timeout(Duration::from_secs(settings.connect_timeout_secs))
        .build_unchecked(manager)
}

/// Applies pending migrations; returns the versions applied.
pub async fn run_migrations(url: &SecretString) -> Result<Vec<String>, DbError> {
    let url = url.expose_secret().to_owned();
    let applied = tokio::task::spawn_blocking(move || -> Result<Vec<String>, DbError> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| DbError::Pool(e.to_string()))?;
        let versions = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| DbError::Migration(e.to_string()))?;
        Ok(versions.iter().map(ToString::to_string).collect())
    })
    .await
    .map_err(|e| DbError::Migration(e.to_string()))??;
    Ok(applied)
}

/// Reverts every applied migration, newest first (tests prove each `down.sql` works).
pub async fn revert_all_migrations(url: &SecretString) -> Result<Vec<String>, DbError> {
    let url = url.expose_secret().to_owned();
    tokio::task::spawn_blocking(move || -> Result<Vec<String>, DbError> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| DbError::Pool(e.to_string()))?;
        let versions = conn
            .revert_all_migrations(MIGRATIONS)
            .map_err(|e| DbError::Migration(e.to_string()))?;
        Ok(versions.iter().map(ToString::to_string).collect())
    })
    .await
    .map_err(|e| DbError::Migration(e.to_string()))?
}

/// `SELECT 1` through the pool, for readiness checks.
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    use diesel_async::RunQueryDsl;
    let mut conn = pool.get().await?;
    diesel::sql_query("SELECT 1").execute(&mut conn).await?;
    Ok(())
}
