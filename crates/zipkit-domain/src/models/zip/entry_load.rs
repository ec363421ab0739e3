//! A job's listed entries written in one transaction with PostgreSQL's `COPY` (binary format), a
//! batch at a time: a prefix or manifest of a million entries goes in as fast as the server
//! takes rows, without a bind parameter per value. diesel-async has no `COPY`, so the
//! transaction runs on a connection of its own, made by tokio-postgres (the driver under
//! diesel-async) from the same URL and in the same way as the pool's. Dropped before `commit`,
//! the connection closes and the server rolls everything back: the job is as it was.

use std::pin::pin;

use secrecy::ExposeSecret;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

use super::{EntrySource, NewZipEntry};
use crate::db::DatabaseSettings;
use crate::ids::ZipId;
use crate::values::{EntryName, SourceUrl};

/// Why the listing's transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("PostgreSQL did not answer within {0:?}")]
    Connect(std::time::Duration),
    /// A waiting entry's row does not hold what the API stored (a schema drift).
    #[error("entry {index}: {why}")]
    Row { index: i32, why: String },
}

/// The columns a listed entry is written with; the others take their defaults.
const COPY: &str = "COPY zip_entries (zip_id, entry_index, url, filename, given_filename, \
                    modified_at, declared_size) FROM STDIN (FORMAT binary)";
const COPY_TYPES: &[Type] = &[
    Type::UUID,
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::INT8,
];

/// The transaction that lists a job's sources into its entries.
#[derive(Debug)]
pub struct EntryLoad {
    client: Client,
    /// Drives the connection; ends with it.
    driver: tokio::task::JoinHandle<()>,
    id: ZipId,
}

impl Drop for EntryLoad {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl EntryLoad {
    /// Connects as the pool does (`settings`) and begins the transaction for job `id`.
    pub async fn begin(settings: &DatabaseSettings, id: ZipId) -> Result<Self, LoadError> {
        let connecting = tokio_postgres::connect(settings.url.expose_secret(), NoTls);
        let timeout = std::time::Duration::from_secs(settings.connect_timeout_secs);
        let (client, connection) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| LoadError::Connect(timeout))??;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the listing's database connection failed");
            }
        });
        let load = Self { client, driver, id };
        load.client.batch_execute("BEGIN").await?;
        Ok(load)
    }

    /// Takes the entries waiting at their items' indices out of the table, in request order,
    /// to be written again in archive order (`copy`).
    pub async fn take_waiting(&mut self) -> Result<Vec<EntrySource>, LoadError> {
        let rows = self
            .client
            .query(
                "DELETE FROM zip_entries WHERE zip_id = $1 RETURNING entry_index, url, \
                 filename, given_filename, modified_at, declared_size",
                &[self.id.as_uuid()],
            )
            .await?;
        let mut waiting = Vec::with_capacity(rows.len());
        for row in rows {
            let index: i32 = row.try_get(0)?;
            let bad = |why: String| LoadError::Row { index, why };
            let url: String = row.try_get(1)?;
            let filename: String = row.try_get(2)?;
            waiting.push(EntrySource {
                entry_index: index,
                url: SourceUrl::from_stored(url).map_err(|e| bad(e.to_string()))?,
                filename: EntryName::from_stored(filename),
                given_filename: row.try_get(3)?,
                modified_at: row.try_get(4)?,
                declared_size: row.try_get(5)?,
            });
        }
        waiting.sort_unstable_by_key(|e| e.entry_index);
        Ok(waiting)
    }

    /// Writes entries numbered from `first_index` on.
    pub async fn copy(
        &mut self,
        first_index: i32,
        entries: &[NewZipEntry],
    ) -> Result<(), LoadError> {
        let sink = self.client.copy_in(COPY).await?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, COPY_TYPES));
        for (index, entry) in (first_index..).zip(entries) {
            writer
                .as_mut()
                .write(&[
                    self.id.as_uuid(),
                    &index,
                    &entry.url.as_str(),
                    &entry.filename.as_str(),
                    &entry.given_filename,
                    &entry.modified_at,
                    &entry.declared_size,
                ])
                .await?;
        }
        writer.finish().await?;
        Ok(())
    }

    /// Ends the listing (the prefixes are gone and the job counts `files_total` entries) and
    /// commits.
    pub async fn commit(self, files_total: i32) -> Result<(), LoadError> {
        let id = self.id.as_uuid();
        self.client
            .execute("DELETE FROM zip_listings WHERE zip_id = $1", &[id])
            .await?;
        self.client
            .execute(
                "UPDATE zips SET files_total = $2, updated_at = now() WHERE id = $1",
                &[id, &files_total],
            )
            .await?;
        self.client.batch_execute("COMMIT").await?;
        Ok(())
    }
}
