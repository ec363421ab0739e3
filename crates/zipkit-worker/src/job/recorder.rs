//! What a build writes to PostgreSQL as it goes, off the hot path: the upload's parts (`PgLedger`)
//! and, through a task of its own, entry outcomes, placements, progress and the expected size
//! (`Recorder`).

use std::time::Duration;

use tokio::sync::mpsc;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::{EntryOutcome, EntryPlacement, PlacedEnd, Zip};
use zipkit_domain::{EntryState, ZipId};

use crate::archive::{Method, Placement};
use crate::failure::JobFailure;
use crate::upload::{self, UploadedPart};

/// Records the upload in PostgreSQL as it happens (`zips.upload_id`, `zip_parts`). A failure
/// here is this side's, never the bucket's.
pub(super) struct PgLedger {
    pub(super) pool: PgPool,
    pub(super) zip_id: ZipId,
    pub(super) owner: String,
    /// How the archive is cut, recorded with the upload.
    pub(super) plan: String,
    pub(super) notes: mpsc::Sender<Note>,
}

impl upload::Ledger for PgLedger {
    async fn started(&self, upload_id: &str) -> Result<(), JobFailure> {
        let mut conn = self.pool.get().await.map_err(|e| {
            JobFailure::internal(format!("recording the upload in the database failed: {e}"))
        })?;
        match Zip::set_upload_id(&mut conn, self.zip_id, &self.owner, upload_id, &self.plan).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(JobFailure::cancelled()),
            Err(e) => Err(JobFailure::internal(format!(
                "recording the upload in the database failed: {e}"
            ))),
        }
    }

    async fn part_uploaded(&self, upload_id: &str, part: &UploadedPart) -> Result<(), JobFailure> {
        let failed = |e: &dyn std::fmt::Display| {
            JobFailure::internal(format!(
                "recording part {} in the database failed: {e}",
                part.number
            ))
        };
        let mut conn = self.pool.get().await.map_err(|e| failed(&e))?;
        Zip::record_part(
            &mut conn,
            self.zip_id,
            upload_id,
            part.number,
            &part.etag,
            part.size,
            part.crc32,
        )
        .await
        .map_err(|e| failed(&e))?;
        let _ = self.notes.send(Note::Uploaded(part.size)).await;
        Ok(())
    }

    async fn ended(&self, upload_id: &str) {
        let ended = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            Zip::end_upload(&mut conn, self.zip_id, upload_id)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = ended.await {
            // Only the orphan sweeper reads it; it checks the job's state too.
            tracing::warn!(zip.id = %self.zip_id, upload.id = upload_id, error = %e, "could not record the end of an upload");
        }
    }
}

/// What the recorder writes.
#[derive(Debug)]
pub(super) enum Note {
    Entry(EntryOutcome),
    /// Where entries' bytes went, in archive order.
    Placed(Vec<EntryPlacement>),
    Downloaded(u64),
    Uploaded(i64),
    /// The archive's exact size, newly known or changed.
    Expected(u64),
    /// Kept from the build a job was taken over from: its entries and their bytes.
    Kept {
        files: i32,
        bytes: u64,
    },
}

/// An entry's placement as the database keeps it.
pub(super) fn placement_row(p: &Placement, source_validator: Option<String>) -> EntryPlacement {
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    EntryPlacement {
        index: p.entry,
        offset: int(p.offset),
        deflated: p.method == Method::Deflated,
        zip64: p.zip64,
        source_validator,
        entry_time: Some(p.modified.at()),
        end: p.end.map(|e| PlacedEnd {
            end: int(e.end),
            compressed_size: int(e.compressed),
            archive_crc32: e.archive_crc32,
        }),
    }
}

/// Writes entry outcomes and progress counters on its own task, so the database never slows the
/// archive down: whatever arrived meanwhile goes in one statement (up to `BATCH` entries), and
/// the counters at most every `PROGRESS_EVERY`. A job of 70,000 small files costs a few dozen
/// statements, not 70,000.
pub(super) struct Recorder {
    task: tokio::task::JoinHandle<()>,
}

const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Most entry outcomes written in one statement.
const BATCH: usize = 2_000;

/// What the recorder has not written yet.
#[derive(Default)]
struct Pending {
    entries: Vec<EntryOutcome>,
    placed: Vec<EntryPlacement>,
    files: i32,
    downloaded: i64,
    uploaded: i64,
    expected: Option<i64>,
    dirty: bool,
}

impl Pending {
    fn take(&mut self, note: Note) {
        self.dirty = true;
        match note {
            Note::Entry(outcome) => {
                if outcome.state == EntryState::Done {
                    self.files += 1;
                }
                self.entries.push(outcome);
            }
            Note::Placed(placed) => self.placed.extend(placed),
            Note::Downloaded(n) => self.downloaded += i64::try_from(n).unwrap_or(0),
            Note::Uploaded(n) => self.uploaded += n,
            Note::Expected(size) => self.expected = Some(i64::try_from(size).unwrap_or(i64::MAX)),
            Note::Kept { files, bytes } => {
                self.files += files;
                self.downloaded += i64::try_from(bytes).unwrap_or(0);
            }
        }
    }
}

impl Recorder {
    pub(super) fn start(pool: PgPool, zip_id: ZipId, owner: String) -> (Self, mpsc::Sender<Note>) {
        let (tx, mut rx) = mpsc::channel::<Note>(4096);
        let task = tokio::spawn(async move {
            let mut pending = Pending::default();
            let mut last = tokio::time::Instant::now();
            loop {
                let note = tokio::time::timeout(PROGRESS_EVERY, rx.recv()).await;
                let closed = matches!(note, Ok(None));
                if let Ok(Some(note)) = note {
                    pending.take(note);
                }
                // Everything that is already waiting joins this write.
                while pending.entries.len() < BATCH && pending.placed.len() < BATCH {
                    match rx.try_recv() {
                        Ok(note) => pending.take(note),
                        Err(_) => break,
                    }
                }
                if !pending.entries.is_empty() {
                    let entries = std::mem::take(&mut pending.entries);
                    let written = match pool.get().await {
                        Ok(mut conn) => Zip::record_entries(&mut conn, zip_id, &entries)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = written {
                        tracing::warn!(zip.id = %zip_id, entries = entries.len(), error = %e, "recording entries failed");
                    }
                }
                // After the outcomes: a worker taking the job over trusts a placement only
                // with its entry's outcome.
                if !pending.placed.is_empty() {
                    let placed = std::mem::take(&mut pending.placed);
                    let written = match pool.get().await {
                        Ok(mut conn) => Zip::record_placements(&mut conn, zip_id, &owner, &placed)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = written {
                        tracing::warn!(zip.id = %zip_id, entries = placed.len(), error = %e, "recording where entries went failed");
                    }
                }
                if let Some(size) = pending.expected.take() {
                    let written = match pool.get().await {
                        Ok(mut conn) => Zip::record_expected_size(&mut conn, zip_id, &owner, size)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = written {
                        tracing::warn!(zip.id = %zip_id, error = %e, "recording the expected size failed");
                    }
                }
                if pending.dirty && (closed || last.elapsed() >= PROGRESS_EVERY) {
                    if let Ok(mut conn) = pool.get().await {
                        let _ = Zip::record_progress(
                            &mut conn,
                            zip_id,
                            &owner,
                            pending.files,
                            pending.downloaded,
                            pending.uploaded,
                        )
                        .await;
                    }
                    pending.dirty = false;
                    last = tokio::time::Instant::now();
                }
                if closed {
                    return;
                }
            }
        });
        (Self { task }, tx)
    }

    /// Waits until everything sent so far is written.
    pub(super) async fn finish(self) {
        let _ = self.task.await;
    }
}
