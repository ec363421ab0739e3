//! How each entry is stored: the job's `compression`, and for `auto` the entry's name or its
//! source's first bytes.

use zipkit_domain::Compression;

use crate::format::Method;

/// Extensions of formats that are already compressed: `auto` stores them instead of deflating.
const COMPRESSED: &[&str] = &[
    "7z", "aac", "apk", "avi", "avif", "br", "bz2", "docx", "epub", "flac", "gif", "gz", "heic",
    "jar", "jpeg", "jpg", "m4a", "m4v", "mkv", "mov", "mp3", "mp4", "odt", "ogg", "opus", "pdf",
    "png", "pptx", "rar", "tgz", "webm", "webp", "woff", "woff2", "xlsx", "xz", "zip", "zst",
];

/// Leading bytes of compressed formats (offset, signature), for names that do not say.
const SIGNATURES: &[(usize, &[u8])] = &[
    (0, b"\x1f\x8b"),           // gzip
    (0, b"PK\x03\x04"),         // zip, docx, jar, ...
    (0, b"\x89PNG"),            // png
    (0, b"\xff\xd8\xff"),       // jpeg
    (0, b"GIF8"),               // gif
    (0, b"\x28\xb5\x2f\xfd"),   // zstd
    (0, b"\xfd7zXZ\x00"),       // xz
    (0, b"BZh"),                // bzip2
    (0, b"7z\xbc\xaf\x27\x1c"), // 7z
    (0, b"Rar!"),               // rar
    (0, b"OggS"),               // ogg
    (0, b"fLaC"),               // flac
    (0, b"ID3"),                // mp3
    (4, b"ftyp"),               // mp4, mov, heic, avif
    (0, b"\x1a\x45\xdf\xa3"),   // matroska, webm
    (0, b"wOF2"),               // woff2
];

/// How many of a source's first bytes `auto` looks at (the longest signature ends at 12).
pub const HEAD_BYTES: usize = 16;

/// Whether the first bytes of a source look like an already compressed format.
pub fn looks_compressed(head: &[u8]) -> bool {
    let riff_webp = head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP";
    riff_webp
        || SIGNATURES
            .iter()
            .any(|(at, sig)| head.len() >= at + sig.len() && &head[*at..at + sig.len()] == *sig)
}

/// How an entry is stored under the job's `compression` setting; `head` is the source's first
/// bytes, which `auto` looks at when the name's extension does not decide.
pub fn method_for(compression: Compression, filename: &str, head: &[u8]) -> Method {
    match method_by_name(compression, filename) {
        Some(method) => method,
        None if looks_compressed(head) => Method::Stored,
        None => Method::Deflated,
    }
}

/// How an entry is stored when the setting and its name decide, before its source is read:
/// `None` for `auto` and a name whose extension does not say.
pub fn method_by_name(compression: Compression, filename: &str) -> Option<Method> {
    match compression {
        Compression::Store => Some(Method::Stored),
        Compression::Deflate => Some(Method::Deflated),
        Compression::Auto => {
            let extension = filename
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default();
            COMPRESSED
                .contains(&extension.as_str())
                .then_some(Method::Stored)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_stores_compressed_formats_by_name_or_by_content() {
        assert_eq!(
            method_for(Compression::Auto, "photos/a.JPG", b""),
            Method::Stored
        );
        assert_eq!(
            method_for(Compression::Auto, "docs/report.pdf", b""),
            Method::Stored
        );
        assert_eq!(
            method_for(Compression::Auto, "data.csv", b"a,b\n1,2"),
            Method::Deflated
        );
        assert_eq!(
            method_for(Compression::Auto, "README", b"# Title"),
            Method::Deflated
        );
        assert_eq!(
            method_for(Compression::Auto, "download", b"\x1f\x8b\x08\x00rest"),
            Method::Stored
        );
        assert_eq!(
            method_for(Compression::Auto, "clip", b"\x00\x00\x00\x18ftypmp42"),
            Method::Stored
        );
        assert_eq!(
            method_for(Compression::Auto, "image", b"RIFF\x10\x00\x00\x00WEBPVP8 "),
            Method::Stored
        );
        assert_eq!(
            method_for(Compression::Store, "data.csv", b""),
            Method::Stored
        );
        assert_eq!(
            method_for(Compression::Deflate, "a.jpg", b""),
            Method::Deflated
        );
    }
}
