//! Every archive opened with what people actually open archives with, not one reader alone:
//! Python's `zipfile` (central directory, `testzip`), Info-ZIP's `unzip -t` and `unzip -v`, 7-Zip
//! (`7z t`, `7z l -slt`), libarchive's `bsdtar` from a file and from a pipe (the pipe makes it walk
//! local headers), the JDK's `ZipInputStream` (local headers, what JVM and Android services use
//! on a download) and `ZipFile`, Go's `archive/zip`, and `zipdetails` (which walks every record).
//! Each must succeed and see exactly the same entries, with the same sizes and CRC-32s.
//!
//! Every reader streams: an archive of several GiB is read in bounded memory (each entry's bytes
//! pass through a CRC-32, and bsdtar's pipe is fed from the file). zipdetails prints a report
//! line per field, which takes minutes for tens of thousands of entries: it reads archives of up
//! to `ZIPDETAILS_MAX_ENTRIES`, and the other eight read every archive.
//!
//! The Java and Go readers (`readers/`) are compiled once per machine into
//! `/var/tmp/zipkit-readers/<digest of their sources>/`. scripts/test.sh installs the tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One entry as a reader saw it: its name, the size and CRC-32 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub name: String,
    pub size: u64,
    pub crc32: u32,
}

impl Seen {
    /// The entry `name` holding `bytes`.
    pub fn of(name: &str, bytes: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            size: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }
}

/// One reader run on the archive: the entries it saw, or why it failed.
type Reader<'a> = Box<dyn Fn() -> Result<Vec<Seen>, String> + Send + Sync + 'a>;

/// Archives of more entries than this are not given to zipdetails (see above).
pub const ZIPDETAILS_MAX_ENTRIES: usize = 5_000;

/// Opens `archive` with every reader; panics naming each reader that failed or saw other
/// entries than `expected` (in archive order).
pub fn assert_every_reader_sees(archive: &[u8], expected: &[Seen]) {
    let dir = scratch();
    let path = dir.join("archive.zip");
    std::fs::write(&path, archive).expect("write the archive");
    let failures = every_reader(&path, expected);
    let _ = std::fs::remove_dir_all(&dir);
    assert_none_failed(&failures);
}

/// As `assert_every_reader_sees`, for an archive in a file.
pub fn assert_every_reader_sees_file(path: &Path, expected: &[Seen]) {
    assert_none_failed(&every_reader(path, expected));
}

fn assert_none_failed(failures: &[(&'static str, String)]) {
    assert!(
        failures.is_empty(),
        "readers that failed on the archive:\n{}",
        failures
            .iter()
            .map(|(reader, why)| format!("- {reader}: {why}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Each reader that failed on the archive at `path` or saw other entries than `expected`, with
/// why.
pub fn every_reader(path: &Path, expected: &[Seen]) -> Vec<(&'static str, String)> {
    let dir = scratch();
    let tools = compiled();
    let mut readers: Vec<(&'static str, Reader<'_>)> = vec![
        ("python zipfile", Box::new(|| python(path))),
        ("unzip", Box::new(|| unzip(path))),
        ("7z", Box::new(|| seven_zip(path))),
        (
            "bsdtar (file)",
            Box::new(|| bsdtar(path, &dir.join("bsdtar-file"), false)),
        ),
        (
            "bsdtar (pipe)",
            Box::new(|| bsdtar(path, &dir.join("bsdtar-pipe"), true)),
        ),
        (
            "JDK ZipInputStream",
            Box::new(|| java(&tools, "stream", path)),
        ),
        ("JDK ZipFile", Box::new(|| java(&tools, "file", path))),
        ("Go archive/zip", Box::new(|| go(&tools, path))),
    ];
    if expected.len() <= ZIPDETAILS_MAX_ENTRIES {
        readers.push(("zipdetails", Box::new(|| zipdetails(path, expected))));
    }
    let mut expected_sorted = expected.to_vec();
    expected_sorted.sort();
    let failures = std::thread::scope(|scope| {
        let running: Vec<_> = readers
            .iter()
            .map(|(name, read)| (*name, scope.spawn(read)))
            .collect();
        running
            .into_iter()
            .filter_map(|(name, handle)| {
                let outcome = handle.join().unwrap_or_else(|_| Err("panicked".into()));
                match outcome {
                    Err(why) => Some((name, why)),
                    // bsdtar extracts into folders: it sees the entries, not their order.
                    Ok(mut seen) if name.starts_with("bsdtar") => {
                        seen.sort();
                        (seen != expected_sorted).then(|| (name, differs(&seen, &expected_sorted)))
                    }
                    Ok(seen) => (seen != expected).then(|| (name, differs(&seen, expected))),
                }
            })
            .collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

fn differs(seen: &[Seen], expected: &[Seen]) -> String {
    format!("saw {seen:?}, expected {expected:?}")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zipkit-readers-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

/// Runs a command (its standard input the file `stdin`, if given); its standard output when it
/// succeeds, else what it said.
fn output(command: &mut Command, stdin: Option<&Path>) -> Result<String, String> {
    let input = match stdin {
        Some(path) => Stdio::from(std::fs::File::open(path).map_err(|e| e.to_string())?),
        None => Stdio::null(),
    };
    let out = command
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            last_lines(&stdout),
            last_lines(&String::from_utf8_lossy(&out.stderr))
        ))
    }
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(6)..].join("\n")
}

/// Lines of `name<TAB>size<TAB>crc-hex`.
fn tab_lines(text: &str) -> Result<Vec<Seen>, String> {
    text.lines()
        .map(|line| {
            let mut fields = line.rsplitn(3, '\t');
            let (crc, size, name) = (fields.next(), fields.next(), fields.next());
            match (
                name,
                size.and_then(|s| s.parse().ok()),
                crc.and_then(|c| u32::from_str_radix(c, 16).ok()),
            ) {
                (Some(name), Some(size), Some(crc32)) => Ok(Seen {
                    name: name.to_owned(),
                    size,
                    crc32,
                }),
                _ => Err(format!("unreadable line {line:?}")),
            }
        })
        .collect()
}

fn python(path: &Path) -> Result<Vec<Seen>, String> {
    // Reading an entry to its end checks its CRC-32 (zipfile raises BadZipFile on a mismatch).
    let script = "import sys, zipfile, zlib\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        for i in z.infolist():\n\
        \x20   size, crc = 0, 0\n\
        \x20   with z.open(i) as f:\n\
        \x20       while chunk := f.read(1 << 20):\n\
        \x20           size, crc = size + len(chunk), zlib.crc32(chunk, crc)\n\
        \x20   sys.stdout.buffer.write(('%s\\t%d\\t%x\\n' % (i.filename, size, crc)).encode())\n";
    tab_lines(&output(
        Command::new("python3").arg("-c").arg(script).arg(path),
        None,
    )?)
}

/// `unzip -t` tests every entry; `unzip -v` lists sizes and CRC-32s.
fn unzip(path: &Path) -> Result<Vec<Seen>, String> {
    output(Command::new("unzip").arg("-tqq").arg(path), None)?;
    let listing = output(Command::new("unzip").arg("-v").arg(path), None)?;
    // Between the two dashed lines: Length Method Size Cmpr Date Time CRC-32 Name.
    let rows: Vec<&str> = listing
        .lines()
        .skip_while(|l| !l.starts_with("--------"))
        .skip(1)
        .take_while(|l| !l.starts_with("--------"))
        .collect();
    rows.iter()
        .map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let name_at = row
                .match_indices(fields.get(6).copied().unwrap_or_default())
                .next()
                .map(|(at, crc)| at + crc.len() + 2);
            match (
                fields.first().and_then(|s| s.parse().ok()),
                fields.get(6).and_then(|c| u32::from_str_radix(c, 16).ok()),
                name_at,
            ) {
                (Some(size), Some(crc32), Some(at)) if at <= row.len() => Ok(Seen {
                    name: row[at..].to_owned(),
                    size,
                    crc32,
                }),
                _ => Err(format!("unreadable row {row:?}")),
            }
        })
        .collect()
}

/// `7z t` tests every entry; `7z l -slt` lists them, one block of `Key = value` lines each.
fn seven_zip(path: &Path) -> Result<Vec<Seen>, String> {
    output(Command::new("7z").args(["t", "-bd"]).arg(path), None)?;
    let listing = output(
        Command::new("7z").args(["l", "-slt", "-ba"]).arg(path),
        None,
    )?;
    let mut seen = Vec::new();
    for block in listing.split("\n\n").filter(|b| b.contains("Path = ")) {
        let fields: BTreeMap<&str, &str> =
            block.lines().filter_map(|l| l.split_once(" = ")).collect();
        let size = fields.get("Size").and_then(|s| s.parse().ok());
        let crc32 = match fields.get("CRC") {
            Some(c) if !c.is_empty() => u32::from_str_radix(c, 16).ok(),
            _ => Some(0), // 7-Zip leaves an empty entry's CRC blank
        };
        match (fields.get("Path"), size, crc32) {
            (Some(name), Some(size), Some(crc32)) => seen.push(Seen {
                name: (*name).to_owned(),
                size,
                crc32,
            }),
            _ => return Err(format!("unreadable block {block:?}")),
        }
    }
    Ok(seen)
}

/// Extracts with bsdtar into `into` (from the file, or through a pipe, which makes libarchive
/// read the archive as a stream of local headers), then reads what it wrote.
fn bsdtar(path: &Path, into: &Path, pipe: bool) -> Result<Vec<Seen>, String> {
    std::fs::create_dir_all(into).map_err(|e| e.to_string())?;
    let mut command = Command::new("bsdtar");
    command.arg("-x").arg("-C").arg(into).arg("-f");
    if pipe {
        output(command.arg("-"), Some(path))?;
    } else {
        output(command.arg(path), None)?;
    }
    let mut seen = Vec::new();
    walk(into, into, &mut seen)?;
    Ok(seen)
}

fn walk(root: &Path, dir: &Path, seen: &mut Vec<Seen>) -> Result<(), String> {
    for item in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = item.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            walk(root, &path, seen)?;
        } else {
            let (size, crc32) = file_crc32(&path).map_err(|e| e.to_string())?;
            let name = path.strip_prefix(root).expect("under the root");
            seen.push(Seen {
                name: name.to_string_lossy().into_owned(),
                size,
                crc32,
            });
            // Gone as soon as it is counted: a 4 GiB entry is not kept twice on disk.
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// The size and CRC-32 of a file, read in 1 MiB pieces.
fn file_crc32(path: &Path) -> std::io::Result<(u64, u32)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0; 1 << 20];
    let (mut size, mut crc) = (0u64, crc32fast::Hasher::new());
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((size, crc.finalize()));
        }
        size += n as u64;
        crc.update(&buffer[..n]);
    }
}

fn java(tools: &Path, mode: &str, path: &Path) -> Result<Vec<Seen>, String> {
    tab_lines(&output(
        Command::new("java")
            .args(["-Xshare:auto", "-XX:TieredStopAtLevel=1", "-cp"])
            .arg(tools)
            .arg("ZipReaders")
            .arg(mode)
            .arg(path),
        None,
    )?)
}

fn go(tools: &Path, path: &Path) -> Result<Vec<Seen>, String> {
    tab_lines(&output(
        Command::new(tools.join("zipreader")).arg(path),
        None,
    )?)
}

/// zipdetails walks every record from the first byte; it must get through the archive without
/// a complaint and find exactly the entries' local headers.
fn zipdetails(path: &Path, expected: &[Seen]) -> Result<Vec<Seen>, String> {
    let report = output(Command::new("zipdetails").arg(path), None)?;
    if let Some(line) = report
        .lines()
        .find(|l| l.contains("Error") || l.contains("WARNING") || l.contains("Unexpected"))
    {
        return Err(format!("zipdetails says: {line}"));
    }
    let headers = report.matches("LOCAL HEADER").count();
    if headers != expected.len() {
        return Err(format!(
            "{headers} local headers for {} entries",
            expected.len()
        ));
    }
    Ok(expected.to_vec())
}

/// The folder holding the compiled Java and Go readers, built on first use.
fn compiled() -> PathBuf {
    const JAVA: &str = include_str!("../readers/ZipReaders.java");
    const GO: &str = include_str!("../readers/zipreader.go");
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{JAVA}\0{GO}").as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = PathBuf::from("/var/tmp/zipkit-readers");
    let dir = root.join(&hex);
    if dir.join("zipreader").exists() && dir.join("ZipReaders.class").exists() {
        return dir;
    }
    // Built aside and renamed into place: test processes running at once each build their own.
    let building = root.join(format!("{hex}.{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&building).expect("a build folder");
    std::fs::write(building.join("ZipReaders.java"), JAVA).expect("write");
    std::fs::write(building.join("zipreader.go"), GO).expect("write");
    output(
        Command::new("javac")
            .arg("-d")
            .arg(&building)
            .arg(building.join("ZipReaders.java")),
        None,
    )
    .expect("javac ZipReaders.java");
    output(
        Command::new("go")
            .args(["build", "-o"])
            .arg(building.join("zipreader"))
            .arg(building.join("zipreader.go"))
            .env("GOCACHE", root.join("go-cache"))
            .env("GOPATH", root.join("go-path"))
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "-mod=mod"),
        None,
    )
    .expect("go build zipreader.go");
    if std::fs::rename(&building, &dir).is_err() {
        // Another process got there first.
        let _ = std::fs::remove_dir_all(&building);
    }
    dir
}
