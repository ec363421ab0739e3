//! The entries a job's prefixes and manifest become, written in batches in archive order inside
//! the transaction that lists them, no two landing on the same file; and why that transaction
//! was rolled back.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use diesel_async::AsyncPgConnection;
use zipkit_domain::models::{EntrySource, NewZipEntry, Zip};

use crate::failure::{Blame, JobFailure, Retry};

/// The most entries a job may have once its prefixes are listed or its manifest read (ZIP64
/// takes more; this keeps a job within what one worker builds in reasonable time and memory).
pub const MAX_LISTED_ENTRIES: usize = 1_000_000;

/// Entries written per statement.
const BATCH: usize = 5_000;

/// Why the listing's transaction was rolled back.
pub(super) enum Failed {
    Query(diesel::result::Error),
    Job(JobFailure),
}

impl From<diesel::result::Error> for Failed {
    fn from(e: diesel::result::Error) -> Self {
        Self::Query(e)
    }
}

impl From<JobFailure> for Failed {
    fn from(f: JobFailure) -> Self {
        Self::Job(f)
    }
}

/// Entries written in batches, numbered in order, no two landing on the same file.
pub(super) struct Writer<'a> {
    zip: &'a Zip,
    batch: Vec<NewZipEntry>,
    /// Entries written or batched so far.
    total: usize,
    /// A 64-bit hash of each name's collision key: a million names take ~18 MiB, not the
    /// ~100 MiB of the names themselves (two different names share a hash once in ~10^7 jobs of
    /// a million, and then the job is refused, never built wrong).
    names: HashSet<u64>,
    hasher: RandomState,
}

impl<'a> Writer<'a> {
    /// Entries written or batched so far.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    pub(super) fn new(zip: &'a Zip, waiting: &[EntrySource]) -> Self {
        let hasher = RandomState::new();
        let names = waiting
            .iter()
            .map(|e| hasher.hash_one(e.filename.collision_key()))
            .collect();
        Self {
            zip,
            batch: Vec::with_capacity(BATCH),
            total: 0,
            names,
            hasher,
        }
    }

    /// Adds an entry; a `listed` one's name is checked against all before it, and a clash
    /// named at that param (a waiting one's was checked when the job was requested).
    pub(super) async fn push(
        &mut self,
        conn: &mut AsyncPgConnection,
        entry: NewZipEntry,
        listed: Option<String>,
    ) -> Result<(), Failed> {
        if self.total >= MAX_LISTED_ENTRIES {
            return Err(JobFailure::new(
                "too_many_entries",
                format!(
                    "the job's prefixes list more than {MAX_LISTED_ENTRIES} objects; narrow them \
                     with `include`/`exclude`, or split the job"
                ),
                Blame::Request,
                Retry::Never,
            )
            .into());
        }
        if let Some(param) = listed
            && !self
                .names
                .insert(self.hasher.hash_one(entry.filename.collision_key()))
        {
            return Err(JobFailure::new(
                "filename_duplicate",
                format!(
                    "{} would extract onto another entry's file ({}; names must differ in more \
                     than letter case or Unicode normalization)",
                    entry.url, entry.filename
                ),
                Blame::Request,
                Retry::Never,
            )
            .with_param(param)
            .into());
        }
        self.batch.push(entry);
        self.total += 1;
        if self.batch.len() >= BATCH {
            self.flush(conn).await?;
        }
        Ok(())
    }

    pub(super) async fn flush(&mut self, conn: &mut AsyncPgConnection) -> Result<(), Failed> {
        let first = self.total - self.batch.len();
        let first = i32::try_from(first).unwrap_or(i32::MAX);
        Zip::insert_entries(conn, self.zip.id, first, &self.batch).await?;
        self.batch.clear();
        Ok(())
    }
}
