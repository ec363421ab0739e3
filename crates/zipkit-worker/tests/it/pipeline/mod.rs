//! Jobs built end to end by an in-process worker: real RabbitMQ, PostgreSQL, HTTP sources and the
//! S3 store; archives read back and checked by independent readers (Python's zipfile, Info-ZIP,
//! and the rest of `zipkit_test_support::readers`). The read-back helpers are here, the tests by
//! theme in the submodules, the harness in `crate::harness`.

mod archive;
mod assembly;
mod buckets;
mod delivery;
mod manifests;
mod sources;
mod takeover;

use std::collections::BTreeMap;

use zipkit_domain::ZipId;
use zipkit_domain::models::NewZipEntry;
use zipkit_domain::values::{EntryName, SourceUrl};
use zipkit_test_support::readers::{Seen, assert_every_reader_sees};
use zipkit_test_support::sources::SourceServer;

/// The tests that load the store for minutes (gigabytes through it, or 100,000 objects listed)
/// run one at a time: beside each other the store answers so slowly that their call counts and
/// deadlines would measure the contention, not the worker.
pub(super) const HEAVY_ON_THE_STORE: &str = "heavy-on-the-store";

/// Every entry's name and bytes as Python's zipfile reads them, after its CRC check (`testzip`);
/// and every other reader people use sees the same entries, sizes and CRC-32s
/// (`zipkit_test_support::readers`).
pub(super) fn read_with_python(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let script = "import zipfile,sys,json\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nprint(json.dumps([[i.filename, z.read(i).hex()] for i in z.infolist()]))";
    let entries: Vec<(String, String)> = python_json(archive, script);
    let entries: Vec<(String, Vec<u8>)> = entries
        .into_iter()
        .map(|(name, hex)| {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (name, bytes)
        })
        .collect();
    let expected: Vec<Seen> = entries.iter().map(|(n, b)| Seen::of(n, b)).collect();
    assert_every_reader_sees(archive, &expected);
    entries.into_iter().collect()
}

/// An entry of one object of `bucket` (`s3://<bucket>/<key>`), named `name`.
pub(super) fn bucket_object(
    bucket: &zipkit_domain::models::Bucket,
    key: &str,
    name: &str,
) -> NewZipEntry {
    NewZipEntry {
        url: SourceUrl::bucket_object(&bucket.name, key).unwrap(),
        filename: EntryName::parse(name).unwrap(),
        given_filename: None,
        modified_at: None,
        declared_size: None,
    }
}

pub(super) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// What a Python script given the archive's path (as `sys.argv[1]`) prints, as JSON.
pub(super) fn python_json<T: serde::de::DeserializeOwned>(archive: &[u8], script: &str) -> T {
    let path = std::env::temp_dir().join(format!("zipkit-{}.zip", ZipId::new()));
    std::fs::write(&path, archive).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// For each entry (central directory order): its name, DOS date and time as Python reads them,
/// and the extended-timestamp (0x5455) and Unicode Path (0x7075) extra fields of its local and
/// central headers, in hex ("" when absent).
pub(super) fn times_and_names(archive: &[u8]) -> Vec<serde_json::Value> {
    let script = r#"
import zipfile, sys, json, struct
path = sys.argv[1]
raw = open(path, 'rb').read()
def extras(b):
    out, i = {}, 0
    while i + 4 <= len(b):
        k, n = struct.unpack('<HH', b[i:i+4]); out[k] = b[i+4:i+4+n].hex(); i += 4 + n
    return out
rows = []
for info in zipfile.ZipFile(path).infolist():
    o = info.header_offset
    n, m = struct.unpack('<HH', raw[o+26:o+30])
    local, central = extras(raw[o+30+n:o+30+n+m]), extras(info.extra)
    rows.append({'name': info.filename, 'dos': list(info.date_time),
                 'local_ut': local.get(0x5455, ''), 'central_ut': central.get(0x5455, ''),
                 'local_up': local.get(0x7075, ''), 'central_up': central.get(0x7075, '')})
print(json.dumps(rows))
"#;
    python_json(archive, script)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Each entry's local header as (name, "version needed", the IDs of its extra fields).
pub(super) fn local_headers(archive: &[u8]) -> Vec<(String, u16, Vec<u16>)> {
    let script = r#"
import json, struct, sys, zipfile
raw = open(sys.argv[1], 'rb').read()
rows = []
for i in zipfile.ZipFile(sys.argv[1]).infolist():
    o = i.header_offset
    n, m = struct.unpack('<HH', raw[o+26:o+30])
    extra, ids = raw[o+30+n:o+30+n+m], []
    while len(extra) >= 4:
        kind, size = struct.unpack('<HH', extra[:4]); ids.append(kind); extra = extra[4+size:]
    rows.append([i.filename, struct.unpack('<H', raw[o+4:o+6])[0], ids])
print(json.dumps(rows))
"#;
    python_json(archive, script)
}

/// An entry of `sources`' `route`, named `name`, whose request declares `size`.
pub(super) fn sized_entry(
    sources: &SourceServer,
    route: &str,
    name: &str,
    size: Option<i64>,
) -> NewZipEntry {
    NewZipEntry {
        url: SourceUrl::parse(&sources.url(route)).unwrap(),
        filename: EntryName::parse(name).unwrap(),
        given_filename: None,
        modified_at: None,
        declared_size: size,
    }
}
