//! A fresh PostgreSQL database per test: `CREATE DATABASE … TEMPLATE` from a template migrated
//! once per migration set (keyed by a hash of `migrations/`), so each copy costs milliseconds.

use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::sync::OnceCell;

use crate::leftovers::{LEFTOVER_AGE_SECS, block_on_cleanup, is_leftover, unique_name};
use crate::services::{postgres_admin_url, with_database};

const PREFIX: &str = "zipkit_test";
const TEMPLATE_PREFIX: &str = "zipkit_template";
/// Serialises template creation between concurrently starting test processes.
const TEMPLATE_LOCK: i64 = 0x7a69_706b_6974;

#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    datname: String,
    /// A template's comment: when a run last used it (Unix seconds).
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    note: Option<String>,
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

impl TestDatabase {
    /// A new database with every migration applied.
    pub async fn migrated<M>(migrations: M) -> Self
    where
        M: MigrationSource<diesel::pg::Pg> + Send + 'static,
    {
        let template = TEMPLATE
            .get_or_init(|| async move { ensure_template(migrations).await })
            .await
            .clone();
        Self::create(Some(&template)).await
    }

    /// A new database with nothing in it (for migration tests).
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Self {
        let name = unique_name(PREFIX, '_');
        let mut admin = admin().await;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        diesel::sql_query(sql)
            .execute(&mut admin)
            .await
            .expect("create test database");
        let url = with_database(&postgres_admin_url(), &name);
        Self { name, url }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn connect(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_cleanup(&name.clone(), async move {
            let mut admin = AsyncPgConnection::establish(&postgres_admin_url())
                .await
                .map_err(|e| e.to_string())?;
            drop_database(&mut admin, &name).await
        });
    }
}

async fn admin() -> AsyncPgConnection {
    AsyncPgConnection::establish(&postgres_admin_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is not reachable ({e}); run scripts/services.sh up",
                postgres_admin_url()
            )
        })
}

async fn drop_database(admin: &mut AsyncPgConnection, name: &str) -> Result<(), String> {
    diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(admin)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn migrations_fingerprint() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    let mut files = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path)
            .expect("read migrations/")
            .flatten()
        {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
            }
        }
    }
    files.sort();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for file in files {
        ctx.update(
            file.strip_prefix(dir)
                .unwrap_or(&file)
                .to_string_lossy()
                .as_bytes(),
        );
        ctx.update(&std::fs::read(&file).expect("read a migration file"));
    }
    ctx.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates (once, under an advisory lock) the migrated template for the current migrations,
/// and sweeps test databases left behind by crashed runs. Each run notes on its template when it
/// last used it: another checkout's template (other migrations, the same PostgreSQL) is dropped
/// only once no run has used it for `LEFTOVER_AGE_SECS`, never under a run that still creates
/// databases from it.
async fn ensure_template<M>(migrations: M) -> String
where
    M: MigrationSource<diesel::pg::Pg> + Send + 'static,
{
    let template = format!("{TEMPLATE_PREFIX}_{}", migrations_fingerprint());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut admin = admin().await;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(TEMPLATE_LOCK)
        .execute(&mut admin)
        .await
        .expect("take the template lock");

    let existing: Vec<Name> = diesel::sql_query(
        "SELECT datname, shobj_description(oid, 'pg_database') AS note FROM pg_database \
             WHERE datname LIKE 'zipkit\\_%'",
    )
    .load(&mut admin)
    .await
    .expect("list databases");
    for db in &existing {
        let unused_since = db.note.as_deref().and_then(|n| n.parse::<u64>().ok());
        let stale_template = db.datname.starts_with(TEMPLATE_PREFIX)
            && db.datname != template
            && unused_since.is_none_or(|t| now.saturating_sub(t) > LEFTOVER_AGE_SECS);
        if is_leftover(&db.datname, PREFIX, '_') || stale_template {
            let _ = drop_database(&mut admin, &db.datname).await;
        }
    }

    if !existing.iter().any(|d| d.datname == template) {
        let building = format!("{template}_building");
        let _ = drop_database(&mut admin, &building).await;
        diesel::sql_query(format!("CREATE DATABASE \"{building}\""))
            .execute(&mut admin)
            .await
            .expect("create template database");
        let url = with_database(&postgres_admin_url(), &building);
        tokio::task::spawn_blocking(move || {
            use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
            use diesel_migrations::MigrationHarness as _;
            let mut conn =
                <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                    .expect("connect to template database");
            conn.run_pending_migrations(migrations)
                .expect("migrate the template database");
        })
        .await
        .expect("migration task");
        // Renamed only once complete, so a crash never leaves a half-migrated template in use.
        diesel::sql_query(format!(
            "ALTER DATABASE \"{building}\" RENAME TO \"{template}\""
        ))
        .execute(&mut admin)
        .await
        .expect("publish template database");
    }

    diesel::sql_query(format!("COMMENT ON DATABASE \"{template}\" IS '{now}'"))
        .execute(&mut admin)
        .await
        .expect("note the template's use");
    diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(TEMPLATE_LOCK)
        .execute(&mut admin)
        .await
        .expect("release the template lock");
    template
}
