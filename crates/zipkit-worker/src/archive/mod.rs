//! The ZIP archive: `writer` streams entries into an archive through bounded channels, `deflate`
//! compresses blocks on all cores; the records themselves and how each entry is stored come from
//! `zipkit_zip`, which the API's dry run shares.

pub mod deflate;
pub mod directory;
pub mod writer;

pub use writer::{
    ArchiveError, ArchiveOptions, ArchiveWriter, CopiedRange, EntrySummary, Finished, OpenSoFar,
    Piece, PlacedEnd, Placement, WrittenSoFar,
};
pub use zipkit_zip::format::{
    self, CentralRecord, EntryTime, LocalHeader, Method, ZIP64_THRESHOLD,
};
pub use zipkit_zip::method::{HEAD_BYTES, method_for};

/// The archive bytes `pieces` make, each header written over with its values: what the uploader
/// puts in the bucket. For tests and the bench, of archives without copied ranges (their bytes
/// are in the store, not here).
pub fn assemble(pieces: impl IntoIterator<Item = Piece>) -> Vec<u8> {
    let mut archive = Vec::new();
    let mut header_at = None;
    for piece in pieces {
        match piece {
            Piece::Bytes(bytes) => archive.extend_from_slice(&bytes),
            Piece::Header(bytes) => {
                header_at = Some(archive.len());
                archive.extend_from_slice(&bytes);
            }
            Piece::Patch(bytes) => {
                let at = header_at.take().expect("a patch follows its header");
                archive[at..at + bytes.len()].copy_from_slice(&bytes);
            }
            Piece::Rewind => {
                let at = header_at.take().expect("a rewind follows a header");
                archive.truncate(at);
            }
            Piece::Copy(range) => panic!("{range:?} is copied in the store, not assembled here"),
        }
    }
    archive
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::mpsc;
    use zipkit_test_support::readers::{Seen, assert_every_reader_sees};

    /// A fresh writer (level 6, two compressing threads) and what it will have put in the
    /// bucket.
    fn writer_collected() -> (ArchiveWriter, tokio::task::JoinHandle<Vec<u8>>) {
        let (out, rx) = mpsc::channel::<Piece>(4);
        let options = ArchiveOptions { level: 6 };
        let writer = ArchiveWriter::new(options, deflate::Compressors::new(2).unwrap(), out);
        (writer, collect(rx))
    }

    /// What the uploader would put in the bucket from what comes through `rx`.
    fn collect(mut rx: mpsc::Receiver<Piece>) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let mut pieces = Vec::new();
            while let Some(piece) = rx.recv().await {
                pieces.push(piece);
            }
            assemble(pieces)
        })
    }

    /// The archive of `entries`, and its size as the writer counted it.
    async fn build(entries: Vec<(&'static str, Method, Vec<Bytes>)>) -> (Vec<u8>, u64) {
        let (archive, _, size) = resumed_build(&[], &entries, 0, WrittenSoFar::default()).await;
        (archive, size)
    }

    /// Writes `entries` after `so_far` with a writer resumed there (first the rest of the entry
    /// it has open, `open_rest`); returns its output, every placement in order, and the size
    /// the writer counted. Every entry's start is announced.
    async fn resumed_build(
        open_rest: &[u8],
        entries: &[(&'static str, Method, Vec<Bytes>)],
        first_id: i32,
        so_far: WrittenSoFar,
    ) -> (Vec<u8>, Vec<Placement>, u64) {
        let (out, rx) = mpsc::channel::<Piece>(4);
        let collector = collect(rx);
        let options = ArchiveOptions { level: 6 };
        let compressors = deflate::Compressors::new(2).unwrap();
        let mut writer = ArchiveWriter::resume(options, compressors, out, so_far);
        let mut placed = Vec::new();
        for chunk in open_rest.chunks(50_000) {
            writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        for (id, (name, method, chunks)) in (first_id..).zip(entries) {
            writer
                .start_entry(id, name, *method, EntryTime::default(), false, true)
                .await
                .unwrap();
            for chunk in chunks {
                writer.write(chunk.clone()).await.unwrap();
                placed.extend(writer.take_placed());
            }
            placed.extend(writer.take_placed());
        }
        let finished = writer.finish().await.unwrap();
        placed.extend(finished.placed);
        (collector.await.unwrap(), placed, finished.size)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_planned_layout_is_the_archives_size_when_stored_and_a_bound_when_deflated() {
        use zipkit_zip::layout::{PlannedEntry, layout};
        let noise: Vec<u8> = (0..(2 * deflate::BLOCK + 4321) as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let text = "a line of text, repeated\n".repeat(100_000).into_bytes();
        let sources: Vec<(&'static str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("noise.bin", noise),
            ("notes/é.txt", text),
            ("one", vec![7]),
        ];
        for method in [Method::Stored, Method::Deflated] {
            let entries = sources
                .iter()
                .map(|(name, data)| {
                    let chunks = data.chunks(300_000).map(Bytes::copy_from_slice).collect();
                    (*name, method, chunks)
                })
                .collect();
            let (archive, size) = build(entries).await;
            assert_eq!(archive.len() as u64, size);
            let planned = layout(sources.iter().map(|(name, data)| PlannedEntry {
                name,
                method,
                length: data.len() as u64,
            }));
            assert_eq!(planned.entries, 4);
            assert!(!planned.zip64);
            match method {
                Method::Stored => assert!(planned.exact && planned.size == size),
                // Incompressible noise is where a bound is tested: it must still hold.
                Method::Deflated => assert!(
                    !planned.exact && planned.size >= size,
                    "{planned:?} < {size}"
                ),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_resumed_after_any_placed_entry_writes_the_rest_of_the_same_archive() {
        let big: Vec<u8> = (0..(2 * deflate::BLOCK + 999))
            .map(|i| (i % 253) as u8 ^ (i / 3000) as u8)
            .collect();
        let pieces = |b: &[u8]| b.chunks(70_000).map(Bytes::copy_from_slice).collect();
        let entries: Vec<(&'static str, Method, Vec<Bytes>)> = vec![
            (
                "one.txt",
                Method::Deflated,
                vec![Bytes::from("one ".repeat(500))],
            ),
            ("two.bin", Method::Stored, pieces(&big)),
            ("three.bin", Method::Deflated, pieces(&big)),
            ("empty", Method::Stored, vec![]),
            ("five.txt", Method::Deflated, vec![Bytes::from("five")]),
        ];
        let (whole, placed, _) = resumed_build(&[], &entries, 0, WrittenSoFar::default()).await;
        let data = |e: &(&str, Method, Vec<Bytes>)| -> Vec<u8> {
            e.2.iter().flat_map(|c| c.iter().copied()).collect()
        };
        // Each entry's start, then its end.
        assert_eq!(placed.len(), 2 * entries.len());
        let (starts, ends): (Vec<Placement>, Vec<Placement>) =
            placed.iter().partition(|p| p.end.is_none());
        let read = zip::ZipArchive::new(std::io::Cursor::new(whole.clone())).unwrap();
        assert_eq!(read.len(), entries.len());
        for (at, (start, p)) in starts.iter().zip(&ends).enumerate() {
            assert_eq!((start.entry, p.entry), (at as i32, at as i32));
            assert_eq!((start.offset, start.method), (p.offset, p.method));
            let end = p.end.unwrap();
            assert_eq!(
                end.archive_crc32,
                crc32fast::hash(&whole[..end.end as usize])
            );
            assert_eq!(
                &whole[p.offset as usize..p.offset as usize + 4],
                b"PK\x03\x04"
            );
        }
        // What a worker taking over rebuilds from the records of the first `kept` entries.
        let directory = |kept: usize| -> Vec<CentralRecord> {
            entries[..kept]
                .iter()
                .zip(&ends)
                .map(|(e, p)| CentralRecord {
                    name: Bytes::from_static(e.0.as_bytes()),
                    method: e.1,
                    modified: EntryTime::default(),
                    crc32: crc32fast::hash(&data(e)),
                    compressed: p.end.unwrap().compressed,
                    uncompressed: data(e).len() as u64,
                    header_offset: p.offset,
                })
                .collect()
        };
        for kept in 1..entries.len() {
            let last = ends[kept - 1].end.unwrap();
            let so_far = WrittenSoFar {
                offset: last.end,
                crc32: last.archive_crc32,
                directory: directory::Directory::with(&directory(kept)).unwrap(),
                open: None,
            };
            let (rest, ..) = resumed_build(&[], &entries[kept..], kept as i32, so_far).await;
            assert!(
                rest == whole[last.end as usize..],
                "resumed after entry {kept}: the rest differs"
            );
        }
        // Inside the stored two.bin, at a few offsets of its data.
        let header_len = LocalHeader {
            name: Bytes::from_static(b"two.bin"),
            method: Method::Stored,
            modified: EntryTime::default(),
            zip64: false,
        }
        .placeholder()
        .len();
        let data_start = starts[1].offset + header_len as u64;
        for written in [1usize, 70_000, 1_234_567] {
            let at = data_start + written as u64;
            let so_far = WrittenSoFar {
                offset: at,
                crc32: crc32fast::hash(&whole[..at as usize]),
                directory: directory::Directory::with(&directory(1)).unwrap(),
                open: Some(OpenSoFar {
                    entry: 1,
                    name: Bytes::from_static(b"two.bin"),
                    zip64: false,
                    header_offset: starts[1].offset,
                    data_start,
                    size: written as u64,
                    crc32: crc32fast::hash(&big[..written]),
                    modified: EntryTime::default(),
                    header: Bytes::copy_from_slice(
                        &whole[starts[1].offset as usize..data_start as usize],
                    ),
                }),
            };
            let (rest, again, _) = resumed_build(&big[written..], &entries[2..], 2, so_far).await;
            assert!(
                rest == whole[at as usize..],
                "resumed {written} bytes into two.bin: the rest differs"
            );
            assert_eq!(again[0], ends[1], "two.bin's end, placed as before");
        }
    }

    /// The archive of `entries` where the entry at `left_out` fails after `written` of its
    /// bytes (`abandon_entry`).
    async fn build_leaving_out(
        entries: &[(&'static str, Method, Vec<u8>)],
        left_out: usize,
        written: usize,
    ) -> Vec<u8> {
        let (mut writer, collector) = writer_collected();
        for (id, (name, method, data)) in (0..).zip(entries) {
            writer
                .start_entry(id, name, *method, EntryTime::default(), false, false)
                .await
                .unwrap();
            let data = if id as usize == left_out {
                &data[..written]
            } else {
                &data[..]
            };
            for chunk in data.chunks(100_000) {
                writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            if id as usize == left_out {
                writer.abandon_entry().await.unwrap();
            } else {
                writer.finish_entry().await.unwrap();
            }
        }
        writer.finish().await.unwrap();
        collector.await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_left_out_leaves_no_byte_whether_its_header_went_out_or_not() {
        let big: Vec<u8> = (0..(3 * deflate::BLOCK + 5))
            .map(|i| (i % 241) as u8 ^ (i / 5000) as u8)
            .collect();
        let entries = |method| {
            vec![
                ("one.txt", Method::Deflated, b"one ".repeat(300)),
                ("cut.bin", method, big.clone()),
                ("three.txt", Method::Stored, b"three".to_vec()),
            ]
        };
        for method in [Method::Stored, Method::Deflated] {
            let all = entries(method);
            let without = vec![all[0].clone(), all[2].clone()];
            let expected = build_leaving_out(&without, usize::MAX, 0).await;
            // Right after its header, a little in (its header may still be queued behind the
            // blocks before it), and most of it (its header long gone).
            for written in [0, 1_000, 2 * deflate::BLOCK + 7] {
                let archive = build_leaving_out(&all, 1, written).await;
                assert!(
                    archive == expected,
                    "{method:?}, {written} bytes written: the archive differs from one without it"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn room_kept_for_zip64_and_not_needed_is_padding_every_reader_skips() {
        // Sources of unknown length get room for ZIP64 up front; small after all, they keep
        // classic headers with a padding extra field.
        let (mut writer, collector) = writer_collected();
        let entries = [
            ("stored.bin", Method::Stored, b"no length given".repeat(50)),
            ("deflated.txt", Method::Deflated, b"chunked ".repeat(500)),
        ];
        for (id, (name, method, data)) in (0..).zip(&entries) {
            writer
                .start_entry(id, name, *method, EntryTime::default(), true, false)
                .await
                .unwrap();
            writer.write(Bytes::from(data.clone())).await.unwrap();
            writer.finish_entry().await.unwrap();
        }
        writer.finish().await.unwrap();
        let archive = collector.await.unwrap();
        assert_eq!(
            u16::from_le_bytes([archive[4], archive[5]]),
            20,
            "version 2.0"
        );
        let expected: Vec<Seen> = entries.iter().map(|(n, _, d)| Seen::of(n, d)).collect();
        assert_every_reader_sees(&archive, &expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_streams_a_valid_archive_with_multi_block_entries() {
        let big: Vec<u8> = (0..(3 * deflate::BLOCK + 77))
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        let pieces: Vec<Bytes> = big.chunks(100_000).map(Bytes::copy_from_slice).collect();
        let (archive, size) = build(vec![
            (
                "a.txt",
                Method::Deflated,
                vec![Bytes::from("hello ".repeat(1000))],
            ),
            ("dir/é.txt", Method::Stored, vec![Bytes::from("world")]),
            ("empty", Method::Deflated, vec![]),
            ("big.bin", Method::Deflated, pieces),
            ("stored.bin", Method::Stored, vec![Bytes::from(big.clone())]),
        ])
        .await;
        assert_eq!(size as usize, archive.len());
        let mut read = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
        assert_eq!(read.len(), 5);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut read.by_name("dir/é.txt").unwrap(), &mut text).unwrap();
        assert_eq!(text, "world");
        for name in ["big.bin", "stored.bin"] {
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut read.by_name(name).unwrap(), &mut back).unwrap();
            assert_eq!(back, big, "{name}");
        }
        assert_eq!(read.by_name("empty").unwrap().size(), 0);
        assert_eq!(
            read.by_name("big.bin").unwrap().compression(),
            zip::CompressionMethod::Deflated
        );
    }
}
