//! Block-parallel deflate, as pigz does it: an entry's bytes are cut into blocks that are
//! compressed independently (each primed with the previous block's last 32 KiB, so the ratio
//! barely suffers) and ended with a sync flush, so the outputs concatenate into one valid raw
//! deflate stream. Blocks of one entry, and of the entries after it, compress on all cores.
//!
//! The blocks run on `Compressors`: one thread per core, shared by every job of the worker.
//! More threads than cores only time-slice the same CPU and evict each other's deflate state
//! from the caches (measured: 4 threads on 2 cores compress 3–8 % slower than 2), and jobs
//! running side by side must not multiply the threads.

use std::sync::Arc;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};
use tokio::sync::oneshot;

/// Uncompressed bytes per block (what the dry run's bound counts on).
pub const BLOCK: usize = zipkit_zip::layout::DEFLATE_BLOCK;
/// Deflate's window: how much of the previous block primes the next.
pub const WINDOW: usize = 32 * 1024;

/// A block's compressed bytes, when they are ready. An error if compressing failed, or if the
/// pool dropped the block (a panic while compressing).
pub type CompressedBlock = oneshot::Receiver<std::io::Result<Bytes>>;

/// The threads that compress blocks (see the module header). Cheap to clone.
#[derive(Clone)]
pub struct Compressors {
    pool: Arc<rayon_core::ThreadPool>,
}

impl std::fmt::Debug for Compressors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressors")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Compressors {
    /// A pool of `threads` compressing threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let pool = rayon_core::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("zipkit-deflate-{i}"))
            // A panic drops the block's sender, which fails that job; the pool and the
            // process go on (rayon would abort the process without a handler).
            .panic_handler(|_| tracing::error!("a deflate block panicked"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            pool: Arc::new(pool),
        })
    }

    /// One thread per core.
    pub fn per_core() -> std::io::Result<Self> {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Queues a block; blocks start in the order they were queued.
    pub fn compress(
        &self,
        input: Bytes,
        dictionary: Bytes,
        level: u32,
        last: bool,
    ) -> CompressedBlock {
        let (done, result) = oneshot::channel();
        let queued = metrics::gauge!(zipkit_runtime::metrics::COMPRESSION_QUEUE);
        queued.increment(1.0);
        self.pool.spawn_fifo(move || {
            // The job may have been dropped (failed, cancelled) while the block waited.
            if !done.is_closed() {
                let _ = done.send(compress_block(&input, &dictionary, level, last));
            }
            queued.decrement(1.0);
        });
        result
    }
}

/// Compresses one block; `last` ends the deflate stream. Runs on the calling thread.
///
/// Every block gets a fresh deflate state. A state reused after `reset` (zlib-rs keeps some
/// of its match-finding state) finds different matches depending on what it compressed before, so the bytes
/// would depend on which thread took which block: archives must be reproducible byte for byte
/// (a job taken over resumes after the parts already uploaded). Setting up a state takes 0.01 to
/// 0.1 ms against some 55 ms to compress a 1 MiB block; 24 blocks fresh against reused timed
/// within this machine's ±5 % noise (2026-11-29).
pub fn compress_block(
    input: &[u8],
    dictionary: &[u8],
    level: u32,
    last: bool,
) -> std::io::Result<Bytes> {
    let mut compress = Compress::new(Compression::new(level), false);
    compress_with(&mut compress, input, dictionary, last)
}

fn compress_with(
    compress: &mut Compress,
    input: &[u8],
    dictionary: &[u8],
    last: bool,
) -> std::io::Result<Bytes> {
    if !dictionary.is_empty() {
        compress
            .set_dictionary(dictionary)
            .map_err(std::io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(std::io::Error::other)?;
        let all_in = compress.total_in() as usize == input.len();
        match status {
            Status::StreamEnd => break,
            // A sync flush is complete once all input is in and the output did not fill up.
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn blocks_concatenate_into_one_stream() {
        let text: Vec<u8> = (0..3 * BLOCK + 1234)
            .map(|i| b"the quick brown fox "[i % 20] ^ (i / 7919) as u8)
            .collect();
        let blocks: Vec<&[u8]> = text.chunks(BLOCK).collect();
        let mut stream = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            let dictionary = if i == 0 {
                &[][..]
            } else {
                let previous = blocks[i - 1];
                &previous[previous.len() - WINDOW..]
            };
            let last = i == blocks.len() - 1;
            stream.extend_from_slice(&compress_block(block, dictionary, 6, last).unwrap());
        }
        assert!(
            stream.len() < text.len() / 4,
            "compressed to {}",
            stream.len()
        );
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn a_block_compresses_to_the_same_bytes_whatever_the_thread_compressed_before() {
        // With a reused (reset) zlib-rs state this differed by a few bytes after some blocks.
        let blocks: Vec<Vec<u8>> = (0..6)
            .map(|i| zipkit_test_support::sources::word_salad(BLOCK - i * 777, i as u64 + 1))
            .collect();
        for i in 1..blocks.len() {
            let dictionary = &blocks[i - 1][blocks[i - 1].len() - WINDOW..];
            for last in [false, true] {
                let first = compress_block(&blocks[i], dictionary, 6, last).unwrap();
                for before in &blocks {
                    let _ = compress_block(before, &[], 6, false).unwrap();
                    assert_eq!(
                        compress_block(&blocks[i], dictionary, 6, last).unwrap(),
                        first,
                        "block {i}, last {last}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn the_pool_compresses_blocks_that_concatenate_in_queue_order() {
        let compressors = Compressors::new(2).unwrap();
        assert_eq!(compressors.threads(), 2);
        let text = Bytes::from(
            (0..4 * BLOCK)
                .map(|i| b"pack my box with five dozen jugs "[i % 33] ^ (i / 6007) as u8)
                .collect::<Vec<u8>>(),
        );
        let pending: Vec<_> = (0..4)
            .map(|i| {
                let dictionary = if i == 0 {
                    Bytes::new()
                } else {
                    text.slice(i * BLOCK - WINDOW..i * BLOCK)
                };
                let block = text.slice(i * BLOCK..(i + 1) * BLOCK);
                compressors.compress(block, dictionary, 6, i == 3)
            })
            .collect();
        let mut stream = Vec::new();
        for block in pending {
            stream.extend_from_slice(&block.await.unwrap().unwrap());
        }
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn an_empty_last_block_still_ends_the_stream() {
        let first = compress_block(b"hello", &[], 6, false).unwrap();
        let end = compress_block(&[], b"hello", 6, true).unwrap();
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&[first, end].concat()[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"hello");
    }
}
