//! A source the worker downloads: an absolute http(s) URL without credentials, or an object in
//! one of the project's registered buckets (`s3://<bucket>/<key>`, the key exactly as stored,
//! never percent-decoded, as the AWS CLI writes it).

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::Text;
use url::Url;

use super::text_value;

/// Longest accepted URL, in bytes (signed URLs are long; pages of query string are not sources).
pub const MAX_SOURCE_URL_BYTES: usize = 4096;

/// Kept as its text, in the URL standard's serialization: a parsed `Url` takes ~90 bytes more,
/// which a job's every entry would hold while the job runs. `to_url` gives the `Url` a request
/// needs, and cannot fail for a value that parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub struct SourceUrl(Box<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceUrlError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_SOURCE_URL_BYTES} bytes long")]
    TooLong,
    #[error("is not a valid absolute URL")]
    Malformed,
    #[error("must use http or https")]
    UnsupportedScheme,
    #[error("must not contain a user name or password")]
    UserInfo,
    #[error("must name a host")]
    MissingHost,
    #[error("must name an object key after the bucket (`s3://<bucket>/<key>`)")]
    MissingKey,
    #[error("has an object key longer than 1,024 bytes or with control characters")]
    InvalidKey,
}

/// The prefix of a source in one of the project's buckets.
pub const BUCKET_SCHEME: &str = "s3://";

/// Where a source's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceLocation<'a> {
    /// Fetched over HTTP(S).
    Web(Url),
    /// Read from the project's bucket of that name with the bucket's own keys.
    Bucket { bucket: &'a str, key: &'a str },
}

/// S3's longest object key, in bytes.
pub const MAX_SOURCE_KEY_BYTES: usize = 1024;

impl SourceUrl {
    pub fn parse(input: &str) -> Result<Self, SourceUrlError> {
        if input.is_empty() {
            return Err(SourceUrlError::Empty);
        }
        if input.len() > MAX_SOURCE_URL_BYTES {
            return Err(SourceUrlError::TooLong);
        }
        // The URL parser silently trims and drops some of these; a client sending them has a bug.
        if input.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(SourceUrlError::Malformed);
        }
        let url = Url::parse(input).map_err(|_| SourceUrlError::Malformed)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SourceUrlError::UnsupportedScheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SourceUrlError::UserInfo);
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(SourceUrlError::MissingHost);
        }
        if url.as_str().len() > MAX_SOURCE_URL_BYTES {
            return Err(SourceUrlError::TooLong);
        }
        Ok(Self(url.as_str().into()))
    }

    /// The object `key` in the project's bucket named `bucket`: any key S3 takes (1 to 1,024
    /// bytes) without control characters.
    pub fn bucket_object(bucket: &super::BucketName, key: &str) -> Result<Self, SourceUrlError> {
        if key.is_empty() {
            return Err(SourceUrlError::MissingKey);
        }
        if key.len() > MAX_SOURCE_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(SourceUrlError::InvalidKey);
        }
        Ok(Self(format!("{BUCKET_SCHEME}{bucket}/{key}").into()))
    }

    /// Where the bytes come from.
    pub fn location(&self) -> SourceLocation<'_> {
        match self.0.strip_prefix(BUCKET_SCHEME) {
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                SourceLocation::Bucket { bucket, key }
            }
            None => SourceLocation::Web(
                Url::parse(&self.0).expect("a SourceUrl holds a URL that parsed"),
            ),
        }
    }

    /// The URL to send a request to, for a source fetched over HTTP(S).
    pub fn web_url(&self) -> Option<Url> {
        match self.location() {
            SourceLocation::Web(url) => Some(url),
            SourceLocation::Bucket { .. } => None,
        }
    }
}

text_value!(SourceUrl, SourceUrlError, custom_read);

/// Read back as a URL that parses, or as a bucket object (a stored source was parsed on the way
/// in; the policy's limits are not applied again, so a rule made stricter later does not make
/// old rows unreadable).
impl FromSql<Text, Pg> for SourceUrl {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(value)?;
        Ok(Self::from_stored(text)?)
    }
}

impl SourceUrl {
    /// A stored source as `FromSql` reads it.
    pub(crate) fn from_stored(text: String) -> Result<Self, url::ParseError> {
        if text.starts_with(BUCKET_SCHEME) {
            return Ok(Self(text.into()));
        }
        Ok(Self(Url::parse(&text)?.as_str().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_http_and_https_with_unicode_hosts_and_paths() {
        for input in [
            "https://example.com/a.pdf",
            "http://127.0.0.1:8080/x?sig=abc&exp=1",
            "https://bücher.example/é/ファイル.txt",
        ] {
            assert!(SourceUrl::parse(input).is_ok(), "{input}");
        }
        let idn = SourceUrl::parse("https://bücher.example/x").unwrap();
        assert_eq!(
            idn.web_url().unwrap().host_str(),
            Some("xn--bcher-kva.example")
        );
    }

    #[test]
    fn a_bucket_object_keeps_its_key_exactly_and_never_parses_as_a_web_url() {
        let bucket = crate::values::BucketName::parse("photos-2026").unwrap();
        let key = "a b/c?d#e%20f/ファイル.txt";
        let source = SourceUrl::bucket_object(&bucket, key).unwrap();
        assert_eq!(source.as_str(), format!("s3://photos-2026/{key}"));
        assert_eq!(
            source.location(),
            SourceLocation::Bucket {
                bucket: "photos-2026",
                key
            }
        );
        assert_eq!(source.web_url(), None);
        assert_eq!(
            SourceUrl::parse("s3://photos-2026/a.txt"),
            Err(SourceUrlError::UnsupportedScheme)
        );
        assert_eq!(
            SourceUrl::bucket_object(&bucket, ""),
            Err(SourceUrlError::MissingKey)
        );
        assert_eq!(
            SourceUrl::bucket_object(&bucket, &"k".repeat(1025)),
            Err(SourceUrlError::InvalidKey)
        );
        assert_eq!(
            SourceUrl::bucket_object(&bucket, "a\nb"),
            Err(SourceUrlError::InvalidKey)
        );
    }

    #[test]
    fn rejects_each_bad_form_with_its_reason() {
        let cases = [
            ("", SourceUrlError::Empty),
            ("example.com/a.pdf", SourceUrlError::Malformed),
            ("/relative/path", SourceUrlError::Malformed),
            (" https://example.com/a", SourceUrlError::Malformed),
            ("https://exa mple.com/a", SourceUrlError::Malformed),
            ("https://example.com/a\nb", SourceUrlError::Malformed),
            ("ftp://example.com/a", SourceUrlError::UnsupportedScheme),
            ("file:///etc/passwd", SourceUrlError::UnsupportedScheme),
            ("javascript:alert(1)", SourceUrlError::UnsupportedScheme),
            ("https://user:pw@example.com/a", SourceUrlError::UserInfo),
            ("https://user@example.com/a", SourceUrlError::UserInfo),
        ];
        for (input, expected) in cases {
            assert_eq!(SourceUrl::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn rejects_urls_over_the_length_limit() {
        let base = "https://example.com/";
        let at_limit = format!("{base}{}", "a".repeat(MAX_SOURCE_URL_BYTES - base.len()));
        assert!(SourceUrl::parse(&at_limit).is_ok());
        let over = format!("{at_limit}a");
        assert_eq!(SourceUrl::parse(&over), Err(SourceUrlError::TooLong));
    }

    proptest! {
        #[test]
        fn every_accepted_url_is_http_without_credentials(input in "(https?|ftp|file)://([a-z]{1,5}(:[a-z]{0,3})?@)?[a-z0-9.-]{0,20}(/[\\PC]{0,30})?") {
            if let Ok(url) = SourceUrl::parse(&input) {
                prop_assert!(matches!(url.web_url().unwrap().scheme(), "http" | "https"));
                prop_assert!(url.web_url().unwrap().username().is_empty());
                prop_assert!(url.web_url().unwrap().password().is_none());
                prop_assert!(url.web_url().unwrap().host_str().is_some_and(|h| !h.is_empty()));
            }
        }
    }
}
