//! The central directory as the writer lists entries: its bytes in memory up to `IN_MEMORY`,
//! then moved to an unnamed temporary file (gone once it is closed, also when the worker dies),
//! so a job of a million entries holds a megabyte of it, not ~100 MiB. Where no temporary file
//! can be made (a read-only file system with nothing mounted on the temporary directory), it
//! stays in memory and the worker says so once per job.
//!
//! The file is written and read in place, without the blocking pool: a megabyte at a time, into
//! and out of the page cache, once per ~15,000 entries.

use std::io::{Read, Seek, Write};

use bytes::{Bytes, BytesMut};
use zipkit_zip::format::{self, CentralRecord};

/// Bytes of the directory kept in memory before they move to the file.
pub const IN_MEMORY: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct Directory {
    memory: BytesMut,
    file: Option<std::fs::File>,
    /// No temporary file could be made: everything stays in memory.
    in_memory_only: bool,
    listed: u64,
    /// Its length in bytes, and whether a record needed ZIP64.
    len: u64,
    zip64: bool,
}

impl Directory {
    /// A directory listing `records` already.
    #[cfg(test)]
    pub fn with(records: &[CentralRecord]) -> std::io::Result<Self> {
        let mut directory = Self::default();
        for record in records {
            directory.push(record)?;
        }
        Ok(directory)
    }

    /// How many entries it lists.
    pub fn listed(&self) -> u64 {
        self.listed
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.listed == 0
    }

    /// Whether a record has a value past the classic fields (the archive needs ZIP64 end records).
    pub fn zip64(&self) -> bool {
        self.zip64
    }

    /// Lists one more entry.
    pub fn push(&mut self, record: &CentralRecord) -> std::io::Result<()> {
        let before = self.memory.len();
        format::central_header(&mut self.memory, record);
        self.len += (self.memory.len() - before) as u64;
        self.zip64 |= [record.compressed, record.uncompressed, record.header_offset]
            .iter()
            .any(|v| *v >= format::MAX32);
        self.listed += 1;
        if self.memory.len() >= IN_MEMORY && !self.in_memory_only {
            self.spill()?;
        }
        Ok(())
    }

    /// Moves the bytes in memory to the end of the file, making it first.
    fn spill(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => match tempfile::tempfile() {
                Ok(file) => self.file.insert(file),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        dir = %std::env::temp_dir().display(),
                        "no temporary file for the central directory: it stays in memory \
                         (mount a writable directory on TMPDIR, docs/OPERATIONS.md)"
                    );
                    self.in_memory_only = true;
                    return Ok(());
                }
            },
        };
        file.write_all(&self.memory)?;
        self.memory.clear();
        Ok(())
    }

    /// Its bytes, in order.
    pub fn into_reader(self) -> std::io::Result<DirectoryReader> {
        let file = match self.file {
            Some(mut file) => {
                file.rewind()?;
                Some(file)
            }
            None => None,
        };
        Ok(DirectoryReader {
            file,
            memory: self.memory.freeze(),
        })
    }
}

/// A directory's bytes, read back a chunk at a time.
#[derive(Debug)]
pub struct DirectoryReader {
    file: Option<std::fs::File>,
    memory: Bytes,
}

impl DirectoryReader {
    /// Up to `max` more of its bytes; `None` at the end.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        if let Some(file) = &mut self.file {
            let mut chunk = vec![0; max];
            let read = file.read(&mut chunk)?;
            if read > 0 {
                chunk.truncate(read);
                return Ok(Some(chunk.into()));
            }
            self.file = None;
        }
        if self.memory.is_empty() {
            return Ok(None);
        }
        let take = max.min(self.memory.len());
        Ok(Some(self.memory.split_to(take)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zipkit_zip::format::{EntryTime, Method};

    fn record(i: u64) -> CentralRecord {
        CentralRecord {
            name: Bytes::from(format!("folder-{:03}/entry-{i:07}.bin", i / 1000)),
            method: if i.is_multiple_of(3) {
                Method::Deflated
            } else {
                Method::Stored
            },
            modified: EntryTime::default(),
            crc32: (i * 2_654_435_761) as u32,
            compressed: i * 10,
            uncompressed: i * 13,
            header_offset: i * 4_000_000,
        }
    }

    #[test]
    fn a_directory_larger_than_its_memory_reads_back_as_the_bytes_it_lists() {
        // ~100 bytes a record: ~5 MiB, most of it in the file.
        let records: Vec<CentralRecord> = (0..50_000).map(record).collect();
        let mut expected = BytesMut::new();
        for r in &records {
            format::central_header(&mut expected, r);
        }
        let (kept, added) = records.split_at(20_000);
        let mut directory = Directory::with(kept).unwrap();
        for r in added {
            directory.push(r).unwrap();
        }
        assert_eq!(directory.listed(), 50_000);
        assert!(directory.file.is_some(), "spilled to a file");
        assert!(directory.memory.len() < IN_MEMORY);

        let mut reader = directory.into_reader().unwrap();
        let mut read = Vec::new();
        while let Some(chunk) = reader.next_chunk(300_000).unwrap() {
            assert!(!chunk.is_empty() && chunk.len() <= 300_000);
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read.len(), expected.len());
        assert!(read == expected[..], "the same bytes in the same order");
    }

    #[test]
    fn a_small_directory_stays_in_memory() {
        let mut directory = Directory::default();
        directory.push(&record(1)).unwrap();
        assert!(directory.file.is_none());
        let mut reader = directory.into_reader().unwrap();
        let chunk = reader.next_chunk(1 << 20).unwrap().unwrap();
        assert_eq!(
            chunk.len(),
            format::central_header_len(b"folder-000/entry-0000001.bin", 13, 10, 4_000_000)
        );
        assert!(reader.next_chunk(1 << 20).unwrap().is_none());
    }
}
