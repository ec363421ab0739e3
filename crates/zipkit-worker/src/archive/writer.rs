//! The streaming archive writer. Entries go in one after another; the archive comes out, in
//! order, through a bounded channel to the uploader. Deflated entries are cut into blocks that
//! compress on the blocking pool while later bytes (and later entries) keep arriving, so every
//! core works; what waits for a block is kept in a queue bounded by block count and bytes, so
//! memory stays bounded whatever the archive size.
//!
//! Each entry's local header goes out with zeros for its CRC-32 and sizes (`Piece::Header`) and,
//! once its last byte is out, again with them (`Piece::Patch`): the uploader holds the part the
//! header is in until then, so the archive in the bucket has no data descriptors.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::deflate::{BLOCK, CompressedBlock, Compressors, WINDOW};
use super::directory::Directory;
use zipkit_zip::format::{self, CentralRecord, EntryTime, LocalHeader, Method, ZIP64_THRESHOLD};
use zipkit_zip::parts::PartCuts;

/// What the writer hands the uploader, in archive order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The archive's next bytes.
    Bytes(Bytes),
    /// The archive's next bytes are an entry's local header without its values yet: the part
    /// they fall in must not reach the store, nor be compared with one there, before the
    /// `Patch` that follows.
    Header(Bytes),
    /// The final bytes of the last `Header`, as long as it, to be written over it.
    Patch(Bytes),
    /// The last `Header` and everything after it are void (its entry was left out: its source
    /// failed, `on_error: skip`); the archive goes on from where that header began.
    Rewind,
    /// The archive's next bytes are a range of an object in the destination's store, to be
    /// copied there as a part of its own (UploadPartCopy) instead of sent.
    Copy(CopiedRange),
}

/// A range of an object in the store the archive goes to, which the store copies into the
/// archive: the object's bytes from `start`, `len` of them, whose CRC-32 is `crc32`, as long as
/// the object still has the ETag `etag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedRange {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub start: u64,
    pub len: u64,
    pub crc32: u32,
}

/// Output is handed to the uploader in chunks of about this size: pieces of a quarter of it or
/// more go as they are, smaller ones are gathered. Small enough that the gathering buffer is an
/// ordinary heap block the allocator reuses (below the mmap threshold, zipkit_runtime::allocator).
const OUTPUT_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the uploader stopped taking the archive")]
    OutputClosed,
    #[error("compressing failed: {0}")]
    Compress(#[from] std::io::Error),
    #[error("a compression task failed")]
    Task(#[from] tokio::sync::oneshot::error::RecvError),
    #[error("entry {0:?} is over 4 GiB but was started without ZIP64 fields")]
    EntryTooLarge(String),
    #[error("no entry is open")]
    NoEntry,
    /// Continuing an entry an earlier build finished: its CRC-32 or size came out different
    /// from those in the header already in the bucket (its source changed).
    #[error("entry {0:?} came out different from the earlier build's")]
    Changed(String),
    /// A range can be copied only into a stored entry, by a writer that knows where the
    /// upload's parts are cut (`with_cuts`), with nothing queued before it.
    #[error("a range cannot be copied here: {0}")]
    NoCopy(&'static str),
    /// The central directory's temporary file failed (`directory`).
    #[error("keeping the central directory: {0}")]
    Directory(std::io::Error),
}

/// How the writer compresses.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveOptions {
    /// Deflate level, 1 (fastest) to 9 (smallest).
    pub level: u32,
}

/// What was written for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntrySummary {
    pub size: u64,
    pub crc32: u32,
}

/// Where an entry's bytes landed: its local header (`offset`, and what it says), announced as
/// it goes out when the caller asked (`start_entry`), and, once its last byte is out, the
/// end of those bytes and the CRC-32 of the whole archive up to there. A build taken over
/// by another worker starts after the last entry placed in parts already uploaded, or inside a
/// stored entry whose start was announced (`ArchiveWriter::resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The caller's id for the entry (`start_entry`).
    pub entry: i32,
    pub offset: u64,
    pub method: Method,
    pub zip64: bool,
    /// The time in its headers.
    pub modified: EntryTime,
    pub end: Option<PlacedEnd>,
}

/// The end of an entry's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedEnd {
    pub end: u64,
    pub compressed: u64,
    pub archive_crc32: u32,
}

/// The state of an archive written up to `offset` by an earlier build: where the next byte
/// goes, the CRC-32 of the bytes before it, the central directory records of the entries
/// listed so far, and the stored entry still open there, if any.
#[derive(Debug, Default)]
pub struct WrittenSoFar {
    pub offset: u64,
    pub crc32: u32,
    pub directory: Directory,
    pub open: Option<OpenSoFar>,
}

/// A stored entry an earlier build was writing at `WrittenSoFar::offset`: its header, where its
/// data starts, and the size and CRC-32 of its bytes written so far. Its header is in the bucket
/// with its final values (`header`): the entry must end with exactly those.
#[derive(Debug, Clone)]
pub struct OpenSoFar {
    pub entry: i32,
    pub name: Bytes,
    pub zip64: bool,
    pub header_offset: u64,
    pub data_start: u64,
    pub size: u64,
    pub crc32: u32,
    pub modified: EntryTime,
    pub header: Bytes,
}

/// How the writer ended: the archive's size and the entries placed since the last
/// `take_placed`.
#[derive(Debug)]
pub struct Finished {
    pub size: u64,
    pub placed: Vec<Placement>,
}

/// Something the output is waiting for, in archive order.
enum Pending {
    Ready(Bytes),
    /// A deflate block queued on or compressing on the pool, and how many input bytes it holds.
    Block(CompressedBlock, usize),
    /// An entry's local header: where it lands is the entry's offset. With the entry's start to
    /// announce (`Placement` without an end).
    Header(LocalHeader, Option<Placement>),
    /// A range the store copies into the archive.
    Copy(CopiedRange),
    /// The end of an entry: its compressed size is what went out since its header, which is
    /// then written again with its values.
    End(Box<EntryEnd>),
}

struct EntryEnd {
    entry: i32,
    header: LocalHeader,
    crc32: u32,
    uncompressed: u64,
    /// Continued from an earlier build: the header the bucket has.
    continued: Option<Bytes>,
}

/// The length of the local header that went out without its values, and the CRC-32 of what
/// followed it.
struct Unpatched {
    len: usize,
    after: crc32fast::Hasher,
}

struct OpenEntry {
    entry: i32,
    name: Bytes,
    method: Method,
    modified: EntryTime,
    zip64: bool,
    /// Continued from an earlier build: the header the bucket has.
    continued: Option<Bytes>,
    crc: crc32fast::Hasher,
    size: u64,
    /// Deflate input not yet cut into a block.
    block: BytesMut,
    /// The tail of the previous block, priming the next one.
    dictionary: Bytes,
}

pub struct ArchiveWriter {
    options: ArchiveOptions,
    compressors: Compressors,
    /// Blocks this archive keeps queued: two per compressing thread, so a thread that finishes
    /// one finds the next waiting while the finished one is written out.
    max_blocks: usize,
    out: mpsc::Sender<Piece>,
    buffer: BytesMut,
    queue: VecDeque<Pending>,
    blocks_in_queue: usize,
    bytes_in_queue: usize,
    offset: u64,
    /// CRC-32 of the archive's final bytes so far (recorded with each `Placement`): up to the
    /// header still without its values, if one is, whose bytes and those after it are counted
    /// in `unpatched` until its values are known.
    crc: crc32fast::Hasher,
    unpatched: Option<Unpatched>,
    /// Offsets of the entry being drained: its local header and its first data byte.
    draining: (u64, u64),
    /// Entries whose bytes are all out, not yet taken by the caller.
    placed: Vec<Placement>,
    open: Option<OpenEntry>,
    /// The central directory so far, as its bytes (about 100 per entry), past the first
    /// megabyte in a temporary file.
    directory: Directory,
    /// Where the upload's parts are cut, when some may be copied (`with_cuts`); and as they were
    /// where the last header went out, for an entry left out after it.
    cuts: Option<PartCuts>,
    cuts_at_header: Option<PartCuts>,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("offset", &self.offset)
            .field("entries", &self.directory.listed())
            .finish_non_exhaustive()
    }
}

impl ArchiveWriter {
    pub fn new(
        options: ArchiveOptions,
        compressors: Compressors,
        out: mpsc::Sender<Piece>,
    ) -> Self {
        Self::resume(options, compressors, out, WrittenSoFar::default())
    }

    /// A writer that continues an archive an earlier build wrote up to `so_far.offset`: its
    /// output starts there, and the central directory already lists `so_far.directory`.
    pub fn resume(
        options: ArchiveOptions,
        compressors: Compressors,
        out: mpsc::Sender<Piece>,
        so_far: WrittenSoFar,
    ) -> Self {
        let draining = so_far
            .open
            .as_ref()
            .map_or((so_far.offset, so_far.offset), |o| {
                (o.header_offset, o.data_start)
            });
        let open = so_far.open.map(|o| OpenEntry {
            entry: o.entry,
            name: o.name,
            method: Method::Stored,
            modified: o.modified,
            zip64: o.zip64,
            continued: Some(o.header),
            crc: crc32fast::Hasher::new_with_initial_len(o.crc32, o.size),
            size: o.size,
            block: BytesMut::new(),
            dictionary: Bytes::new(),
        });
        Self {
            options,
            max_blocks: compressors.threads() * 2,
            compressors,
            out,
            buffer: BytesMut::with_capacity(OUTPUT_CHUNK + OUTPUT_CHUNK / 4),
            queue: VecDeque::new(),
            blocks_in_queue: 0,
            bytes_in_queue: 0,
            offset: so_far.offset,
            crc: crc32fast::Hasher::new_with_initial_len(so_far.crc32, so_far.offset),
            unpatched: None,
            draining,
            placed: Vec::new(),
            open,
            directory: so_far.directory,
            cuts: None,
            cuts_at_header: None,
        }
    }

    /// Lets stored entries have ranges copied into them (`copy`), the upload's parts being cut
    /// as `cuts` says from where this writer starts.
    pub fn with_cuts(mut self, cuts: PartCuts) -> Self {
        self.cuts = Some(cuts);
        self
    }

    /// Writes out everything queued (waiting for blocks still compressing), so that the next
    /// byte's offset is the writer's.
    pub async fn settle(&mut self) -> Result<(), ArchiveError> {
        while !self.queue.is_empty() {
            self.drain_one().await?;
        }
        Ok(())
    }

    /// For the stored entry just started, with nothing queued: how many of its first bytes to
    /// write before copying the rest in `copies` ranges, so the part they end is large enough
    /// (`PartCuts`).
    pub fn head_before_copy(&mut self, copies: u64) -> Result<u64, ArchiveError> {
        if !self.queue.is_empty() {
            return Err(ArchiveError::NoCopy("output is still queued"));
        }
        let cuts = self
            .cuts
            .as_mut()
            .ok_or(ArchiveError::NoCopy("parts are not cut for copies"))?;
        cuts.head_before_copy(self.offset, copies)
            .ok_or(ArchiveError::NoCopy("the upload has no part numbers left"))
    }

    /// Adds a range the store copies to the open stored entry (after the bytes written to it
    /// so far).
    pub async fn copy(&mut self, range: CopiedRange) -> Result<(), ArchiveError> {
        if self.cuts.is_none() {
            return Err(ArchiveError::NoCopy("parts are not cut for copies"));
        }
        let entry = self.open.as_mut().ok_or(ArchiveError::NoEntry)?;
        if entry.method != Method::Stored {
            return Err(ArchiveError::NoCopy("the entry is deflated"));
        }
        entry.crc.combine(&crc32fast::Hasher::new_with_initial_len(
            range.crc32,
            range.len,
        ));
        entry.size += range.len;
        if !entry.zip64 && entry.size >= ZIP64_THRESHOLD {
            return Err(ArchiveError::EntryTooLarge(
                String::from_utf8_lossy(&entry.name).into_owned(),
            ));
        }
        self.push(Pending::Copy(range)).await
    }

    /// The entries whose bytes went out since the last call, in archive order.
    pub fn take_placed(&mut self) -> Vec<Placement> {
        std::mem::take(&mut self.placed)
    }

    /// Starts an entry, ending the open one; `entry` is the caller's id for it (`Placement`),
    /// and with `announce` its start is placed as soon as its header is out, not only its end.
    /// `zip64` must be set when it may pass 4 GiB.
    pub async fn start_entry(
        &mut self,
        entry: i32,
        name: &str,
        method: Method,
        modified: EntryTime,
        zip64: bool,
        announce: bool,
    ) -> Result<(), ArchiveError> {
        if self.open.is_some() {
            self.finish_entry().await?;
        }
        let name = Bytes::copy_from_slice(name.as_bytes());
        let header = LocalHeader {
            name: name.clone(),
            method,
            modified,
            zip64,
        };
        let start = announce.then_some(Placement {
            entry,
            offset: 0, // where the header lands, once it does
            method,
            zip64,
            modified,
            end: None,
        });
        self.push(Pending::Header(header, start)).await?;
        self.open = Some(OpenEntry {
            entry,
            name,
            method,
            modified,
            zip64,
            continued: None,
            crc: crc32fast::Hasher::new(),
            size: 0,
            block: BytesMut::new(),
            dictionary: Bytes::new(),
        });
        Ok(())
    }

    /// How the open entry is stored, if one is.
    pub fn open_method(&self) -> Option<Method> {
        self.open.as_ref().map(|o| o.method)
    }

    /// Adds bytes to the open entry.
    pub async fn write(&mut self, data: Bytes) -> Result<(), ArchiveError> {
        let entry = self.open.as_mut().ok_or(ArchiveError::NoEntry)?;
        entry.crc.update(&data);
        entry.size += data.len() as u64;
        if !entry.zip64 && entry.size >= ZIP64_THRESHOLD {
            return Err(ArchiveError::EntryTooLarge(
                String::from_utf8_lossy(&entry.name).into_owned(),
            ));
        }
        match entry.method {
            Method::Stored => self.push(Pending::Ready(data)).await,
            Method::Deflated => {
                let mut data = data;
                while !data.is_empty() {
                    let entry = self.open.as_mut().ok_or(ArchiveError::NoEntry)?;
                    let room = BLOCK - entry.block.len();
                    let take = data.split_to(room.min(data.len()));
                    entry.block.extend_from_slice(&take);
                    if entry.block.len() == BLOCK {
                        self.cut_block(false).await?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Leaves the open entry out of the archive: its source failed after some of its bytes were
    /// written (`on_error: skip`). Not a byte of it stays: if its header is still queued, what
    /// comes before it goes out and it never does; if it went out already, the uploader is told
    /// to drop it and all after it (`Piece::Rewind`; the part it is in was held back), and the
    /// archive continues where it began. An entry continued from an earlier build, whose header
    /// is in the bucket already, cannot be taken back: `Changed`, and the build starts it again.
    pub async fn abandon_entry(&mut self) -> Result<(), ArchiveError> {
        let entry = self.open.take().ok_or(ArchiveError::NoEntry)?;
        if entry.continued.is_some() {
            return Err(ArchiveError::Changed(
                String::from_utf8_lossy(&entry.name).into_owned(),
            ));
        }
        self.placed.retain(|p| p.entry != entry.entry);
        let queued_header = self
            .queue
            .iter()
            .rposition(|p| matches!(p, Pending::Header(..)));
        match queued_header {
            // Everything from its header on is its own.
            Some(at) => self.discard_from(at),
            None => {
                self.discard_from(0);
                self.buffer.clear();
                self.offset = self.draining.0;
                self.cuts = self.cuts_at_header;
                // `crc` covers the archive up to where the header began.
                self.unpatched = None;
                self.send(Piece::Rewind).await?;
            }
        }
        Ok(())
    }

    /// Drops the queue's items from `at` on (blocks still compressing finish on their own).
    fn discard_from(&mut self, at: usize) {
        for item in self.queue.drain(at..) {
            match item {
                Pending::Block(_, size) => {
                    self.blocks_in_queue -= 1;
                    self.bytes_in_queue -= size;
                }
                Pending::Ready(bytes) => self.bytes_in_queue -= bytes.len(),
                Pending::Header(..) | Pending::Copy(_) | Pending::End(_) => {}
            }
        }
    }

    /// Ends the open entry; its size and CRC-32 are known at once, its bytes follow in order.
    pub async fn finish_entry(&mut self) -> Result<EntrySummary, ArchiveError> {
        if self.open.as_ref().ok_or(ArchiveError::NoEntry)?.method == Method::Deflated {
            self.cut_block(true).await?;
        }
        let entry = self.open.take().ok_or(ArchiveError::NoEntry)?;
        let summary = EntrySummary {
            size: entry.size,
            crc32: entry.crc.finalize(),
        };
        self.push(Pending::End(Box::new(EntryEnd {
            entry: entry.entry,
            header: LocalHeader {
                name: entry.name,
                method: entry.method,
                modified: entry.modified,
                zip64: entry.zip64,
            },
            crc32: summary.crc32,
            uncompressed: summary.size,
            continued: entry.continued,
        })))
        .await?;
        Ok(summary)
    }

    /// Ends the archive: the last entry, the central directory and the end records.
    pub async fn finish(mut self) -> Result<Finished, ArchiveError> {
        if self.open.is_some() {
            self.finish_entry().await?;
        }
        while !self.queue.is_empty() {
            self.drain_one().await?;
        }
        let directory_offset = self.offset;
        let listed = self.directory.listed();
        let mut directory = std::mem::take(&mut self.directory)
            .into_reader()
            .map_err(ArchiveError::Directory)?;
        while let Some(piece) = directory
            .next_chunk(OUTPUT_CHUNK)
            .map_err(ArchiveError::Directory)?
        {
            self.emit(piece).await?;
        }
        let directory_size = self.offset - directory_offset;
        let end = format::end_records(listed, directory_offset, directory_size);
        self.emit(end).await?;
        self.flush().await?;
        Ok(Finished {
            size: self.offset,
            placed: self.placed,
        })
    }

    /// Hands the open entry's pending input to the compressing threads as one block.
    async fn cut_block(&mut self, last: bool) -> Result<(), ArchiveError> {
        let level = self.options.level;
        let entry = self.open.as_mut().ok_or(ArchiveError::NoEntry)?;
        let input = entry.block.split().freeze();
        let dictionary = std::mem::replace(
            &mut entry.dictionary,
            input.slice(input.len().saturating_sub(WINDOW)..),
        );
        let size = input.len();
        let block = self.compressors.compress(input, dictionary, level, last);
        self.push(Pending::Block(block, size)).await
    }

    /// Queues output, first draining what is done, then waiting while the queue is full.
    async fn push(&mut self, item: Pending) -> Result<(), ArchiveError> {
        match &item {
            Pending::Block(_, size) => {
                self.blocks_in_queue += 1;
                self.bytes_in_queue += size;
            }
            Pending::Ready(b) => self.bytes_in_queue += b.len(),
            Pending::Header(..) | Pending::Copy(_) | Pending::End(_) => {}
        }
        self.queue.push_back(item);
        while let Some(front) = self.queue.front() {
            let ready = !matches!(front, Pending::Block(block, _) if block.is_empty());
            // Stored bytes queue behind blocks still compressing up to what the blocks themselves
            // may hold: a job mixing stored and deflated entries holds no more than one that
            // only deflates.
            let full = self.blocks_in_queue > self.max_blocks
                || self.bytes_in_queue > self.max_blocks * BLOCK;
            if !ready && !full {
                break;
            }
            self.drain_one().await?;
        }
        Ok(())
    }

    /// Writes the front of the queue, waiting for it if it is a block still compressing.
    async fn drain_one(&mut self) -> Result<(), ArchiveError> {
        let Some(item) = self.queue.pop_front() else {
            return Ok(());
        };
        match item {
            Pending::Ready(bytes) => {
                self.bytes_in_queue -= bytes.len();
                self.emit(bytes).await
            }
            Pending::Block(block, size) => {
                self.blocks_in_queue -= 1;
                self.bytes_in_queue -= size;
                let compressed = block.await??;
                self.emit(compressed).await
            }
            Pending::Header(header, announce) => {
                let start = self.offset;
                self.cuts_at_header = self.cuts;
                let header = header.with_room_at(start);
                self.emit_header(header.placeholder()).await?;
                self.draining = (start, self.offset);
                if let Some(start_only) = announce {
                    self.placed.push(Placement {
                        offset: start,
                        zip64: header.zip64,
                        ..start_only
                    });
                }
                Ok(())
            }
            Pending::Copy(range) => {
                self.flush().await?;
                let at = self.offset;
                self.offset += range.len;
                let copied = crc32fast::Hasher::new_with_initial_len(range.crc32, range.len);
                match &mut self.unpatched {
                    Some(unpatched) => unpatched.after.combine(&copied),
                    None => self.crc.combine(&copied),
                }
                if let Some(cuts) = &mut self.cuts {
                    cuts.copied(at, range.len);
                }
                self.send(Piece::Copy(range)).await
            }
            Pending::End(end) => {
                let (header_offset, data_start) = self.draining;
                let compressed = self.offset - data_start;
                let name = || String::from_utf8_lossy(&end.header.name).into_owned();
                let local = end.header.clone().with_room_at(header_offset);
                if !local.zip64 && compressed >= 0xFFFF_FFFF {
                    return Err(ArchiveError::EntryTooLarge(name()));
                }
                let header =
                    local.final_bytes(end.crc32, compressed, end.uncompressed, header_offset);
                match (&end.continued, self.unpatched.take()) {
                    // The header went out in this build: now with its values.
                    (None, Some(unpatched)) => {
                        debug_assert_eq!(unpatched.len, header.len());
                        self.crc.update(&header);
                        self.crc.combine(&unpatched.after);
                        self.send(Piece::Patch(header)).await?;
                    }
                    (Some(in_bucket), None) if *in_bucket == header => {}
                    (Some(_), None) => return Err(ArchiveError::Changed(name())),
                    (_, Some(_)) | (None, None) => {
                        unreachable!("every entry's header is either written here or continued")
                    }
                }
                let end = *end;
                self.placed.push(Placement {
                    entry: end.entry,
                    offset: header_offset,
                    method: end.header.method,
                    zip64: local.zip64,
                    modified: end.header.modified,
                    end: Some(PlacedEnd {
                        end: self.offset,
                        compressed,
                        archive_crc32: self.crc.clone().finalize(),
                    }),
                });
                self.directory
                    .push(&CentralRecord {
                        name: end.header.name,
                        method: end.header.method,
                        modified: end.header.modified,
                        crc32: end.crc32,
                        compressed,
                        uncompressed: end.uncompressed,
                        header_offset,
                    })
                    .map_err(ArchiveError::Directory)
            }
        }
    }

    /// Sends a local header still without its values, after what is gathered.
    async fn emit_header(&mut self, header: Bytes) -> Result<(), ArchiveError> {
        self.flush().await?;
        self.offset += header.len() as u64;
        self.unpatched = Some(Unpatched {
            len: header.len(),
            after: crc32fast::Hasher::new(),
        });
        self.send(Piece::Header(header)).await
    }

    /// Appends to the output, coalescing small pieces into chunks for the uploader.
    async fn emit(&mut self, bytes: Bytes) -> Result<(), ArchiveError> {
        self.offset += bytes.len() as u64;
        match &mut self.unpatched {
            Some(unpatched) => unpatched.after.update(&bytes),
            None => self.crc.update(&bytes),
        }
        if bytes.len() >= OUTPUT_CHUNK / 4 {
            self.flush().await?;
            return self.send(Piece::Bytes(bytes)).await;
        }
        self.buffer.extend_from_slice(&bytes);
        if self.buffer.len() >= OUTPUT_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ArchiveError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.send(Piece::Bytes(chunk)).await
    }

    async fn send(&mut self, piece: Piece) -> Result<(), ArchiveError> {
        if matches!(&piece, Piece::Bytes(b) if b.is_empty()) {
            return Ok(());
        }
        self.out
            .send(piece)
            .await
            .map_err(|_| ArchiveError::OutputClosed)
    }
}
