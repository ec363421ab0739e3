//! Block-parallel deflate, as pigz does it: an entry's bytes are cut into blocks that are
//! compressed independently (each primed with the previous block's last 32 KiB, so the ratio
//! barely suffers) and ended with a sync flush, so the outputs concatenate into one valid raw
//! deflate stream. Blocks of one entry, and of the entries after it, compress on all cores.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress, Status};

/// Uncompressed bytes per block.
pub const BLOCK: usize = 1024 * 1024;
/// Deflate's window: how much of the previous block primes the next.
pub const WINDOW: usize = 32 * 1024;

/// Compresses one block; `last` ends the deflate stream. Call on a blocking thread.
pub fn compress_block(
    input: &[u8],
    dictionary: &[u8],
    level: u32,
    last: bool,
) -> std::io::Result<Bytes> {
    let mut compress = Compress::new(Compression::new(level), false);
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
