//! ZIP64 as independent readers see it: an entry over 4 GiB (a generated stream, so nothing this
//! large has to be downloaded) with an entry after it at an offset over 4 GiB, and an archive of
//! more than 65,535 entries. Read by every reader of `zipkit_test_support::readers` (names, sizes,
//! CRCs), and the local headers checked with Python.

use std::io::{Seek, SeekFrom, Write};

use bytes::Bytes;
use tokio::sync::mpsc;
use zipkit_test_support::readers::{Seen, assert_every_reader_sees_file};
use zipkit_worker::archive::deflate::Compressors;
use zipkit_worker::archive::{ArchiveOptions, ArchiveWriter, EntryTime, Method, Piece};

/// Runs `build` against a writer whose archive goes to a temporary file; returns its path.
async fn archive_to_file<F>(build: F) -> std::path::PathBuf
where
    F: AsyncFnOnce(&mut ArchiveWriter),
{
    let path =
        std::env::temp_dir().join(format!("zipkit-zip64-{}.zip", zipkit_domain::ZipId::new()));
    let (tx, mut rx) = mpsc::channel::<Piece>(8);
    let file_path = path.clone();
    // Headers written over with their values, as the uploader does in the bucket.
    let sink = tokio::task::spawn_blocking(move || {
        let mut file = std::io::BufWriter::new(std::fs::File::create(file_path).unwrap());
        let (mut written, mut header_at) = (0u64, 0u64);
        while let Some(piece) = rx.blocking_recv() {
            match piece {
                Piece::Bytes(bytes) => {
                    file.write_all(&bytes).unwrap();
                    written += bytes.len() as u64;
                }
                Piece::Header(bytes) => {
                    header_at = written;
                    file.write_all(&bytes).unwrap();
                    written += bytes.len() as u64;
                }
                Piece::Patch(bytes) => {
                    file.seek(SeekFrom::Start(header_at)).unwrap();
                    file.write_all(&bytes).unwrap();
                    file.seek(SeekFrom::Start(written)).unwrap();
                }
                Piece::Rewind => unreachable!("no entry is left out here"),
                Piece::Copy(_) => unreachable!("nothing is copied here"),
            }
        }
        file.flush().unwrap();
        written
    });
    let mut writer = ArchiveWriter::new(
        ArchiveOptions { level: 1 },
        Compressors::new(2).unwrap(),
        tx,
    );
    build(&mut writer).await;
    let size = writer.finish().await.unwrap().size;
    assert_eq!(sink.await.unwrap(), size);
    path
}

/// Python's view: (entry count, [(name, size, crc, method, local header)] of the named entries).
fn python_check(path: &std::path::Path, names: &[&str]) -> serde_json::Value {
    let script = r#"
import json, struct, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
infos = z.infolist()
def local(i):
    # The local header's "version needed" and its extra fields' IDs.
    with open(sys.argv[1], "rb") as f:
        f.seek(i.header_offset)
        h = f.read(30)
        n, m = struct.unpack("<HH", h[26:30])
        f.read(n)
        extra, ids = f.read(m), []
        while len(extra) >= 4:
            kind, size = struct.unpack("<HH", extra[:4])
            ids.append(kind)
            extra = extra[4 + size:]
        return [struct.unpack("<H", h[4:6])[0], ids]
wanted = {i.filename: [i.file_size, i.CRC, i.compress_type, local(i)] for i in infos if i.filename in sys.argv[2:]}
print(json.dumps({"count": len(infos), "entries": wanted}))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_over_4_gib_and_one_after_it_are_read_back_by_independent_readers() {
    const MIB: usize = 1024 * 1024;
    // A mebibyte of varied bytes, repeated: 4 GiB + 5 MiB in all, never held at once.
    let pattern = Bytes::from((0..MIB).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>());
    let chunks = 4 * 1024 + 5;
    let mut crc = crc32fast::Hasher::new();
    for _ in 0..chunks {
        crc.update(&pattern);
    }
    let expected_crc = crc.finalize();
    let path = archive_to_file(async |w: &mut ArchiveWriter| {
        w.start_entry(
            0,
            "huge.bin",
            Method::Stored,
            EntryTime::default(),
            true,
            false,
        )
        .await
        .unwrap();
        for _ in 0..chunks {
            w.write(pattern.clone()).await.unwrap();
        }
        let summary = w.finish_entry().await.unwrap();
        assert_eq!(summary.crc32, expected_crc);
        w.start_entry(
            1,
            "after/é.txt",
            Method::Deflated,
            EntryTime::default(),
            false,
            false,
        )
        .await
        .unwrap();
        w.write(Bytes::from_static(b"past the 4 GiB mark"))
            .await
            .unwrap();
    })
    .await;
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 4 << 30, "archive is {size} bytes");
    let seen = python_check(&path, &["huge.bin", "after/é.txt"]);
    assert_eq!(seen["count"], 2);
    assert_eq!(seen["entries"]["huge.bin"][0], (chunks * MIB) as u64);
    assert_eq!(seen["entries"]["huge.bin"][1], expected_crc);
    assert_eq!(seen["entries"]["after/é.txt"][0], 19);
    assert_eq!(seen["entries"]["after/é.txt"][2], 8, "deflated");
    // Both central records need ZIP64 (a size, an offset past 4 GiB): so do their local headers,
    // with "version needed" 4.5.
    // After the ZIP64 field: the extended timestamp, and for the non-ASCII name its Unicode Path.
    assert_eq!(
        seen["entries"]["huge.bin"][3],
        serde_json::json!([45, [0x0001, 0x5455]])
    );
    assert_eq!(
        seen["entries"]["after/é.txt"][3],
        serde_json::json!([45, [0x0001, 0x5455, 0x7075]])
    );
    let expected = [
        Seen {
            name: "huge.bin".into(),
            size: (chunks * MIB) as u64,
            crc32: expected_crc,
        },
        Seen::of("after/é.txt", b"past the 4 GiB mark"),
    ];
    assert_every_reader_sees_file(&path, &expected);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_65535_entries_use_the_zip64_end_records() {
    let count = 70_000;
    let path = archive_to_file(async |w: &mut ArchiveWriter| {
        for i in 0..count {
            let method = if i % 2 == 0 {
                Method::Stored
            } else {
                Method::Deflated
            };
            w.start_entry(
                i,
                &format!("d{}/f{i}.txt", i % 100),
                method,
                EntryTime::default(),
                false,
                false,
            )
            .await
            .unwrap();
            w.write(Bytes::from(format!("entry {i}\n"))).await.unwrap();
        }
    })
    .await;
    let seen = python_check(&path, &["d0/f0.txt", "d99/f69999.txt"]);
    assert_eq!(seen["count"], count);
    assert_eq!(seen["entries"]["d99/f69999.txt"][0], "entry 69999\n".len());
    assert_eq!(
        seen["entries"]["d99/f69999.txt"][1],
        crc32fast::hash(b"entry 69999\n")
    );
    assert_eq!(
        seen["entries"]["d0/f0.txt"][3],
        serde_json::json!([20, [0x5455]])
    );
    let expected: Vec<Seen> = (0..count)
        .map(|i| {
            Seen::of(
                &format!("d{}/f{i}.txt", i % 100),
                format!("entry {i}\n").as_bytes(),
            )
        })
        .collect();
    assert_every_reader_sees_file(&path, &expected);
    std::fs::remove_file(&path).unwrap();
}
