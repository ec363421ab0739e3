//! The object key the archive is written to.

use std::str::FromStr;

use super::text_value;

/// S3's limit on key length, in UTF-8 bytes.
pub const MAX_OBJECT_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectKeyError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_OBJECT_KEY_BYTES} bytes long")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl ObjectKey {
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
        Ok(Self(key.to_owned()))
    }
}

impl FromStr for ObjectKey {
    type Err = ObjectKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

text_value!(ObjectKey);

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

    proptest! {
        #[test]
        fn accepts_exactly_the_keys_within_the_rules(key in "\\PC{0,400}") {
            let expected = !key.is_empty() && key.len() <= MAX_OBJECT_KEY_BYTES;
            prop_assert_eq!(ObjectKey::parse(&key).is_ok(), expected);
        }
    }
}
