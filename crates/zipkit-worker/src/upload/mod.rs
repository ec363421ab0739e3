//! The archive's way into the bucket. `destination` owns every call on the object; this module
//! cuts the writer's output into parts (`PartPlan`: growing on S3, equal on R2), keeps several
//! uploading at once, records each in the `Ledger` as it is written, and completes the upload
//! only on the job's word. An archive that fits in one part goes up with a single PutObject.
//!
//! A part that holds an entry's local header still without its values (`Piece::Header`) is held
//! back, full, until the header's final bytes arrive (`Piece::Patch`), written over it, and only
//! then sent; the parts after it go on meanwhile (a multipart upload takes its parts in any
//! order). So every header in the bucket carries its entry's CRC-32 and sizes.
//!
//! A copied range (`Piece::Copy`) is a part of its own, made by the store from the source object
//! (UploadPartCopy); the part being filled ends right before it. The writer cuts its own
//! copy of the parts (`PartCuts`) to send enough of each object first that no part before a copy
//! falls under S3's 5 MiB.
//!
//! A job taken over from a worker that died continues that worker's upload (`Resume`): the
//! rebuilt archive's bytes, from where the rebuild starts (after the entries wholly inside the
//! uploaded parts, which are not built again), are checked part by part against the size and
//! CRC-32 recorded for each part already in the bucket instead of being sent again; the first
//! difference stops the upload (`UploadError::Diverged`) before anything is sent, and the job
//! starts a new one.

pub mod destination;
pub mod sweeper;

pub use destination::{Destination, StoreFailure, StoreTimeouts, UploadedPart};
pub use zipkit_zip::parts::{MAX_PARTS, MIN_PART, PartCuts, PartPlan};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::archive::{CopiedRange, Piece};
use crate::failure::JobFailure;
use crate::memory::{LanePass, PartBuffer, PartMemory, PartPermit};

/// Where an upload's progress is kept as it happens (PostgreSQL in the worker), so that a worker
/// taking the job over knows which parts are in the bucket.
pub trait Ledger: Send + Sync {
    /// A multipart upload was created.
    fn started(&self, upload_id: &str) -> impl Future<Output = Result<(), JobFailure>> + Send;
    /// The store took a part.
    fn part_uploaded(
        &self,
        upload_id: &str,
        part: &UploadedPart,
    ) -> impl Future<Output = Result<(), JobFailure>> + Send;
    /// The upload was completed or aborted: nothing resumes it, nothing needs to clean it up.
    fn ended(&self, upload_id: &str) -> impl Future<Output = ()> + Send;
}

/// How the job ended, as the uploader learns once the archive's bytes stop coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The archive is whole: send the rest and complete the upload.
    Complete,
    /// The job failed or was cancelled: send nothing more and abort the upload.
    Abort,
    /// Another worker took the job over and may be continuing the upload: send nothing more
    /// and leave it alone.
    HandOver,
}

/// A multipart upload to continue, and its parts already in the bucket (numbers 1 to n, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub upload_id: String,
    pub parts: Vec<UploadedPart>,
    /// The archive offset of the first byte the rebuild sends (at most the parts' total: what
    /// comes before it is neither rebuilt nor checked again), and the CRC-32 of the archive's
    /// bytes before it.
    pub from: u64,
    pub crc32_before: u32,
    /// The upload copies ranges: its parts end where copies start, not only where the plan
    /// cuts them, so their sizes say nothing until the rebuilt bytes are compared.
    pub copies: bool,
}

/// Why the upload did not produce an object.
#[derive(Debug)]
pub enum UploadError {
    /// The store refused, or the ledger could not record a part; the upload was aborted.
    Failed(JobFailure),
    /// The job ended without a finished archive: nothing more was sent, the upload was aborted
    /// (or, handed over to another worker, left alone).
    Abandoned,
    /// Resuming: the rebuilt archive differs from the bytes of this part already in the bucket
    /// (a source changed, or the writer did). The upload was left as it was, for the caller to
    /// abort: nothing was sent, unless the part's check waited for a header's values (parts
    /// after it may have gone up meanwhile).
    Diverged { part: i32 },
    /// Resuming: the store no longer has the upload (`NoSuchUpload`).
    Lost(JobFailure),
}

impl From<JobFailure> for UploadError {
    fn from(failure: JobFailure) -> Self {
        Self::Failed(failure)
    }
}

/// The object as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub size: u64,
    pub etag: String,
    /// 0 for a single PutObject.
    pub parts: usize,
    /// Parts that were already in the bucket when the upload was resumed.
    pub resumed_parts: usize,
}

/// Uploads everything `chunks` yields, in parts cut by `plan` (and before and after each copied
/// range, which the store makes a part of its own), several at once as `memory` allows (the
/// job's floor, and more parts only while the worker's budget has them free). When the chunks
/// end, `finished` says whether the archive is whole: only then is the last part sent and the
/// upload completed; otherwise nothing more is sent. With `resume`, continues that upload after checking the bytes of its parts. Whatever
/// stops an upload early aborts it (except a divergence: the caller decides), so no job leaves
/// parts behind that it knows of.
pub async fn upload(
    destination: &Destination,
    chunks: mpsc::Receiver<Piece>,
    plan: PartPlan,
    memory: &PartMemory,
    ledger: &impl Ledger,
    finished: oneshot::Receiver<Ending>,
    resume: Option<Resume>,
) -> Result<Uploaded, UploadError> {
    let mut seen = Seen {
        upload_id: resume.as_ref().map(|r| r.upload_id.clone()),
        ending: None,
    };
    let result = stream(
        destination,
        chunks,
        Cutting { plan, memory },
        ledger,
        finished,
        resume,
        &mut seen,
    )
    .await;
    let ending = seen.ending;
    if let Some(upload_id) = seen.upload_id {
        match &result {
            Ok(_) => ledger.ended(&upload_id).await,
            Err(UploadError::Abandoned) if ending == Some(Ending::HandOver) => {}
            Err(UploadError::Failed(_) | UploadError::Abandoned) => {
                destination.abort(&upload_id).await;
                ledger.ended(&upload_id).await;
            }
            Err(UploadError::Lost(_)) => ledger.ended(&upload_id).await,
            Err(UploadError::Diverged { .. }) => {}
        }
    }
    result
}

/// What the stream learnt that the cleanup after it needs.
struct Seen {
    /// The multipart upload in use, once there is one.
    upload_id: Option<String>,
    /// The job's word, once the archive's bytes stopped coming.
    ending: Option<Ending>,
}

/// A full part held back for a header's values: its number, where it starts in the archive, and
/// its bytes.
type HeldPart = (i32, u64, PartBuffer<PartPermit>);

/// Parts on their way to the store.
type Uploading = JoinSet<Result<UploadedPart, StoreFailure>>;

/// Checks the rebuilt archive's bytes against the parts already in the bucket.
struct PrefixCheck {
    parts: std::iter::Skip<std::vec::IntoIter<UploadedPart>>,
    current: Option<UploadedPart>,
    seen: u64,
    crc: crc32fast::Hasher,
}

impl PrefixCheck {
    /// For a rebuild whose bytes start at `from`, the archive's bytes before it having the
    /// CRC-32 `crc32_before`: parts that end before `from` are taken as they are, the part
    /// `from` falls in is checked from there on, with its bytes before `from` accounted for
    /// by their CRC-32 (from the earlier parts' and `crc32_before`).
    fn new(parts: Vec<UploadedPart>, from: u64, crc32_before: u32) -> Self {
        // The parts wholly before `from`.
        let mut end = 0u64;
        let before = parts
            .iter()
            .take_while(|p| {
                end += p.size as u64;
                end <= from
            })
            .count();
        let (start, crc_to_start) = crc32_of(&parts[..before]);
        let mut parts = parts.into_iter().skip(before);
        let current = parts.next();
        let seen = from.saturating_sub(start);
        let crc_in_part = crc32_tail(crc32_before, crc_to_start, seen);
        Self {
            parts,
            current,
            seen,
            crc: crc32fast::Hasher::new_with_initial_len(crc_in_part, seen),
        }
    }

    fn is_done(&self) -> bool {
        self.current.is_none()
    }

    /// Takes a copied range, which must be the next recorded part whole: same size, same CRC-32.
    /// Otherwise the number of the part that differs.
    fn copied(&mut self, range: &CopiedRange) -> Result<(), i32> {
        let Some(part) = &self.current else {
            return Ok(());
        };
        if self.seen != 0 || part.size as u64 != range.len || part.crc32 != range.crc32 {
            return Err(part.number);
        }
        self.current = self.parts.next();
        Ok(())
    }

    /// Takes the bytes of `chunk` that belong to recorded parts; a part whose bytes are all in
    /// comes back with the CRC-32 of the bytes it was given, for the caller to compare (now, or
    /// once a header in it has its values).
    fn consume(&mut self, chunk: &mut Bytes) -> Option<(UploadedPart, u32)> {
        let part = self.current.as_ref()?;
        let want = part.size as u64 - self.seen;
        let take = chunk.len().min(usize::try_from(want).unwrap_or(usize::MAX));
        let taken = chunk.split_to(take);
        self.crc.update(&taken);
        self.seen += take as u64;
        if self.seen < part.size as u64 {
            return None;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        self.seen = 0;
        let done = std::mem::replace(&mut self.current, self.parts.next())?;
        Some((done, crc))
    }

    /// Where the part being checked starts in the archive, given the offset of the byte
    /// `consume` takes next.
    fn part_start(&self, next: u64) -> u64 {
        next - self.seen
    }

    /// Rewrites the running CRC-32 of the part being checked for a header's final bytes.
    fn patch(&mut self, part_start: u64, header: &HeaderHold, patch: &[u8]) {
        let end = part_start + self.seen;
        let crc = header.patched_crc(self.crc.clone().finalize(), part_start, end, patch);
        self.crc = crc32fast::Hasher::new_with_initial_len(crc, self.seen);
    }
}

/// An entry's local header that went out without its values: where it is, and what it said.
#[derive(Debug)]
struct HeaderHold {
    at: u64,
    placeholder: Bytes,
}

impl HeaderHold {
    fn end(&self) -> u64 {
        self.at + self.placeholder.len() as u64
    }

    /// Whether it has bytes in `[start, end)`.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.at < end && start < self.end()
    }

    /// The part of the header in `[start, end)`: where it is from `start`, and which of its
    /// bytes.
    fn within(&self, start: u64, end: u64) -> Option<(usize, std::ops::Range<usize>)> {
        if !self.overlaps(start, end) {
            return None;
        }
        let from = self.at.max(start);
        let to = self.end().min(end);
        let at = (from - start) as usize;
        Some((at, (from - self.at) as usize..(to - self.at) as usize))
    }

    /// The CRC-32 of the bytes `[start, end)` once the header's bytes in it are `patch`'s,
    /// from their CRC-32 with the placeholder: replacing bytes `g` by `f` of the same length,
    /// with `m` bytes after them, changes a CRC-32 by crc(g) ⊕ crc(f) carried through `m` zero
    /// bytes (`crc32_concat(x, 0, m)` is linear in `x`).
    fn patched_crc(&self, crc: u32, start: u64, end: u64, patch: &[u8]) -> u32 {
        let Some((at, range)) = self.within(start, end) else {
            return crc;
        };
        let after = end - start - (at + range.len()) as u64;
        let change =
            crc32fast::hash(&self.placeholder[range.clone()]) ^ crc32fast::hash(&patch[range]);
        crc ^ crc32_concat(change, 0, after)
    }
}

/// CRC-32 of `a` followed by `b`, from theirs and `b`'s length.
pub(crate) fn crc32_concat(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    let mut a = crc32fast::Hasher::new_with_initial(crc_a);
    a.combine(&crc32fast::Hasher::new_with_initial_len(crc_b, len_b));
    a.finalize()
}

/// How many bytes `parts` hold together, and their CRC-32.
pub(crate) fn crc32_of(parts: &[UploadedPart]) -> (u64, u32) {
    parts.iter().fold((0, 0), |(len, crc), p| {
        let size = p.size as u64;
        (len + size, crc32_concat(crc, p.crc32, size))
    })
}

/// CRC-32 of the last `len_b` bytes of `a` followed by `b`, from the CRC-32 of the whole and of
/// `a`. CRC-32 is affine: crc(a‖b) = crc(b) ⊕ crc(a) shifted over `len_b` zero bytes, which is
/// what concatenating `a` with `len_b` bytes whose CRC-32 is 0 gives.
pub(crate) fn crc32_tail(crc_whole: u32, crc_a: u32, len_b: u64) -> u32 {
    crc_whole ^ crc32_concat(crc_a, 0, len_b)
}

/// How the archive is cut into parts, and the memory the parts are filled in.
struct Cutting<'a> {
    plan: PartPlan,
    memory: &'a PartMemory,
}

async fn stream(
    destination: &Destination,
    mut chunks: mpsc::Receiver<Piece>,
    Cutting { plan, memory }: Cutting<'_>,
    ledger: &impl Ledger,
    finished: oneshot::Receiver<Ending>,
    resume: Option<Resume>,
    seen: &mut Seen,
) -> Result<Uploaded, UploadError> {
    // Dropped on every way out: parts still uploading stop at once.
    let mut uploading = Uploading::new();
    let mut parts: Vec<UploadedPart> = Vec::new();
    let mut prefix = None;
    let mut next_number = 1i32;
    let mut last_part_short = None;
    // The object's size: the rebuild's bytes and, resuming, those before where it starts.
    let mut total = 0u64;
    let resumed = resume.is_some();
    if let Some(resume) = resume {
        // The parts must be the ones this plan cuts: all full, but the archive's last (or, with
        // copies, the one before a copy; the comparison of their bytes tells).
        let count = resume.parts.len();
        for (i, part) in resume.parts.iter().enumerate() {
            let full = part.size as usize == plan.size(part.number);
            let short = (part.size as usize) < plan.size(part.number);
            let last_and_short = i + 1 == count && short;
            if part.number != i as i32 + 1 || !(full || last_and_short || resume.copies) {
                return Err(UploadError::Diverged { part: part.number });
            }
        }
        next_number = count as i32 + 1;
        // A short part can only have been the archive's last: nothing may follow it.
        last_part_short = resume
            .parts
            .last()
            .filter(|p| !resume.copies && (p.size as usize) < plan.size(p.number))
            .map(|p| p.number);
        parts = resume.parts.clone();
        prefix = Some(PrefixCheck::new(
            resume.parts,
            resume.from,
            resume.crc32_before,
        ));
        total = resume.from;
    }
    let resumed_parts = parts.len();
    let lost = |refused: StoreFailure| {
        if refused.upload_lost && resumed {
            UploadError::Lost(refused.failure)
        } else {
            UploadError::Failed(refused.failure)
        }
    };
    let new_part = NewPart {
        destination,
        ledger,
        plan,
    };
    // Each part is filled to exactly its size in its own mapping, taken when its first byte
    // arrives (`NextBuffer::take`); `filling_start` is where it starts in the archive.
    let mut buffer: Option<PartBuffer<PartPermit>> = None;
    let mut filling_start = total;
    // The header still without its values, the full parts it is in (held back), and the
    // recorded parts it is in whose check waits for it (with the CRC-32 of what they were given).
    let mut header: Option<HeaderHold> = None;
    let mut held: Vec<HeldPart> = Vec::new();
    let mut unchecked: Vec<(UploadedPart, u64, u32)> = Vec::new();
    // The worker's lane, while parts are held back and no other memory was free.
    let mut pass: Option<LanePass> = None;
    while let Some(piece) = chunks.recv().await {
        let mut chunk = match piece {
            Piece::Bytes(bytes) => bytes,
            Piece::Header(bytes) => {
                header = Some(HeaderHold {
                    at: total,
                    placeholder: bytes.clone(),
                });
                bytes
            }
            Piece::Patch(patch) => {
                let hold = header.take().ok_or_else(|| {
                    UploadError::Failed(JobFailure::internal("a header's values came twice"))
                })?;
                // Recorded parts it is in: compared now.
                for (part, start, crc) in unchecked.drain(..) {
                    let end = start + part.size as u64;
                    if hold.patched_crc(crc, start, end, &patch) != part.crc32 {
                        return Err(UploadError::Diverged { part: part.number });
                    }
                }
                if let Some(check) = &mut prefix {
                    let start = check.part_start(total);
                    check.patch(start, &hold, &patch);
                }
                // Parts held back for it, and the part being filled: written over, then the
                // held parts go.
                if let Some(filling) = &mut buffer
                    && let Some((at, range)) =
                        hold.within(filling_start, filling_start + filling.len() as u64)
                {
                    filling.overwrite(at, &patch[range]);
                }
                for (number, start, mut part) in std::mem::take(&mut held) {
                    if let Some((at, range)) = hold.within(start, start + part.len() as u64) {
                        part.overwrite(at, &patch[range]);
                    }
                    let part = (number, part.freeze());
                    new_part
                        .send(seen, &mut uploading, &mut parts, part, lost)
                        .await?;
                }
                pass = None;
                continue;
            }
            Piece::Copy(range) => {
                let len = range.len;
                if let Some(check) = &mut prefix {
                    check
                        .copied(&range)
                        .map_err(|part| UploadError::Diverged { part })?;
                    total += len;
                    if check.is_done() {
                        prefix = None;
                        filling_start = total;
                    }
                    continue;
                }
                if let Some(part) = last_part_short {
                    return Err(UploadError::Diverged { part });
                }
                // The part being filled ends here (held back if a header in it waits for its
                // values); the copy is the next.
                if let Some(filling) = buffer.take() {
                    if (filling.len() as u64) < MIN_PART {
                        return Err(UploadError::Failed(JobFailure::internal(format!(
                            "the part before a copied range holds only {} bytes",
                            filling.len()
                        ))));
                    }
                    let part = (next_number, filling_start, filling);
                    let sending = (&mut *seen, &mut uploading, &mut parts);
                    new_part
                        .end(sending, (header.as_ref(), &mut held), part, lost)
                        .await?;
                    next_number += 1;
                }
                new_part
                    .copy(seen, &mut uploading, &mut parts, (next_number, range), lost)
                    .await?;
                next_number += 1;
                total += len;
                filling_start = total;
                continue;
            }
            Piece::Rewind => {
                let hold = header.take().ok_or_else(|| {
                    UploadError::Failed(JobFailure::internal("a rewind without a header"))
                })?;
                // Bytes compared with parts already in the bucket cannot be taken back: the
                // rebuild is not the archive of that upload.
                if let Some(part) = unchecked.first().map(|(p, ..)| p.number).or_else(|| {
                    prefix
                        .as_ref()
                        .and_then(|c| c.current.as_ref().map(|p| p.number))
                }) {
                    return Err(UploadError::Diverged { part });
                }
                let to = hold.at;
                total = to;
                let void_from = match held.first() {
                    // The part it began in was held back: it is filled again from there, and
                    // the parts sent after it are void (sent again, or left out).
                    Some(&(number, start, _)) if start <= to => {
                        let (_, _, mut part) = held.remove(0);
                        part.truncate((to - start) as usize);
                        held.clear();
                        buffer = Some(part);
                        filling_start = start;
                        next_number = number;
                        number
                    }
                    _ => {
                        if let Some(filling) = &mut buffer {
                            filling.truncate((to - filling_start) as usize);
                        }
                        next_number
                    }
                };
                // Parts on their way that are void still finish (a part number sent again must
                // not race an earlier body); those before it are recorded as usual.
                while let Some(part) = next_finished(&mut uploading).await.map_err(lost)? {
                    if part.number < void_from
                        && let Some(id) = &seen.upload_id
                    {
                        ledger.part_uploaded(id, &part).await?;
                        parts.push(part);
                    }
                }
                parts.retain(|p| p.number < void_from);
                pass = None;
                continue;
            }
        };
        total += chunk.len() as u64;
        while !chunk.is_empty() {
            if let Some(check) = &mut prefix {
                let next = total - chunk.len() as u64;
                let start = check.part_start(next);
                if let Some((part, crc)) = check.consume(&mut chunk) {
                    let end = start + part.size as u64;
                    match &header {
                        Some(hold) if hold.overlaps(start, end) => {
                            unchecked.push((part, start, crc));
                        }
                        _ if crc != part.crc32 => {
                            return Err(UploadError::Diverged { part: part.number });
                        }
                        _ => {}
                    }
                }
                if check.is_done() {
                    prefix = None;
                    filling_start = total - chunk.len() as u64;
                }
                continue;
            }
            if let Some(part) = last_part_short {
                return Err(UploadError::Diverged { part });
            }
            let filling = match &mut buffer {
                Some(filling) => filling,
                None => {
                    let next = NextBuffer {
                        memory,
                        size: plan.size(next_number),
                        upload_id: seen.upload_id.as_deref(),
                        ledger,
                        holding: !held.is_empty(),
                    };
                    filling_start = total - chunk.len() as u64;
                    let permit = next
                        .take(&mut uploading, &mut parts, &mut pass)
                        .await
                        .map_err(lost)?;
                    buffer.insert(permit)
                }
            };
            let take = filling.fill(&chunk);
            let _ = chunk.split_to(take);
            if filling.len() == filling.capacity() {
                let full = buffer.take().expect("a buffer is being filled");
                let part = (next_number, filling_start, full);
                let sending = (&mut *seen, &mut uploading, &mut parts);
                new_part
                    .end(sending, (header.as_ref(), &mut held), part, lost)
                    .await?;
                next_number += 1;
            }
        }
    }
    // The writer is gone: whole archive, or a job that failed or was cancelled.
    seen.ending = finished.await.ok();
    if seen.ending != Some(Ending::Complete) {
        return Err(UploadError::Abandoned);
    }
    if let Some(check) = &prefix {
        // The rebuilt archive ends inside the bytes already uploaded: not the same archive.
        let part = check.current.as_ref().map_or(0, |p| p.number);
        return Err(UploadError::Diverged { part });
    }
    if header.is_some() || !held.is_empty() || !unchecked.is_empty() {
        return Err(UploadError::Failed(JobFailure::internal(
            "the archive ended before an entry's header had its values",
        )));
    }
    let Some(id) = seen.upload_id.clone() else {
        let body = buffer.map(PartBuffer::freeze).unwrap_or_default();
        let etag = destination.put_object(body).await?;
        return Ok(Uploaded {
            size: total,
            etag,
            parts: 0,
            resumed_parts,
        });
    };
    let send = SendPart {
        destination,
        upload_id: &id,
        plan,
        ledger,
    };
    if let Some(last) = buffer.filter(|b| !b.is_empty()) {
        let last = Body::Sent(last.freeze());
        send.send(&mut uploading, &mut parts, next_number, last)
            .await
            .map_err(lost)?;
    }
    while let Some(part) = next_finished(&mut uploading).await.map_err(lost)? {
        ledger.part_uploaded(&id, &part).await?;
        parts.push(part);
    }
    let etag = destination.complete(&id, &parts).await.map_err(lost)?;
    Ok(Uploaded {
        size: total,
        etag,
        parts: parts.len(),
        resumed_parts,
    })
}

/// Sends the parts cut from the archive, creating (and recording) the multipart upload with the
/// first.
struct NewPart<'a, L> {
    destination: &'a Destination,
    ledger: &'a L,
    plan: PartPlan,
}

impl<L: Ledger> NewPart<'_, L> {
    async fn send(
        &self,
        seen: &mut Seen,
        uploading: &mut Uploading,
        parts: &mut Vec<UploadedPart>,
        (number, body): (i32, Bytes),
        lost: impl Fn(StoreFailure) -> UploadError,
    ) -> Result<(), UploadError> {
        let id = self.upload_id(seen).await?;
        self.sender(&id)
            .send(uploading, parts, number, Body::Sent(body))
            .await
            .map_err(lost)
    }

    /// A part that ends here (`number`, starting at archive offset `start`): held back while a
    /// header in it waits for its values, sent otherwise.
    async fn end(
        &self,
        (seen, uploading, parts): (&mut Seen, &mut Uploading, &mut Vec<UploadedPart>),
        (header, held): (Option<&HeaderHold>, &mut Vec<HeldPart>),
        (number, start, part): HeldPart,
        lost: impl Fn(StoreFailure) -> UploadError,
    ) -> Result<(), UploadError> {
        let end = start + part.len() as u64;
        if header.is_some_and(|hold| hold.overlaps(start, end)) {
            held.push((number, start, part));
            return Ok(());
        }
        self.send(seen, uploading, parts, (number, part.freeze()), lost)
            .await
    }

    /// Has the store copy `range` as part `number`.
    async fn copy(
        &self,
        seen: &mut Seen,
        uploading: &mut Uploading,
        parts: &mut Vec<UploadedPart>,
        (number, range): (i32, CopiedRange),
        lost: impl Fn(StoreFailure) -> UploadError,
    ) -> Result<(), UploadError> {
        let id = self.upload_id(seen).await?;
        self.sender(&id)
            .send(uploading, parts, number, Body::Copied(range))
            .await
            .map_err(lost)
    }

    /// The upload, created (and recorded) with its first part.
    async fn upload_id(&self, seen: &mut Seen) -> Result<String, UploadError> {
        Ok(match &seen.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.destination.create_multipart().await?;
                self.ledger.started(&id).await?;
                seen.upload_id.insert(id).clone()
            }
        })
    }

    fn sender<'s>(&'s self, upload_id: &'s str) -> SendPart<'s, L> {
        SendPart {
            destination: self.destination,
            upload_id,
            plan: self.plan,
            ledger: self.ledger,
        }
    }
}

/// What makes a part: bytes sent, or a range the store copies.
enum Body {
    Sent(Bytes),
    Copied(CopiedRange),
}

/// Starts one part of a multipart upload.
struct SendPart<'a, L> {
    destination: &'a Destination,
    upload_id: &'a str,
    plan: PartPlan,
    ledger: &'a L,
}

impl<L: Ledger> SendPart<'_, L> {
    /// At the limit, waits for a part to finish before starting this one; records finished parts
    /// only once this one is on its way, so the store never waits on PostgreSQL.
    async fn send(
        &self,
        uploading: &mut Uploading,
        parts: &mut Vec<UploadedPart>,
        number: i32,
        body: Body,
    ) -> Result<(), StoreFailure> {
        // Parts that finished meanwhile are recorded now, so a worker taking the job over finds
        // them; at the limit, one more is waited for.
        let mut finished = Vec::new();
        while let Some(joined) = uploading.try_join_next() {
            finished.push(joined_part(joined)?);
        }
        while uploading.len() >= self.plan.in_flight(number) {
            finished.extend(next_finished(uploading).await?);
        }
        let (destination, upload_id) = (self.destination.clone(), self.upload_id.to_owned());
        match body {
            Body::Sent(body) => {
                let span = tracing::info_span!(
                    "upload part",
                    otel.kind = "client",
                    part = number,
                    bytes = body.len(),
                );
                uploading.spawn(
                    async move { destination.upload_part(&upload_id, number, body).await }
                        .instrument(span),
                );
            }
            Body::Copied(range) => {
                let span = tracing::info_span!(
                    "copy part",
                    otel.kind = "client",
                    part = number,
                    bytes = range.len,
                    source.bucket = %range.bucket,
                );
                uploading.spawn(
                    async move { destination.copy_part(&upload_id, number, range).await }
                        .instrument(span),
                );
            }
        }
        for part in finished {
            record_part(self.ledger, self.upload_id, part, parts).await?;
        }
        Ok(())
    }
}

/// Records a finished part (a failure there is this side's, not the store's) and keeps it.
async fn record_part(
    ledger: &impl Ledger,
    upload_id: &str,
    part: UploadedPart,
    parts: &mut Vec<UploadedPart>,
) -> Result<(), StoreFailure> {
    ledger
        .part_uploaded(upload_id, &part)
        .await
        .map_err(|failure| StoreFailure {
            failure,
            upload_lost: false,
        })?;
    parts.push(part);
    Ok(())
}

/// Where the memory for the next part buffer comes from.
struct NextBuffer<'a, L> {
    memory: &'a PartMemory,
    size: usize,
    /// The upload, once there is one (parts are in flight only then).
    upload_id: Option<&'a str>,
    ledger: &'a L,
    /// Whether one of the job's parts is held back for a header (it may be the floor).
    holding: bool,
}

impl<L: Ledger> NextBuffer<'_, L> {
    /// The job's floor or free budget; when neither is free, one of the job's own parts finishing
    /// (recorded as it finishes) frees some; with none in flight, the floor, or the worker's lane
    /// when a part held back for a header may have the floor. Never waits on memory other jobs
    /// hold, but for the lane, which its holder gives back without needing more.
    async fn take(
        &self,
        uploading: &mut Uploading,
        parts: &mut Vec<UploadedPart>,
        pass: &mut Option<LanePass>,
    ) -> Result<PartBuffer<PartPermit>, StoreFailure> {
        let permit = loop {
            if let Some(permit) = self.memory.try_take(self.size) {
                break permit;
            }
            let Some(upload_id) = self.upload_id.filter(|_| !uploading.is_empty()) else {
                if self.holding {
                    if pass.is_none() {
                        *pass = Some(self.memory.lane_pass().await);
                    }
                    let pass = pass.as_ref().expect("the pass was just taken");
                    break self.memory.take_lane(pass, self.size).await;
                }
                break self.memory.take_floor(self.size).await;
            };
            if let Some(part) = next_finished(uploading).await? {
                record_part(self.ledger, upload_id, part, parts).await?;
            }
        };
        PartBuffer::new(self.size, permit).map_err(|e| StoreFailure {
            failure: JobFailure::internal(format!("could not map a {} byte part: {e}", self.size)),
            upload_lost: false,
        })
    }
}

/// Waits for the next part upload to finish; `None` when none is uploading.
async fn next_finished(uploading: &mut Uploading) -> Result<Option<UploadedPart>, StoreFailure> {
    uploading.join_next().await.map(joined_part).transpose()
}

fn joined_part(
    joined: Result<Result<UploadedPart, StoreFailure>, tokio::task::JoinError>,
) -> Result<UploadedPart, StoreFailure> {
    joined.unwrap_or_else(|e| {
        Err(StoreFailure {
            failure: JobFailure::internal(format!("a part upload stopped: {e}")),
            upload_lost: false,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc32_of_a_tail_comes_from_the_crc32s_of_the_whole_and_the_head() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for cut in [0, 1, 4096, 77_777, 100_000] {
            let (head, tail) = bytes.split_at(cut);
            let (whole, head_crc) = (crc32fast::hash(&bytes), crc32fast::hash(head));
            assert_eq!(
                crc32_tail(whole, head_crc, tail.len() as u64),
                crc32fast::hash(tail)
            );
            assert_eq!(
                crc32_concat(head_crc, crc32fast::hash(tail), tail.len() as u64),
                whole
            );
        }
    }
}
