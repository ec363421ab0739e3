//! The entries a job's prefixes and manifest become, copied in batches in archive order inside
//! the transaction that lists them (`EntryLoad`), no two landing on the same file; and why that
//! transaction was rolled back.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use zipkit_domain::models::{EntryLoad, EntrySource, LoadError, NewZipEntry};

use crate::failure::{Blame, JobFailure, Retry};

/// The most entries a job may have once its prefixes are listed or its manifest read (ZIP64
/// takes more; this keeps a job within what one worker builds in reasonable time and memory).
pub const MAX_LISTED_ENTRIES: usize = 1_000_000;

/// Entries copied per statement.
const BATCH: usize = 5_000;

/// Why the listing's transaction was rolled back.
pub(super) enum Failed {
    Database(LoadError),
    Job(JobFailure),
}

impl From<LoadError> for Failed {
    fn from(e: LoadError) -> Self {
        Self::Database(e)
    }
}

impl From<JobFailure> for Failed {
    fn from(f: JobFailure) -> Self {
        Self::Job(f)
    }
}

/// Entries written in batches, numbered in order, no two landing on the same file.
pub(super) struct Writer {
    load: EntryLoad,
    batch: Vec<NewZipEntry>,
    /// Entries written or batched so far.
    total: usize,
    /// A 64-bit hash of each name's collision key: a million names take ~18 MiB, not the
    /// ~100 MiB of the names themselves (two different names share a hash once in ~10^7 jobs of
    /// a million, and then the job is refused, never built wrong).
    names: HashSet<u64>,
    hasher: RandomState,
}

impl Writer {
    /// Entries written or batched so far.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    pub(super) fn new(load: EntryLoad, waiting: &[EntrySource]) -> Self {
        let hasher = RandomState::new();
        let names = waiting
            .iter()
            .map(|e| hasher.hash_one(e.filename.collision_key()))
            .collect();
        Self {
            load,
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
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Failed> {
        let first = self.total - self.batch.len();
        let first = i32::try_from(first).unwrap_or(i32::MAX);
        self.load.copy(first, &self.batch).await?;
        self.batch.clear();
        Ok(())
    }

    /// Writes the last batch, ends the listing with the job counting its entries, and commits;
    /// returns how many there are.
    pub(super) async fn commit(mut self) -> Result<usize, Failed> {
        self.flush().await?;
        let total = i32::try_from(self.total).unwrap_or(i32::MAX);
        self.load.commit(total).await?;
        Ok(self.total)
    }
}
