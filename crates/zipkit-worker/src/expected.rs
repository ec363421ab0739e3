//! The archive's exact size, worked out while it is built (a job's `expected_size`): as soon as
//! nothing but a skipped source can change it. Entries written are counted with their actual
//! sizes; the entry being written counts when it is stored and its source gave its length; the
//! sources not reached yet count when each is stored by its name and its size was given
//! (`PlannedEntry::certain`): the job's `CertainTail`. A deflated entry counts once it is
//! compressed. A skipped source makes the size be worked out again.

use std::collections::VecDeque;
use std::sync::Arc;

use zipkit_domain::Compression;
use zipkit_zip::format::{Method, NameCost};
use zipkit_zip::layout::{Layouter, PlannedEntry};

use crate::archive::directory::Directory;
use crate::archive::{Placement, WrittenSoFar};

/// The sources at the end of a job that are all certain (`PlannedEntry::certain`), as the size
/// needs them: 16 bytes each, not the sources themselves, so a job of a million keeps 16 MiB
/// at most (none when its last source is not certain).
#[derive(Debug, Default)]
pub struct CertainTail {
    /// The last source that is not certain: the size can be known once a build reaches it.
    last_uncertain: Option<i32>,
    /// The certain sources after it, in order.
    entries: Vec<TailEntry>,
}

#[derive(Debug, Clone, Copy)]
struct TailEntry {
    index: i32,
    name: NameCost,
    length: u64,
}

impl CertainTail {
    /// Counts the job's next source, in order.
    pub fn push(&mut self, compression: Compression, index: i32, name: &str, size: Option<u64>) {
        match PlannedEntry::certain(compression, name, size) {
            Some(planned) => self.entries.push(TailEntry {
                index,
                name: NameCost::of(name.as_bytes()),
                length: planned.length,
            }),
            None => {
                self.last_uncertain = Some(index);
                self.entries.clear();
            }
        }
    }

    /// Gives back what the longest run before the last uncertain source took.
    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit();
    }
}

/// An entry in the archive whose bytes are not all out yet.
#[derive(Debug)]
struct Open {
    entry: i32,
    name: NameCost,
    zip64: bool,
    length: Option<u64>,
    /// Known for a stored entry with its length; for a deflated one once it is placed.
    compressed: Option<u64>,
    finished: bool,
}

#[derive(Debug)]
pub struct ExpectedSize {
    tail: Arc<CertainTail>,
    /// The last source this build has reached (started, skipped or continued), or the last one
    /// an earlier build kept.
    reached: i32,
    /// The entries whose bytes are all out, with their sizes, in archive order.
    settled: Layouter,
    open: VecDeque<Open>,
    known: Option<u64>,
    /// A source was skipped since `known` was worked out.
    stale: bool,
}

/// What the layout needs of a directory written so far.
fn listed(directory: &Directory) -> (u64, u64, bool) {
    (directory.listed(), directory.len(), directory.zip64())
}

impl ExpectedSize {
    /// For a build that takes the sources after entry `after` and continues the archive
    /// `written` (`after` -1 and `written` empty for a new one).
    pub fn new(tail: Arc<CertainTail>, after: i32, written: &WrittenSoFar) -> Self {
        let mut open = VecDeque::new();
        let settled = match &written.open {
            // The continued entry's header is in the archive; its length is known when it ends.
            Some(o) => {
                open.push_back(Open {
                    entry: o.entry,
                    name: NameCost::of(&o.name),
                    zip64: o.zip64,
                    length: None,
                    compressed: None,
                    finished: false,
                });
                Layouter::after(o.header_offset, listed(&written.directory))
            }
            None => Layouter::after(written.offset, listed(&written.directory)),
        };
        let mut expected = Self {
            tail,
            reached: after,
            settled,
            open,
            known: None,
            stale: false,
        };
        if let Some(o) = &written.open {
            expected.reach(o.entry);
        }
        expected
    }

    fn reach(&mut self, entry: i32) {
        self.reached = self.reached.max(entry);
    }

    /// An entry started in the archive; `length` is its source's, if it gave one.
    pub fn started(
        &mut self,
        (entry, name): (i32, &str),
        method: Method,
        zip64: bool,
        length: Option<u64>,
    ) {
        self.reach(entry);
        self.open.push_back(Open {
            entry,
            name: NameCost::of(name.as_bytes()),
            zip64,
            length,
            compressed: length.filter(|_| method == Method::Stored),
            finished: false,
        });
    }

    /// An entry's last byte went in: `size` bytes of its source.
    pub fn finished(&mut self, entry: i32, method: Method, size: u64) {
        if let Some(open) = self.open.iter_mut().rev().find(|o| o.entry == entry) {
            open.length = Some(size);
            if method == Method::Stored {
                open.compressed = Some(size);
            }
            open.finished = true;
        }
    }

    /// A source was left out, before or after its entry started.
    pub fn skipped(&mut self, entry: i32) {
        self.reach(entry);
        self.open.retain(|o| o.entry != entry);
        self.stale = true;
    }

    /// Entries whose bytes went out: a deflated one's compressed size is known.
    pub fn placed(&mut self, placed: &[Placement]) {
        for p in placed {
            let Some(end) = p.end else { continue };
            if let Some(open) = self.open.iter_mut().find(|o| o.entry == p.entry) {
                open.compressed = Some(end.compressed);
            }
        }
    }

    /// The size, when it is newly known or changed since the last call.
    pub fn update(&mut self) -> Option<u64> {
        while let Some(front) = self.open.front() {
            match (front.finished, front.length, front.compressed) {
                (true, Some(length), Some(compressed)) => {
                    self.settled
                        .add_written(front.name, front.zip64, length, compressed);
                    self.open.pop_front();
                }
                _ => break,
            }
        }
        if self.known.is_some() && !self.stale {
            return None;
        }
        let rest_certain = self
            .tail
            .last_uncertain
            .is_none_or(|last| last <= self.reached);
        if !rest_certain || self.open.iter().any(|o| o.compressed.is_none()) {
            return None;
        }
        let mut laid = self.settled.clone();
        for open in &self.open {
            let compressed = open.compressed.unwrap_or_default();
            let length = open.length.unwrap_or(compressed);
            laid.add_written(open.name, open.zip64, length, compressed);
        }
        let entries = &self.tail.entries;
        let unreached = entries.partition_point(|t| t.index <= self.reached);
        for t in &entries[unreached..] {
            laid.add_certain(t.name, t.length);
        }
        self.stale = false;
        let laid = laid.layout();
        // Every source left out: no archive is written (`all_sources_skipped`).
        if laid.entries == 0 {
            return None;
        }
        let size = laid.size;
        (self.known != Some(size)).then(|| {
            self.known = Some(size);
            size
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::deflate::Compressors;
    use crate::archive::{ArchiveOptions, ArchiveWriter, EntryTime, Piece, assemble};
    use bytes::Bytes;
    use tokio::sync::mpsc;
    use zipkit_zip::format;

    fn tail(compression: Compression, sources: &[(i32, &str, Option<u64>)]) -> Arc<CertainTail> {
        let mut tail = CertainTail::default();
        for (index, name, size) in sources {
            tail.push(compression, *index, name, *size);
        }
        Arc::new(tail)
    }

    /// Feeds the writer's placements to `expected` and notes each size it reports.
    fn report(writer: &mut ArchiveWriter, expected: &mut ExpectedSize, seen: &mut Vec<u64>) {
        expected.placed(&writer.take_placed());
        seen.extend(expected.update());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_size_is_known_once_the_rest_is_certain_and_follows_a_skipped_source() {
        let text = Bytes::from("a line of text, repeated\n".repeat(8_000));
        let noise: Vec<u8> = (0..300_000u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // `auto`: the text is deflated (its name does not decide, so it is not certain), the
        // photos are stored by their names with their sizes given.
        let sources = [
            (0, "notes.txt", None),
            (1, "photo.jpg", Some(300_000)),
            (2, "cut.jpg", Some(100_000)),
            (3, "last.jpg", Some(50_000)),
        ];
        let mut expected = ExpectedSize::new(
            tail(Compression::Auto, &sources),
            -1,
            &WrittenSoFar::default(),
        );
        let (out, mut rx) = mpsc::channel::<Piece>(4);
        let collector = tokio::spawn(async move {
            let mut pieces = Vec::new();
            while let Some(piece) = rx.recv().await {
                pieces.push(piece);
            }
            assemble(pieces)
        });
        let mut writer = ArchiveWriter::new(
            ArchiveOptions { level: 6 },
            Compressors::new(2).unwrap(),
            out,
        );
        let mut seen = Vec::new();
        let start = async |writer: &mut ArchiveWriter, id: i32, name: &str, method: Method| {
            // Room for ZIP64 as the worker decides it: by the length, if known.
            let length = sources[id as usize].2;
            let zip64 = format::needs_zip64_room(length, 0);
            writer
                .start_entry(id, name, method, EntryTime::default(), zip64, false)
                .await
                .unwrap();
        };

        // The deflated entry: nothing is certain until it is compressed.
        start(&mut writer, 0, "notes.txt", Method::Deflated).await;
        expected.started((0, "notes.txt"), Method::Deflated, true, None);
        writer.write(text.clone()).await.unwrap();
        report(&mut writer, &mut expected, &mut seen);
        assert!(
            seen.is_empty(),
            "known before the deflated entry is compressed"
        );
        let summary = writer.finish_entry().await.unwrap();
        expected.finished(0, Method::Deflated, summary.size);
        report(&mut writer, &mut expected, &mut seen);
        // Its block compresses on the pool; its bytes go out with the next entry's: then the
        // size is certain.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        start(&mut writer, 1, "photo.jpg", Method::Stored).await;
        expected.started((1, "photo.jpg"), Method::Stored, false, Some(300_000));
        for chunk in noise.chunks(64 * 1024) {
            writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
            report(&mut writer, &mut expected, &mut seen);
        }
        writer.finish_entry().await.unwrap();
        expected.finished(1, Method::Stored, 300_000);
        report(&mut writer, &mut expected, &mut seen);
        assert_eq!(seen.len(), 1, "{seen:?}");

        // A source that fails part way is left out: the size is worked out again.
        start(&mut writer, 2, "cut.jpg", Method::Stored).await;
        expected.started((2, "cut.jpg"), Method::Stored, false, Some(100_000));
        writer
            .write(Bytes::copy_from_slice(&noise[..40_000]))
            .await
            .unwrap();
        report(&mut writer, &mut expected, &mut seen);
        writer.abandon_entry().await.unwrap();
        expected.skipped(2);
        report(&mut writer, &mut expected, &mut seen);
        assert_eq!(seen.len(), 2, "{seen:?}");

        start(&mut writer, 3, "last.jpg", Method::Stored).await;
        expected.started((3, "last.jpg"), Method::Stored, false, Some(50_000));
        writer
            .write(Bytes::copy_from_slice(&noise[..50_000]))
            .await
            .unwrap();
        report(&mut writer, &mut expected, &mut seen);
        writer.finish_entry().await.unwrap();
        expected.finished(3, Method::Stored, 50_000);
        report(&mut writer, &mut expected, &mut seen);
        let finished = writer.finish().await.unwrap();
        expected.placed(&finished.placed);
        seen.extend(expected.update());
        let archive = collector.await.unwrap();

        assert_eq!(archive.len() as u64, finished.size);
        assert_eq!(seen, [seen[0], finished.size], "no change after the skip");
        let cut = format::local_header_len(b"cut.jpg", false)
            + format::central_header_len(b"cut.jpg", 100_000, 100_000, 0);
        assert_eq!(seen[0], finished.size + 100_000 + cut as u64);
    }

    #[test]
    fn a_build_taken_over_counts_what_the_earlier_build_wrote() {
        // Continuing an open stored entry: its length is known when it ends; the rest is
        // certain.
        let sources = [(4, "open.bin", None), (5, "next.bin", Some(10))];
        let record = format::CentralRecord {
            name: Bytes::from_static(b"kept.bin"),
            method: Method::Stored,
            modified: EntryTime::default(),
            crc32: 0,
            compressed: 1000,
            uncompressed: 1000,
            header_offset: 0,
        };
        let header_offset = format::local_header_len(b"kept.bin", false) as u64 + 1000;
        let written = WrittenSoFar {
            offset: header_offset + 500,
            crc32: 0,
            directory: Directory::with(std::slice::from_ref(&record)).unwrap(),
            open: Some(crate::archive::OpenSoFar {
                entry: 4,
                name: Bytes::from_static(b"open.bin"),
                zip64: true,
                header_offset,
                data_start: header_offset + 80,
                size: 400,
                crc32: 0,
                modified: EntryTime::default(),
                header: Bytes::new(),
            }),
        };
        let mut expected = ExpectedSize::new(tail(Compression::Store, &sources), 3, &written);
        assert_eq!(
            expected.update(),
            None,
            "the open entry's length is unknown"
        );
        expected.finished(4, Method::Stored, 2000);
        let mut laid = Layouter::default();
        laid.add_written(NameCost::of(b"kept.bin"), false, 1000, 1000);
        laid.add_written(NameCost::of(b"open.bin"), true, 2000, 2000);
        laid.add_planned(PlannedEntry {
            name: "next.bin",
            method: Method::Stored,
            length: 10,
        });
        assert_eq!(expected.update(), Some(laid.layout().size));
        assert_eq!(expected.update(), None, "reported once");
    }

    #[test]
    fn no_size_is_given_for_an_archive_of_nothing() {
        let sources = [(0, "a.jpg", Some(5)), (1, "b.jpg", Some(7))];
        let mut expected = ExpectedSize::new(
            tail(Compression::Store, &sources),
            -1,
            &WrittenSoFar::default(),
        );
        expected.skipped(0);
        assert!(expected.update().is_some(), "the other source is certain");
        expected.skipped(1);
        assert_eq!(expected.update(), None);
    }
}
