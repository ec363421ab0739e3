//! The object key the archive is written to.

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;

use super::text_value;

/// S3's limit on key length, in UTF-8 bytes.
pub const MAX_OBJECT_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct ObjectKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectKeyError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_OBJECT_KEY_BYTES} bytes long")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("must not contain a backslash")]
    Backslash,
    #[error("must not start with `/` or contain an empty segment (`//`, a trailing `/`)")]
    EmptySegment,
    #[error("must not contain a `.` or `..` segment")]
    DotSegment,
}

impl ObjectKey {
    /// The rule: 1 to 1,024 bytes of UTF-8; no control characters; segments between `/` neither
    /// empty (no leading `/`, `//` or trailing `/`) nor `.` or `..`; no backslash. S3 itself
    /// takes keys literally, but zipkit cannot know which store is behind an endpoint, and stores
    /// that map keys to files (and tools that extract a bucket to disk) would resolve `..`.
    pub fn parse(key: &str) -> Result<Self, ObjectKeyError> {
        if key.is_empty() {
            return Err(ObjectKeyError::Empty);
        }
        if key.len() > MAX_OBJECT_KEY_BYTES {
            return Err(ObjectKeyError::TooLong);
        }
        // S3 accepts them but they break XML listings and most tools downstream.
        if key.chars().any(char::is_control) {
            return Err(ObjectKeyError::ControlCharacter);
        }
        // A path separator on Windows and on some stores: `..\x` climbs like `../x`.
        if key.contains('\\') {
            return Err(ObjectKeyError::Backslash);
        }
        for segment in key.split('/') {
            match segment {
                "" => return Err(ObjectKeyError::EmptySegment),
                "." | ".." => return Err(ObjectKeyError::DotSegment),
                _ => {}
            }
        }
        Ok(Self(key.to_owned()))
    }

    /// The last segment: the name a download of the object is saved under.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

text_value!(ObjectKey, ObjectKeyError);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_nested_and_unicode_keys() {
        for key in ["a.zip", "exports/2026-11.zip", "客户/归档 1.zip"] {
            assert!(ObjectKey::parse(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn the_file_name_is_the_last_segment() {
        for (key, name) in [
            ("a.zip", "a.zip"),
            ("exports/2026/客户 1.zip", "客户 1.zip"),
        ] {
            assert_eq!(ObjectKey::parse(key).unwrap().file_name(), name);
        }
    }

    #[test]
    fn rejects_empty_oversized_and_control_character_keys() {
        assert_eq!(ObjectKey::parse(""), Err(ObjectKeyError::Empty));
        assert!(ObjectKey::parse(&"k".repeat(MAX_OBJECT_KEY_BYTES)).is_ok());
        assert_eq!(
            ObjectKey::parse(&"k".repeat(MAX_OBJECT_KEY_BYTES + 1)),
            Err(ObjectKeyError::TooLong)
        );
        // 342 three-byte characters are 1026 bytes, over the limit though only 342 characters.
        assert_eq!(
            ObjectKey::parse(&"归".repeat(342)),
            Err(ObjectKeyError::TooLong)
        );
        assert_eq!(
            ObjectKey::parse("a\tb.zip"),
            Err(ObjectKeyError::ControlCharacter)
        );
    }

    #[test]
    fn rejects_keys_that_could_leave_the_bucket_on_a_path_mapped_store() {
        for (key, error) in [
            ("../other-bucket/x.zip", ObjectKeyError::DotSegment),
            ("exports/../../x.zip", ObjectKeyError::DotSegment),
            ("./x.zip", ObjectKeyError::DotSegment),
            ("exports/.", ObjectKeyError::DotSegment),
            ("..", ObjectKeyError::DotSegment),
            ("/x.zip", ObjectKeyError::EmptySegment),
            ("exports//x.zip", ObjectKeyError::EmptySegment),
            ("exports/", ObjectKeyError::EmptySegment),
            ("..\\x.zip", ObjectKeyError::Backslash),
            ("a\\b.zip", ObjectKeyError::Backslash),
        ] {
            assert_eq!(ObjectKey::parse(key), Err(error), "{key}");
        }
        // Dots inside a segment are ordinary names.
        for key in ["...zip", "a..b.zip", ".hidden/x.zip", "v1.2/x..zip"] {
            assert!(ObjectKey::parse(key).is_ok(), "{key}");
        }
    }

    proptest! {
        #[test]
        fn accepts_exactly_the_keys_within_the_rules(key in "[a-z./\\\\\\pL]{0,40}|\\PC{0,400}") {
            let segments_ok = key
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..");
            let expected = !key.is_empty()
                && key.len() <= MAX_OBJECT_KEY_BYTES
                && !key.contains('\\')
                && segments_ok;
            prop_assert_eq!(ObjectKey::parse(&key).is_ok(), expected);
        }
    }
}
