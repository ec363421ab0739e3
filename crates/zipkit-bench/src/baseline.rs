//! Single-threaded deflate at level 6 on the same bytes, with classic zlib (through Python)
//! and zlib-rs: what the worker's deflate cases are compared with.

use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::corpus::{MIB, source_bytes};

/// Single-threaded deflate level 6 on some bytes: MiB/s and the share of the input the output
/// takes.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub mib_s: f64,
    pub ratio: f64,
}

impl Baseline {
    /// The measurement with the median speed.
    pub fn median(mut all: Vec<Baseline>) -> Baseline {
        all.sort_by(|a, b| a.mib_s.total_cmp(&b.mib_s));
        all[all.len() / 2]
    }
}

/// The first 64 MiB of a case's bytes, in memory and in a file for Python, written once per case
/// and removed when dropped.
pub struct Sample {
    pub bytes: Bytes,
    pub path: std::path::PathBuf,
}

impl Sample {
    pub fn new(corpus: &Bytes) -> anyhow::Result<Self> {
        let bytes: Vec<u8> = source_bytes(corpus, 0, 64 * MIB)
            .flat_map(|b| b.to_vec())
            .collect();
        let path = std::env::temp_dir().join(format!("zipkit-bench-{}.txt", std::process::id()));
        std::fs::write(&path, &bytes)?;
        Ok(Self {
            bytes: Bytes::from(bytes),
            path,
        })
    }
}

impl Drop for Sample {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Classic zlib (Python's `zlib`, Debian's libz) and zlib-rs on the sample.
pub async fn deflate_baselines(sample: &Sample) -> anyhow::Result<(Baseline, Baseline)> {
    let script = "import sys,time,zlib\n\
        d=open(sys.argv[1],'rb').read()\n\
        c=zlib.compressobj(6,zlib.DEFLATED,-15)\n\
        t=time.perf_counter()\n\
        n=len(c.compress(d))+len(c.flush())\n\
        print(len(d)/(time.perf_counter()-t)/1048576, n/len(d))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&sample.path)
        .output()?;
    if !out.status.success() {
        bail!("python: {}", String::from_utf8_lossy(&out.stderr));
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let mut figures = printed.split_whitespace().map(str::parse::<f64>);
    let classic = Baseline {
        mib_s: figures.next().context("python's speed")??,
        ratio: figures.next().context("python's ratio")??,
    };
    let sample = sample.bytes.clone();
    let zlib_rs = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let started = Instant::now();
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(&sample)?;
        let size = encoder.finish()?.len();
        Ok::<_, std::io::Error>(Baseline {
            mib_s: sample.len() as f64 / started.elapsed().as_secs_f64() / MIB as f64,
            ratio: size as f64 / sample.len() as f64,
        })
    })
    .await??;
    Ok((classic, zlib_rs))
}
