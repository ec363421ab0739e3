//! The ZIP writer. The `zip` crate's streaming writer (`ZipWriter::new_stream`: data descriptors,
//! no seeking) is synchronous, so it runs on a blocking thread: entries and their bytes come in
//! through a bounded channel, the archive goes out in chunks through another. Both channels are
//! bounded, so memory stays bounded whatever the archive size.

use std::io::Write;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// What the job tells the writer.
#[derive(Debug)]
pub enum ArchiveInput {
    /// Starts an entry (finishing the previous one).
    Start {
        name: String,
        compression: CompressionMethod,
        large: bool,
    },
    Data(Bytes),
}

/// Size of the chunks handed to the uploader.
const CHUNK: usize = 256 * 1024;

/// Sends the archive's bytes on, in chunks, blocking when the uploader is behind.
struct ChannelWriter {
    buffer: BytesMut,
    out: mpsc::Sender<Bytes>,
    total: u64,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.out
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the uploader stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        self.total += data.len() as u64;
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("writing the archive failed: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("writing the archive failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the writer until `input` closes; returns the archive's size. Call on a blocking thread.
pub fn write_archive(
    mut input: mpsc::Receiver<ArchiveInput>,
    output: mpsc::Sender<Bytes>,
    modified: DateTime,
) -> Result<u64, ArchiveError> {
    let sink = ChannelWriter {
        buffer: BytesMut::with_capacity(CHUNK * 2),
        out: output,
        total: 0,
    };
    let mut writer = ZipWriter::new_stream(sink);
    while let Some(message) = input.blocking_recv() {
        match message {
            ArchiveInput::Start {
                name,
                compression,
                large,
            } => {
                let options = SimpleFileOptions::default()
                    .compression_method(compression)
                    .compression_level(if compression == CompressionMethod::Deflated {
                        Some(6)
                    } else {
                        None
                    })
                    .last_modified_time(modified)
                    .unix_permissions(0o644)
                    .large_file(large);
                writer.start_file(name, options)?;
            }
            ArchiveInput::Data(bytes) => writer.write_all(&bytes)?,
        }
    }
    let mut stream = writer.finish()?;
    let sink = stream.get_mut();
    sink.flush()?;
    Ok(sink.total)
}

/// Extensions of formats that are already compressed: `auto` stores them instead of deflating.
const COMPRESSED: &[&str] = &[
    "7z", "aac", "apk", "avi", "avif", "br", "bz2", "docx", "epub", "flac", "gif", "gz", "heic",
    "jar", "jpeg", "jpg", "m4a", "m4v", "mkv", "mov", "mp3", "mp4", "odt", "ogg", "opus", "pdf",
    "png", "pptx", "rar", "tgz", "webm", "webp", "woff", "woff2", "xlsx", "xz", "zip", "zst",
];

/// How an entry is stored under the job's `compression` setting.
pub fn method_for(compression: zipkit_domain::Compression, filename: &str) -> CompressionMethod {
    use zipkit_domain::Compression;
    match compression {
        Compression::Store => CompressionMethod::Stored,
        Compression::Deflate => CompressionMethod::Deflated,
        Compression::Auto => {
            let extension = filename
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            if COMPRESSED.contains(&extension.as_str()) {
                CompressionMethod::Stored
            } else {
                CompressionMethod::Deflated
            }
        }
    }
}

/// The job's creation time as a ZIP timestamp, so the same inputs give the same bytes.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> DateTime {
    use chrono::{Datelike, Timelike};
    DateTime::from_date_and_time(
        u16::try_from(at.year()).unwrap_or(1980),
        at.month() as u8,
        at.day() as u8,
        at.hour() as u8,
        at.minute() as u8,
        at.second() as u8,
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zipkit_domain::Compression;

    #[test]
    fn auto_stores_compressed_formats_and_deflates_the_rest() {
        assert_eq!(
            method_for(Compression::Auto, "photos/a.JPG"),
            CompressionMethod::Stored
        );
        assert_eq!(
            method_for(Compression::Auto, "docs/report.pdf"),
            CompressionMethod::Stored
        );
        assert_eq!(
            method_for(Compression::Auto, "data.csv"),
            CompressionMethod::Deflated
        );
        assert_eq!(
            method_for(Compression::Auto, "README"),
            CompressionMethod::Deflated
        );
        assert_eq!(
            method_for(Compression::Store, "data.csv"),
            CompressionMethod::Stored
        );
        assert_eq!(
            method_for(Compression::Deflate, "a.jpg"),
            CompressionMethod::Deflated
        );
    }

    #[test]
    fn the_writer_streams_a_valid_archive_through_bounded_channels() {
        let (tx, rx) = mpsc::channel(2);
        let (out_tx, mut out_rx) = mpsc::channel(2);
        let writer = std::thread::spawn(move || write_archive(rx, out_tx, DateTime::default()));
        let collector = std::thread::spawn(move || {
            let mut all = Vec::new();
            while let Some(chunk) = out_rx.blocking_recv() {
                all.extend_from_slice(&chunk);
            }
            all
        });
        for (name, body) in [
            ("a.txt", "hello ".repeat(1000)),
            ("dir/é.txt", "world".into()),
        ] {
            tx.blocking_send(ArchiveInput::Start {
                name: name.into(),
                compression: CompressionMethod::Deflated,
                large: false,
            })
            .unwrap();
            tx.blocking_send(ArchiveInput::Data(Bytes::from(body)))
                .unwrap();
        }
        drop(tx);
        let size = writer.join().unwrap().unwrap();
        let archive = collector.join().unwrap();
        assert_eq!(size as usize, archive.len());
        let mut read = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
        assert_eq!(read.len(), 2);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut read.by_name("dir/é.txt").unwrap(), &mut text).unwrap();
        assert_eq!(text, "world");
    }
}
