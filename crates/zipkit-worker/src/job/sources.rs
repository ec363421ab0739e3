//! A job's sources, read from its entry rows a page at a time: once as the job starts, for what
//! the whole job needs to know of them (`survey`), then by each build as its downloads go
//! (`read`). A job of a million entries never holds them all: a build holds a page or two of
//! them ahead of its downloads.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::Instrument;
use zipkit_domain::Compression;
use zipkit_domain::db::PgPool;
use zipkit_domain::ids::ZipId;
use zipkit_domain::models::{EntrySource, Zip};
use zipkit_domain::values::SourceLocation;
use zipkit_zip::method::method_by_name;
use zipkit_zip::parts::{MAX_PART, copy_part_numbers};

use crate::archive::Method;
use crate::expected::CertainTail;
use crate::failure::JobFailure;
use crate::prefetch::{self, Source, SourceFeed};
use crate::source_buckets::SourceBuckets;

/// Entry rows read per statement.
const PAGE: i64 = 1_000;

/// A job's copies in the store take at most this many of the 10,000 part numbers an upload has:
/// an object up to 5 GiB two (the part before it and its own), a larger one a part more per
/// 5 GiB (`copy_part_numbers`).
pub(super) const COPY_PART_NUMBERS: u64 = 4_000;

/// What a job's builds need to know of all its sources before the first download.
#[derive(Debug, Default)]
pub(super) struct Survey {
    /// The buckets the sources are read from.
    pub(super) read: BTreeSet<String>,
    /// Of those, the buckets with an entry the store might copy (`copyable`).
    pub(super) copyable: BTreeSet<String>,
    /// What the archive's size needs of the sources at the end.
    pub(super) tail: CertainTail,
}

impl Survey {
    /// Whether some entry is copied in the store, given the buckets as opened.
    pub(super) fn copies(&self, buckets: &SourceBuckets) -> bool {
        self.copyable
            .iter()
            .any(|name| buckets.get(name).is_some_and(|b| b.copies))
    }
}

/// One pass over the job's entries, a page at a time.
pub(super) async fn survey(pool: &PgPool, zip: &Zip) -> Result<Survey, JobFailure> {
    let mut survey = Survey::default();
    let mut after = -1;
    loop {
        let page = page(pool, zip.id, after).await?;
        let last_page = page.len() < PAGE as usize;
        for entry in page {
            after = entry.entry_index;
            let source = Source::from(entry);
            if let SourceLocation::Bucket { bucket, .. } = source.url.location() {
                if !survey.read.contains(bucket) {
                    survey.read.insert(bucket.to_owned());
                }
                if copyable(zip.compression, &source) && !survey.copyable.contains(bucket) {
                    survey.copyable.insert(bucket.to_owned());
                }
            }
            survey.tail.push(
                zip.compression,
                source.index,
                source.filename.as_str(),
                source.declared_size,
            );
        }
        if last_page {
            break;
        }
    }
    survey.tail.shrink();
    Ok(survey)
}

/// The job's sources after entry `after`, in order, read on a task of its own a page ahead of
/// the build. Those the store copies into the archive are marked: those of the job that are
/// `copyable` from a bucket that copies (`SourceBucket::copies`) while their part numbers fit
/// in `COPY_PART_NUMBERS`, counted from its first entry so every build decides the same (an
/// object of unknown size counts as 5 GiB: larger ones are copied only at a declared size). An
/// entry in `times` gets that time (an earlier build placed it with it).
pub(super) fn read(
    pool: PgPool,
    zip: &Zip,
    buckets: std::sync::Arc<SourceBuckets>,
    after: i32,
    times: HashMap<i32, DateTime<Utc>>,
) -> SourceFeed {
    let (tx, feed) = mpsc::channel(PAGE as usize);
    let (id, compression) = (zip.id, zip.compression);
    let reader = async move {
        let mut last = -1;
        let mut numbers = 0;
        loop {
            let page = match page(&pool, id, last).await {
                Ok(page) => page,
                Err(failure) => {
                    let _ = tx.send(Err(failure)).await;
                    return;
                }
            };
            let last_page = page.len() < PAGE as usize;
            for entry in page {
                last = entry.entry_index;
                let mut source = Source::from(entry);
                let cost = copy_part_numbers(source.declared_size.unwrap_or(MAX_PART));
                if numbers + cost <= COPY_PART_NUMBERS && copyable(compression, &source) {
                    source.copy = match source.url.location() {
                        SourceLocation::Bucket { bucket, .. } => {
                            buckets.get(bucket).is_some_and(|b| b.copies)
                        }
                        SourceLocation::Web(_) => false,
                    };
                    numbers += if source.copy { cost } else { 0 };
                }
                if source.index <= after {
                    continue;
                }
                if let Some(time) = times.get(&source.index) {
                    source.modified_at = Some(*time);
                }
                // The build ended (it dropped the feed): nothing more to read.
                if tx.send(Ok(source)).await.is_err() {
                    return;
                }
            }
            if last_page {
                return;
            }
        }
    };
    tokio::spawn(reader.instrument(tracing::Span::current()));
    feed
}

/// Whether the store might copy the entry's object into the archive (server-side assembly):
/// an object of a bucket, stored as it is by its name alone (a `store` job, or `auto` and a
/// compressed format's extension), of a size worth copying when it is known already. Whether
/// its bucket copies is for the bucket as opened; whether the store keeps the object's CRC-32
/// is asked when its download starts.
fn copyable(compression: Compression, source: &Source) -> bool {
    let bucket = matches!(source.url.location(), SourceLocation::Bucket { .. });
    let stored = method_by_name(compression, source.filename.as_str()) == Some(Method::Stored);
    let size_fits = source
        .declared_size
        .is_none_or(|size| size >= prefetch::SMALLEST_COPIED);
    bucket && stored && size_fits
}

/// Up to `PAGE` entries' sources after entry `after`.
async fn page(pool: &PgPool, id: ZipId, after: i32) -> Result<Vec<EntrySource>, JobFailure> {
    let mut conn = pool.get().await.map_err(JobFailure::database)?;
    Zip::entry_sources(&mut conn, id, after, PAGE)
        .await
        .map_err(JobFailure::database)
}
