//! The archive's exact size, worked out while it is built (a job's `expected_size`): as soon as
//! nothing but a skipped source can change it. Entries written are counted with their actual
//! sizes; the entry being written counts when it is stored and its source gave its length; the
//! sources not reached yet count when each is stored by its name and its size was given
//! (`PlannedEntry::certain`). A deflated entry counts once it is compressed. A skipped source
//! makes the size be worked out again.

use std::collections::VecDeque;
use std::sync::Arc;

use zipkit_domain::Compression;
use zipkit_zip::format::Method;
use zipkit_zip::layout::{Layouter, PlannedEntry};

use crate::archive::{Placement, WrittenSoFar};
use crate::prefetch::Source;

/// An entry in the archive whose bytes are not all out yet.
#[derive(Debug)]
struct Open {
    entry: i32,
    name: Box<str>,
    zip64: bool,
    length: Option<u64>,
    /// Known for a stored entry with its length; for a deflated one once it is placed.
    compressed: Option<u64>,
    finished: bool,
}

#[derive(Debug)]
pub struct ExpectedSize {
    compression: Compression,
    /// The sources this build takes, in order.
    sources: Arc<[Source]>,
    /// How many of them it has reached (started, skipped or continued).
    reached: usize,
    /// From this source on, every one is certain.
    certain_from: usize,
    /// The entries whose bytes are all out, with their sizes, in archive order.
    settled: Layouter,
    open: VecDeque<Open>,
    known: Option<u64>,
    /// A source was skipped since `known` was worked out.
    stale: bool,
}

impl ExpectedSize {
    /// For a build of `sources` that continues the archive `written` (empty for a new one).
    pub fn new(compression: Compression, sources: Arc<[Source]>, written: &WrittenSoFar) -> Self {
        let certain = |s: &Source| {
            PlannedEntry::certain(compression, s.filename.as_str(), s.declared_size).is_some()
        };
        let certain_from = sources.len() - sources.iter().rev().take_while(|s| certain(s)).count();
        let mut open = VecDeque::new();
        let settled = match &written.open {
            // The continued entry's header is in the archive; its length is known when it ends.
            Some(o) => {
                open.push_back(Open {
                    entry: o.entry,
                    name: String::from_utf8_lossy(&o.name).into(),
                    zip64: o.zip64,
                    length: None,
                    compressed: None,
                    finished: false,
                });
                Layouter::after(o.header_offset, &written.directory)
            }
            None => Layouter::after(written.offset, &written.directory),
        };
        let mut expected = Self {
            compression,
            sources,
            reached: 0,
            certain_from,
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
        let at = self.sources.partition_point(|s| s.index <= entry);
        self.reached = self.reached.max(at);
    }

    /// An entry started in the archive; `length` is its source's, if it gave one.
    pub fn started(&mut self, entry: i32, method: Method, zip64: bool, length: Option<u64>) {
        self.reach(entry);
        let name = match self.sources.binary_search_by_key(&entry, |s| s.index) {
            Ok(at) => self.sources[at].filename.as_str().into(),
            Err(_) => Box::default(),
        };
        self.open.push_back(Open {
            entry,
            name,
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
                    self.settled.add_written(
                        front.name.as_bytes(),
                        front.zip64,
                        length,
                        compressed,
                    );
                    self.open.pop_front();
                }
                _ => break,
            }
        }
        if self.known.is_some() && !self.stale {
            return None;
        }
        let rest_certain = self.reached >= self.certain_from;
        if !rest_certain || self.open.iter().any(|o| o.compressed.is_none()) {
            return None;
        }
        let mut laid = self.settled.clone();
        for open in &self.open {
            let compressed = open.compressed.unwrap_or_default();
            let length = open.length.unwrap_or(compressed);
            laid.add_written(open.name.as_bytes(), open.zip64, length, compressed);
        }
        for source in &self.sources[self.reached..] {
            if let Some(planned) = PlannedEntry::certain(
                self.compression,
                source.filename.as_str(),
                source.declared_size,
            ) {
                laid.add_planned(planned);
            }
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
    use zipkit_domain::values::{EntryName, SourceUrl};
    use zipkit_zip::format;

    fn source(index: i32, filename: &str, declared_size: Option<u64>) -> Source {
        Source {
            index,
            url: SourceUrl::parse(&format!("https://example.com/{index}")).unwrap(),
            filename: EntryName::parse(filename).unwrap(),
            modified_at: None,
            declared_size,
            copy: false,
        }
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
        let sources: Arc<[Source]> = Arc::from(vec![
            source(0, "notes.txt", None),
            source(1, "photo.jpg", Some(300_000)),
            source(2, "cut.jpg", Some(100_000)),
            source(3, "last.jpg", Some(50_000)),
        ]);
        let mut expected =
            ExpectedSize::new(Compression::Auto, sources.clone(), &WrittenSoFar::default());
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
            let length = sources[id as usize].declared_size;
            let zip64 = format::needs_zip64_room(length, 0);
            writer
                .start_entry(id, name, method, EntryTime::default(), zip64, false)
                .await
                .unwrap();
        };

        // The deflated entry: nothing is certain until it is compressed.
        start(&mut writer, 0, "notes.txt", Method::Deflated).await;
        expected.started(0, Method::Deflated, true, None);
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
        expected.started(1, Method::Stored, false, Some(300_000));
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
        expected.started(2, Method::Stored, false, Some(100_000));
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
        expected.started(3, Method::Stored, false, Some(50_000));
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
        let sources: Arc<[Source]> = Arc::from(vec![
            source(4, "open.bin", None),
            source(5, "next.bin", Some(10)),
        ]);
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
            directory: vec![record.clone()],
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
        let mut expected = ExpectedSize::new(Compression::Store, sources, &written);
        assert_eq!(
            expected.update(),
            None,
            "the open entry's length is unknown"
        );
        expected.finished(4, Method::Stored, 2000);
        let mut laid = Layouter::default();
        laid.add_written(b"kept.bin", false, 1000, 1000);
        laid.add_written(b"open.bin", true, 2000, 2000);
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
        let sources: Arc<[Source]> = Arc::from(vec![
            source(0, "a.jpg", Some(5)),
            source(1, "b.jpg", Some(7)),
        ]);
        let mut expected = ExpectedSize::new(Compression::Store, sources, &WrittenSoFar::default());
        expected.skipped(0);
        assert!(expected.update().is_some(), "the other source is certain");
        expected.skipped(1);
        assert_eq!(expected.update(), None);
    }
}
