//! The path of a file inside the archive.

use unicode_normalization::UnicodeNormalization;

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;

use super::text_value;

/// Longest accepted name, in UTF-8 bytes (far below ZIP's 65,535 so archives extract everywhere).
pub const MAX_ENTRY_NAME_BYTES: usize = 1024;
/// Longest accepted path segment, in UTF-8 bytes: the common file-system limit.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// A relative, `/`-separated path inside the archive that extracts safely on every OS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct EntryName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryNameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ENTRY_NAME_BYTES} bytes long")]
    TooLong,
    #[error("each folder or file name must be at most {MAX_SEGMENT_BYTES} bytes long")]
    SegmentTooLong,
    #[error("must be a relative path (no leading `/` or drive letter)")]
    Absolute,
    #[error("must not contain a `..` path segment")]
    DotDot,
    #[error("must not contain empty or `.` path segments (`//`, `./`, or a trailing `/`)")]
    EmptySegment,
    #[error("must use `/` as the folder separator, not `\\`")]
    Backslash,
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl EntryName {
    pub fn parse(name: &str) -> Result<Self, EntryNameError> {
        if name.is_empty() {
            return Err(EntryNameError::Empty);
        }
        if name.len() > MAX_ENTRY_NAME_BYTES {
            return Err(EntryNameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(EntryNameError::ControlCharacter);
        }
        if name.contains('\\') {
            return Err(EntryNameError::Backslash);
        }
        if name.starts_with('/') || has_drive_letter(name) {
            return Err(EntryNameError::Absolute);
        }
        for segment in name.split('/') {
            match segment {
                ".." => return Err(EntryNameError::DotDot),
                "" | "." => return Err(EntryNameError::EmptySegment),
                s if s.len() > MAX_SEGMENT_BYTES => return Err(EntryNameError::SegmentTooLong),
                _ => {}
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// The form under which two names land on the same file on Windows (case-insensitive) and
    /// macOS (case- and normalization-insensitive): equal keys mean a duplicate.
    pub fn collision_key(&self) -> String {
        self.0.to_lowercase().nfc().collect()
    }
}

fn has_drive_letter(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

text_value!(EntryName, EntryNameError);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_nested_and_unicode_names() {
        for name in [
            "a.pdf",
            "docs/a.pdf",
            "résumé/こんにちは.txt",
            "📦/émoji file.bin",
            "a..b.txt",
            ".hidden",
        ] {
            assert_eq!(
                EntryName::parse(name).map(|n| n.into_string()),
                Ok(name.to_owned()),
                "{name}"
            );
        }
    }

    #[test]
    fn rejects_each_unsafe_form_with_its_reason() {
        let cases = [
            ("", EntryNameError::Empty),
            ("/etc/passwd", EntryNameError::Absolute),
            ("C:/x.txt", EntryNameError::Absolute),
            ("../x", EntryNameError::DotDot),
            ("a/../../x", EntryNameError::DotDot),
            ("a/..", EntryNameError::DotDot),
            ("a\\b.txt", EntryNameError::Backslash),
            ("a\u{0}b", EntryNameError::ControlCharacter),
            ("a\nb", EntryNameError::ControlCharacter),
            ("a\u{7f}b", EntryNameError::ControlCharacter),
            ("a//b", EntryNameError::EmptySegment),
            ("a/./b", EntryNameError::EmptySegment),
            ("folder/", EntryNameError::EmptySegment),
        ];
        for (name, expected) in cases {
            assert_eq!(EntryName::parse(name), Err(expected), "{name:?}");
        }
    }

    #[test]
    fn rejects_over_long_names_and_segments() {
        assert_eq!(
            EntryName::parse(&"a".repeat(MAX_SEGMENT_BYTES)).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            EntryName::parse(&"a".repeat(MAX_SEGMENT_BYTES + 1)),
            Err(EntryNameError::SegmentTooLong)
        );
        let long = vec!["b".repeat(200); 6].join("/");
        assert_eq!(EntryName::parse(&long), Err(EntryNameError::TooLong));
        // The limit counts bytes, not characters: 128 two-byte characters are 256 bytes.
        assert_eq!(
            EntryName::parse(&"é".repeat(128)),
            Err(EntryNameError::SegmentTooLong)
        );
    }

    #[test]
    fn names_differing_only_in_case_or_normalization_collide() {
        let a = EntryName::parse("Docs/Report.PDF").unwrap();
        let b = EntryName::parse("docs/report.pdf").unwrap();
        assert_eq!(a.collision_key(), b.collision_key());
        let composed = EntryName::parse("caf\u{e9}.txt").unwrap();
        let decomposed = EntryName::parse("cafe\u{301}.txt").unwrap();
        assert_eq!(composed.collision_key(), decomposed.collision_key());
        let other = EntryName::parse("docs/report2.pdf").unwrap();
        assert_ne!(a.collision_key(), other.collision_key());
    }

    proptest! {
        #[test]
        fn any_accepted_name_is_safe_to_extract(name in "\\PC{0,300}") {
            if let Ok(parsed) = EntryName::parse(&name) {
                let s = parsed.as_str();
                prop_assert!(!s.is_empty() && s.len() <= MAX_ENTRY_NAME_BYTES);
                prop_assert!(!s.starts_with('/') && !s.contains('\\'));
                prop_assert!(s.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
                prop_assert!(!s.chars().any(char::is_control));
            }
        }

        #[test]
        fn joined_plain_segments_are_accepted(segs in prop::collection::vec("[\\p{L}\\p{N} _.-]{1,40}", 1..5)) {
            prop_assume!(segs.iter().all(|s| s != "." && s != ".." && !(s.len() >= 2 && s.as_bytes()[1] == b':')));
            let name = segs.join("/");
            prop_assert_eq!(EntryName::parse(&name).map(|n| n.into_string()), Ok(name));
        }
    }
}
