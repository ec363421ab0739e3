//! The streaming archive writer. Entries go in one after another; the archive comes out, in
//! order, through a bounded channel to the uploader. Deflated entries are cut into blocks that
//! compress on the blocking pool while later bytes (and later entries) keep arriving, so every
//! core works; what waits for a block is kept in a queue bounded by block count and bytes, so
//! memory stays bounded whatever the archive size.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::deflate::{BLOCK, CompressedBlock, Compressors, WINDOW};
use super::format::{self, CentralRecord, DosTime, Method};

/// Entries that may pass 4 GiB (unknown size, or near the limit) get ZIP64 fields up front.
pub const ZIP64_THRESHOLD: u64 = 0xFFFF_FFFF - 64 * 1024 * 1024;
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
}

/// How the writer compresses.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveOptions {
    /// Deflate level, 1 (fastest) to 9 (smallest).
    pub level: u32,
    /// Timestamp written on every entry.
    pub modified: DosTime,
}

/// What was written for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntrySummary {
    pub size: u64,
    pub crc32: u32,
}

/// Where an entry's bytes landed: its local header (`offset`, and what it says), announced as
/// it goes out when the caller asked (`start_entry`), and, once its data descriptor is out, the
/// end of that descriptor and the CRC-32 of the whole archive up to there. A build taken over
/// by another worker starts after the last entry placed in parts already uploaded, or inside a
/// stored entry whose start was announced (`ArchiveWriter::resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The caller's id for the entry (`start_entry`).
    pub entry: i32,
    pub offset: u64,
    pub method: Method,
    pub zip64: bool,
    pub end: Option<PlacedEnd>,
}

/// The end of an entry's bytes: after its data descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedEnd {
    pub end: u64,
    pub compressed: u64,
    pub archive_crc32: u32,
}

/// The state of an archive written up to `offset` by an earlier build: where the next byte
/// goes, the CRC-32 of the bytes before it, the central directory records of the entries
/// listed so far, and the stored entry still open there, if any.
#[derive(Debug, Clone, Default)]
pub struct WrittenSoFar {
    pub offset: u64,
    pub crc32: u32,
    pub directory: Vec<CentralRecord>,
    pub open: Option<OpenSoFar>,
}

/// A stored entry an earlier build was writing at `WrittenSoFar::offset`: its header, where its
/// data starts, and the size and CRC-32 of its bytes written so far.
#[derive(Debug, Clone)]
pub struct OpenSoFar {
    pub entry: i32,
    pub name: Bytes,
    pub zip64: bool,
    pub header_offset: u64,
    pub data_start: u64,
    pub size: u64,
    pub crc32: u32,
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
    Header(Bytes, Option<Placement>),
    /// The end of an entry: its compressed size is what went out since its header.
    Descriptor(Box<EntryEnd>),
}

struct EntryEnd {
    entry: i32,
    name: Bytes,
    method: Method,
    zip64: bool,
    crc32: u32,
    uncompressed: u64,
    /// Whether the central directory lists it.
    listed: bool,
}

struct OpenEntry {
    entry: i32,
    name: Bytes,
    method: Method,
    zip64: bool,
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
    out: mpsc::Sender<Bytes>,
    buffer: BytesMut,
    queue: VecDeque<Pending>,
    blocks_in_queue: usize,
    bytes_in_queue: usize,
    offset: u64,
    /// CRC-32 of everything emitted so far (recorded with each `Placement`).
    crc: crc32fast::Hasher,
    /// Offsets of the entry being drained: its local header and its first data byte.
    draining: (u64, u64),
    /// Entries whose bytes are all out, not yet taken by the caller.
    placed: Vec<Placement>,
    open: Option<OpenEntry>,
    /// The central directory so far, as its bytes (about 70 per entry: a job of 70,000 entries
    /// kept twice that as records), and how many entries it lists.
    directory: BytesMut,
    listed: u64,
}

impl std::fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("offset", &self.offset)
            .field("entries", &self.listed)
            .finish_non_exhaustive()
    }
}

impl ArchiveWriter {
    pub fn new(
        options: ArchiveOptions,
        compressors: Compressors,
        out: mpsc::Sender<Bytes>,
    ) -> Self {
        Self::resume(options, compressors, out, WrittenSoFar::default())
    }

    /// A writer that continues an archive an earlier build wrote up to `so_far.offset`: its
    /// output starts there, and the central directory already lists `so_far.directory`.
    pub fn resume(
        options: ArchiveOptions,
        compressors: Compressors,
        out: mpsc::Sender<Bytes>,
        so_far: WrittenSoFar,
    ) -> Self {
        let mut directory = BytesMut::new();
        for record in &so_far.directory {
            format::central_header(&mut directory, record);
        }
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
            zip64: o.zip64,
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
            draining,
            placed: Vec::new(),
            open,
            directory,
            listed: so_far.directory.len() as u64,
        }
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
        zip64: bool,
        announce: bool,
    ) -> Result<(), ArchiveError> {
        if self.open.is_some() {
            self.finish_entry().await?;
        }
        let name = Bytes::copy_from_slice(name.as_bytes());
        let header = format::local_header(&name, method, self.options.modified, zip64);
        let start = announce.then_some(Placement {
            entry,
            offset: 0, // where the header lands, once it does
            method,
            zip64,
            end: None,
        });
        self.push(Pending::Header(header, start)).await?;
        self.open = Some(OpenEntry {
            entry,
            name,
            method,
            zip64,
            crc: crc32fast::Hasher::new(),
            size: 0,
            block: BytesMut::new(),
            dictionary: Bytes::new(),
        });
        Ok(())
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

    /// Ends the open entry; its size and CRC-32 are known at once, its bytes follow in order.
    pub async fn finish_entry(&mut self) -> Result<EntrySummary, ArchiveError> {
        self.end_entry(true).await
    }

    /// Ends the open entry and leaves it out of the central directory: its source failed after
    /// some of its bytes were written (`on_error: skip`). The bytes stay in the archive as a
    /// well-formed entry (its deflate stream ended, its data descriptor written) that no reader
    /// of the central directory lists.
    pub async fn abandon_entry(&mut self) -> Result<(), ArchiveError> {
        self.end_entry(false).await.map(drop)
    }

    async fn end_entry(&mut self, listed: bool) -> Result<EntrySummary, ArchiveError> {
        if self.open.as_ref().ok_or(ArchiveError::NoEntry)?.method == Method::Deflated {
            self.cut_block(true).await?;
        }
        let entry = self.open.take().ok_or(ArchiveError::NoEntry)?;
        let summary = EntrySummary {
            size: entry.size,
            crc32: entry.crc.finalize(),
        };
        self.push(Pending::Descriptor(Box::new(EntryEnd {
            entry: entry.entry,
            name: entry.name,
            method: entry.method,
            zip64: entry.zip64,
            crc32: summary.crc32,
            uncompressed: summary.size,
            listed,
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
        let mut directory = std::mem::take(&mut self.directory).freeze();
        while !directory.is_empty() {
            let piece = directory.split_to(OUTPUT_CHUNK.min(directory.len()));
            self.emit(piece).await?;
        }
        let directory_size = self.offset - directory_offset;
        let end = format::end_records(self.listed, directory_offset, directory_size);
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
            Pending::Header(..) | Pending::Descriptor(_) => {}
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
                self.emit(header).await?;
                self.draining = (start, self.offset);
                if let Some(start_only) = announce {
                    self.placed.push(Placement {
                        offset: start,
                        ..start_only
                    });
                }
                Ok(())
            }
            Pending::Descriptor(end) => {
                let (header_offset, data_start) = self.draining;
                let compressed = self.offset - data_start;
                if !end.zip64 && compressed >= 0xFFFF_FFFF {
                    return Err(ArchiveError::EntryTooLarge(
                        String::from_utf8_lossy(&end.name).into_owned(),
                    ));
                }
                let descriptor =
                    format::data_descriptor(end.crc32, compressed, end.uncompressed, end.zip64);
                self.emit(descriptor).await?;
                self.placed.push(Placement {
                    entry: end.entry,
                    offset: header_offset,
                    method: end.method,
                    zip64: end.zip64,
                    end: Some(PlacedEnd {
                        end: self.offset,
                        compressed,
                        archive_crc32: self.crc.clone().finalize(),
                    }),
                });
                if !end.listed {
                    return Ok(());
                }
                self.listed += 1;
                format::central_header(
                    &mut self.directory,
                    &CentralRecord {
                        name: end.name,
                        method: end.method,
                        modified: self.options.modified,
                        crc32: end.crc32,
                        compressed,
                        uncompressed: end.uncompressed,
                        header_offset,
                    },
                );
                Ok(())
            }
        }
    }

    /// Appends to the output, coalescing small pieces into chunks for the uploader.
    async fn emit(&mut self, bytes: Bytes) -> Result<(), ArchiveError> {
        self.offset += bytes.len() as u64;
        self.crc.update(&bytes);
        if bytes.len() >= OUTPUT_CHUNK / 4 {
            self.flush().await?;
            return self.send(bytes).await;
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
        self.send(chunk).await
    }

    async fn send(&mut self, bytes: Bytes) -> Result<(), ArchiveError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.out
            .send(bytes)
            .await
            .map_err(|_| ArchiveError::OutputClosed)
    }
}
