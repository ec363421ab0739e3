//! The worker benchmark (run by `scripts/bench-worker.sh`; not a test). A release `zipkit-worker`
//! process builds archives from a local HTTP source server into the local S3-compatible store;
//! for each case it prints wall time, throughput and the worker's peak RSS, and, measured in the
//! same run on the same bytes, the ceiling: the sources downloaded concurrently to nowhere while
//! the same number of bytes is uploaded as one plain multipart object. It also measures
//! single-threaded deflate level 6 (classic zlib through Python, and zlib-rs) on the same bytes,
//! for the deflate cases on two kinds of text: real (Rust sources) and synthetic (word salad).
//! One case reads its objects from the destination store itself, assembled there and streamed
//! (`assembly`).

mod assembly;
mod baseline;
mod corpus;
mod harness;

use std::sync::Arc;

use anyhow::Context;
use zipkit_domain::Compression;

use crate::baseline::{Baseline, Sample, deflate_baselines};
use crate::corpus::{Corpora, Corpus, MIB, rust_sources, start_sources, word_salad};
use crate::harness::{Bench, Case, DOWNLOADS_AHEAD, PART, PARTS_IN_FLIGHT, mib_s};

/// Deflate cases run this many times, each run followed by the single-threaded baselines, and
/// the medians are compared: this machine's speed drifts by ±10 % from one run to the next.
const DEFLATE_ROUNDS: usize = 3;

/// `count` sources whose sizes are spread evenly on a log scale between `min` and `max` (a fixed
/// sequence, so every run and every build gets the same), each `latency` ms to its first byte.
fn log_uniform(count: usize, min: u64, max: u64, latency: u64) -> Vec<(u64, u64)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let (low, high) = ((min as f64).ln(), (max as f64).ln());
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            ((low + unit * (high - low)).exp() as u64, latency)
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let worker_bin = std::env::args()
        .nth(1)
        .context("usage: zipkit-bench <zipkit-worker binary>")?;
    let corpora = Corpora {
        words: word_salad(),
        rust: rust_sources()?,
    };
    let (base, sources) = start_sources(corpora.clone());
    let bench = Arc::new(Bench::start(&worker_bin).await?);

    let big = vec![(128 * MIB, 0); 8];
    let cases = [
        Case {
            name: "store 8 x 128 MiB",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: big.clone(),
        },
        Case {
            name: "deflate 8 x 128 MiB, Rust sources",
            compression: Compression::Deflate,
            corpus: Corpus::RustSources,
            sources: big.clone(),
        },
        Case {
            name: "deflate 8 x 128 MiB, word salad",
            compression: Compression::Deflate,
            corpus: Corpus::WordSalad,
            sources: big,
        },
        // 200 sources of 1 KiB to 32 MiB (log-uniform), 10 ms to the first byte, on a worker that
        // has just built the 8 x 128 MiB archives in both modes:
        // held-back header parts and the allocator's leftovers from large parts meet many small
        // entries.
        Case {
            name: "store 200 mixed 1K-32M (after 128 MiB)",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: log_uniform(200, 1024, 32 * MIB, 10),
        },
        Case {
            name: "deflate 200 mixed 1K-32M (after 128 MiB)",
            compression: Compression::Deflate,
            corpus: Corpus::WordSalad,
            sources: log_uniform(200, 1024, 32 * MIB, 10),
        },
        Case {
            name: "store 2,000 x 32 KiB, 50 ms first byte",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: vec![(32 * 1024, 50); 2000],
        },
        Case {
            name: "store 4.5 GiB + 70,000 x 1 KiB",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: std::iter::once((4608 * MIB, 0))
                .chain(std::iter::repeat_n((1024, 0), 70_000))
                .collect(),
        },
        Case {
            name: "store ZIP64 (4.25 GiB + 256 MiB)",
            compression: Compression::Store,
            corpus: Corpus::WordSalad,
            sources: vec![(4352 * MIB, 0), (256 * MIB, 0)],
        },
    ];
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "case",
        "wall s",
        "MiB/s",
        "CPU s",
        "peak RSS",
        "complete",
        "ceiling s",
        "download",
        "of ceil.",
        "archive"
    );
    let mut deflate_lines = Vec::new();
    // BENCH_ONLY=deflate runs the cases whose name contains it (for trying settings quickly).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for (n, case) in cases.iter().enumerate() {
        if !case.name.contains(&only) {
            continue;
        }
        let urls = case.urls(&base);
        let corpus = corpora.get(case.corpus);
        let key = format!("bench-{n}.zip");
        let deflate = case.compression == Compression::Deflate;
        // The bytes the single-threaded baselines compress.
        let sample = deflate.then(|| Sample::new(corpus)).transpose()?;
        let (mut runs, mut classic, mut zlib_rs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..if deflate { DEFLATE_ROUNDS } else { 1 } {
            bench.reset_peak_rss()?;
            let cpu_before = bench.cpu_time()?;
            let run = bench.run(case, &urls, &key).await?;
            let cpu = bench.cpu_time()? - cpu_before;
            let rss = bench.peak_rss_mib()?;
            bench.delete(&key).await;
            runs.push((run, cpu, rss));
            if let Some(sample) = &sample {
                let (c, r) = deflate_baselines(sample).await?;
                classic.push(c);
                zlib_rs.push(r);
            }
        }
        let peak_rss = runs
            .iter()
            .map(|(_, _, rss)| *rss)
            .max()
            .unwrap_or_default();
        runs.sort_by_key(|(run, _, _)| run.took);
        let (run, cpu, _) = &runs[runs.len() / 2];
        let (ceiling, download) = bench.ceiling(&urls, run.archive, corpus).await?;
        println!(
            "{:<40} {:>7.2} {:>7.1} {:>7.1} {:>5} MiB {:>7.2} s {:>9.2} {:>7.2} s {:>7.0}% {:>5} MiB",
            case.name,
            run.took.as_secs_f64(),
            mib_s(case.bytes(), run.took),
            cpu.as_secs_f64(),
            peak_rss,
            run.completing.as_secs_f64(),
            ceiling.as_secs_f64(),
            download.as_secs_f64(),
            ceiling.as_secs_f64() / run.took.as_secs_f64() * 100.0,
            run.archive / MIB,
        );
        if deflate {
            let worker = mib_s(case.bytes(), run.took);
            let streaming = mib_s(case.bytes(), run.took.saturating_sub(run.completing));
            let all: Vec<String> = runs
                .iter()
                .map(|(r, _, _)| format!("{:.1}", mib_s(case.bytes(), r.took)))
                .collect();
            let (classic, zlib_rs) = (Baseline::median(classic), Baseline::median(zlib_rs));
            deflate_lines.push(format!(
                "{}: worker {worker:.1} MiB/s end to end (runs: {}), {streaming:.1} MiB/s until \
                 the last part was up, archive {:.1} % of the input; single-threaded level 6: \
                 zlib {:.1} MiB/s, {:.1} % ({:.2}x, {:.2}x), zlib-rs {:.1} MiB/s, {:.1} % \
                 ({:.2}x, {:.2}x)",
                case.name,
                all.join(", "),
                run.archive as f64 / case.bytes() as f64 * 100.0,
                classic.mib_s,
                classic.ratio * 100.0,
                worker / classic.mib_s,
                streaming / classic.mib_s,
                zlib_rs.mib_s,
                zlib_rs.ratio * 100.0,
                worker / zlib_rs.mib_s,
                streaming / zlib_rs.mib_s,
            ));
        }
    }
    if assembly::NAME.contains(&only) {
        assembly::run(&bench).await?;
    }
    for line in deflate_lines {
        println!("{line}");
    }
    println!(
        "(deflate cases: the median of {DEFLATE_ROUNDS} runs, each followed by the baselines, \
         compared with their medians; peak RSS: the highest of the runs; complete: from the last \
         part up to the job's end, mostly the store's CompleteMultipartUpload; ceiling: the same \
         sources downloaded {DOWNLOADS_AHEAD} at a time to nowhere while the archive's size is \
         uploaded as one plain multipart object, {} MiB parts, {PARTS_IN_FLIGHT} in flight; \
         \"of ceil.\" = ceiling time / worker time)",
        PART / MIB
    );
    sources.stop(true).await;
    drop(bench);
    Ok(())
}
