//! A bucket name under S3's general-purpose naming rules (R2's are a subset).

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;

use super::text_value;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct BucketName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketNameError {
    #[error("must be between 3 and 63 characters long")]
    Length,
    #[error("may contain only lowercase letters, digits, dots and hyphens")]
    InvalidCharacter,
    #[error("must begin and end with a letter or digit")]
    Edge,
    #[error("must not contain two adjacent dots")]
    AdjacentDots,
    #[error("must not be formatted as an IP address")]
    IpAddress,
    #[error("must not use a prefix or suffix reserved by S3")]
    Reserved,
}

const RESERVED_PREFIXES: &[&str] = &["xn--", "sthree-", "amzn-s3-demo-"];
const RESERVED_SUFFIXES: &[&str] = &["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];

impl BucketName {
    pub fn parse(name: &str) -> Result<Self, BucketNameError> {
        if !(3..=63).contains(&name.len()) {
            return Err(BucketNameError::Length);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err(BucketNameError::InvalidCharacter);
        }
        let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let bytes = name.as_bytes();
        if !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) {
            return Err(BucketNameError::Edge);
        }
        if name.contains("..") {
            return Err(BucketNameError::AdjacentDots);
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(BucketNameError::IpAddress);
        }
        if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
            || RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s))
        {
            return Err(BucketNameError::Reserved);
        }
        Ok(Self(name.to_owned()))
    }
}

text_value!(BucketName, BucketNameError);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_valid_names() {
        for name in [
            "my-zipkit-archives",
            "abc",
            "a.b.c",
            "bucket-2026.11",
            &"a".repeat(63),
        ] {
            assert!(BucketName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_each_rule_with_its_reason() {
        let cases = [
            ("ab", BucketNameError::Length),
            (&*"a".repeat(64), BucketNameError::Length),
            ("My-Bucket", BucketNameError::InvalidCharacter),
            ("my_bucket", BucketNameError::InvalidCharacter),
            ("bücket", BucketNameError::InvalidCharacter),
            ("-bucket", BucketNameError::Edge),
            ("bucket.", BucketNameError::Edge),
            ("my..bucket", BucketNameError::AdjacentDots),
            ("192.168.5.4", BucketNameError::IpAddress),
            ("xn--bucket", BucketNameError::Reserved),
            ("sthree-bucket", BucketNameError::Reserved),
            ("bucket-s3alias", BucketNameError::Reserved),
            ("bucket--ol-s3", BucketNameError::Reserved),
        ];
        for (name, expected) in cases {
            assert_eq!(BucketName::parse(name), Err(expected), "{name}");
        }
    }

    proptest! {
        #[test]
        fn every_accepted_name_follows_the_character_rules(name in "[a-z0-9.\\-A-Z_]{0,70}") {
            if let Ok(parsed) = BucketName::parse(&name) {
                let s = parsed.as_str();
                prop_assert!((3..=63).contains(&s.len()));
                prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'));
                prop_assert!(!s.contains(".."));
                prop_assert!(!s.starts_with(['.', '-']) && !s.ends_with(['.', '-']));
            }
        }

        #[test]
        fn plain_lowercase_names_are_accepted(name in "[a-z0-9][a-z0-9-]{1,40}[a-z0-9]") {
            prop_assume!(!RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)));
            prop_assume!(!RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s)));
            prop_assert!(BucketName::parse(&name).is_ok());
        }
    }
}
