//! The bytes the sources serve: real text (the Rust sources of crates in the local registry)
//! and synthetic text (word salad), and the local HTTP server that serves them at any size.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use zipkit_test_support::serve;

pub const MIB: u64 = 1024 * 1024;

/// Bytes each corpus holds; the source server cycles through it.
pub const CORPUS: usize = 16 * MIB as usize;

/// Where a source's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corpus {
    /// Synthetic "words" of random letters, Zipf-distributed: deflate gets it to about 38 %, and
    /// zlib-rs leads classic zlib by less on it than on most real text.
    WordSalad,
    /// Real text: Rust source code (deflate gets it to about 18 %).
    RustSources,
}

impl Corpus {
    pub fn path(self) -> &'static str {
        match self {
            Corpus::WordSalad => "words",
            Corpus::RustSources => "rust",
        }
    }
}

/// Both corpora, shared by the source server and the ceiling runs.
#[derive(Clone)]
pub struct Corpora {
    pub words: Bytes,
    pub rust: Bytes,
}

impl Corpora {
    pub fn get(&self, corpus: Corpus) -> &Bytes {
        match corpus {
            Corpus::WordSalad => &self.words,
            Corpus::RustSources => &self.rust,
        }
    }
}

/// Pseudo-English word salad, the same on every machine.
pub fn word_salad() -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: Vec<String> = (0..3000)
        .map(|_| {
            let len = 2 + (next() % 9) as usize;
            (0..len)
                .map(|_| (b'a' + (next() % 26) as u8) as char)
                .collect()
        })
        .collect();
    let mut text = Vec::with_capacity(CORPUS);
    while text.len() < CORPUS {
        // Zipf-like: low indexes far more often.
        let pick = (next() % 3000) as usize * (next() % 3000) as usize / 3000;
        text.extend_from_slice(words[pick].as_bytes());
        text.push(if next() % 12 == 0 { b'\n' } else { b' ' });
    }
    text.truncate(CORPUS);
    Bytes::from(text)
}

/// Hand-written crates the benchmark itself builds on every platform, so cargo has unpacked them
/// before it runs; their sources, in this order, make the real text.
pub const REAL_TEXT_CRATES: &[&str] = &[
    "tokio",
    "diesel",
    "regex-automata",
    "syn",
    "rustls",
    "chrono",
    "actix-web",
    "h2",
    "hyper",
    "serde_json",
    "lapin",
];

/// Real text that every machine building this benchmark has: the `.rs` files of
/// `REAL_TEXT_CRATES` at the (highest) version Cargo.lock pins, in a fixed order, the first
/// 16 MiB — the same bytes wherever the same Cargo.lock is built.
pub fn rust_sources() -> anyhow::Result<Bytes> {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
        .context("read Cargo.lock")?;
    let locked = |name: &str| -> Option<String> {
        lock.split("[[package]]")
            .filter(|block| block.contains(&format!("name = \"{name}\"\n")))
            .filter_map(|block| {
                block.lines().find_map(|l| {
                    l.strip_prefix("version = \"")
                        .map(|v| v.trim_end_matches('"').to_owned())
                })
            })
            .max_by_key(|version| {
                version
                    .split(['.', '-', '+'])
                    .map(|part| part.parse::<u64>().unwrap_or(0))
                    .collect::<Vec<_>>()
            })
    };
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let registries: Vec<_> = std::fs::read_dir(cargo_home.join("registry/src"))
        .context("no unpacked registry sources under CARGO_HOME")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let mut text = Vec::with_capacity(CORPUS);
    for name in REAL_TEXT_CRATES {
        let package = format!(
            "{name}-{}",
            locked(name).with_context(|| format!("{name} is not in Cargo.lock"))?
        );
        let dir = registries
            .iter()
            .map(|r| r.join(&package))
            .find(|d| d.is_dir())
            .with_context(|| format!("{package} is not unpacked under {}", cargo_home.display()))?;
        let mut files = Vec::new();
        rust_files(&dir, &mut files)?;
        files.sort();
        for file in files {
            text.extend_from_slice(&std::fs::read(&file)?);
            if text.len() >= CORPUS {
                text.truncate(CORPUS);
                return Ok(Bytes::from(text));
            }
        }
    }
    bail!(
        "the real-text crates hold only {} KiB of sources",
        text.len() / 1024
    )
}

pub fn rust_files(
    dir: &std::path::Path,
    found: &mut Vec<std::path::PathBuf>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    Ok(())
}

/// `size` bytes of the corpus starting at an offset given by `seed`, in 64 KiB pieces.
pub fn source_bytes(corpus: &Bytes, seed: u64, size: u64) -> impl Iterator<Item = Bytes> + use<> {
    let corpus = corpus.clone();
    let len = corpus.len() as u64;
    let mut at = seed.wrapping_mul(7919) % len;
    let mut left = size;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let take = left.min(64 * 1024).min(len - at);
        let piece = corpus.slice(at as usize..(at + take) as usize);
        at = (at + take) % len;
        left -= take;
        Some(piece)
    })
}

/// GET /gen/{corpus}/{seed}/{size}/{latency_ms}: waits, then streams `size` bytes of the corpus
/// with a length.
pub async fn generate(
    corpora: actix_web::web::Data<Corpora>,
    path: actix_web::web::Path<(String, u64, u64, u64)>,
) -> actix_web::HttpResponse {
    let (corpus, seed, size, latency) = path.into_inner();
    let Some(corpus) = [Corpus::WordSalad, Corpus::RustSources]
        .into_iter()
        .find(|c| c.path() == corpus)
        .map(|c| corpora.get(c))
    else {
        return actix_web::HttpResponse::NotFound().finish();
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let body =
        futures_util::stream::iter(source_bytes(corpus, seed, size).map(Ok::<_, std::io::Error>));
    actix_web::HttpResponse::Ok()
        .no_chunking(size)
        .streaming(body)
}

/// Serves the corpora at `/gen/{corpus}/{seed}/{size}/{latency}` on a loopback port of its own.
pub fn start_sources(corpora: Corpora) -> (String, actix_web::dev::ServerHandle) {
    let data = actix_web::web::Data::new(corpora);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().app_data(data.clone()).route(
            "/gen/{corpus}/{seed}/{size}/{latency}",
            actix_web::web::get().to(generate),
        )
    })
    .workers(1)
    .backlog(4096)
    .max_connections(100_000);
    let (port, handle) = serve::on_loopback(server, "127.0.0.1", "the bench's sources");
    (format!("http://127.0.0.1:{port}/gen"), handle)
}
