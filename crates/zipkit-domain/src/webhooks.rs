//! Webhook signing and settings, shared by the worker (which delivers) and the CLI (which adds
//! endpoints and sends test events).
//!
//! Each delivery carries `Zipkit-Signature: t=<unix seconds>,v1=<hex>`, where `<hex>` is
//! HMAC-SHA256 with the endpoint's signing secret over `<t>.<raw body>`. A receiver recomputes
//! it, compares in constant time, and rejects timestamps too far from its clock (replays).

use ring::hmac;
use serde::Deserialize;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Zipkit-Signature";

/// `[webhooks]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Accept `http://` endpoint URLs (development only; https otherwise).
    pub allow_http: bool,
    /// How long one delivery attempt may take.
    pub timeout_secs: u64,
    /// Delay before the first retry, doubled after each failed attempt (at most an hour).
    pub first_retry_secs: u64,
    /// How long a failing delivery keeps being retried before it is marked failed.
    pub retry_for_secs: u64,
}

/// The `Zipkit-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Checks a `Zipkit-Signature` value the way a receiver should: same HMAC, constant-time
/// comparison, timestamp within `tolerance` of `now`.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance: i64) -> bool {
    let mut timestamp = None;
    let mut given = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => given = Some(v),
            _ => {}
        }
    }
    let (Some(timestamp), Some(given)) = (timestamp, given) else {
        return false;
    };
    if (now - timestamp).abs() > tolerance {
        return false;
    }
    let Some(tag) = decode_hex(given) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    hmac::verify(&key, &message, &tag).is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A new signing secret: `whsec_` and 256 random bits, base64url.
pub fn generate_secret() -> Result<String, ring::error::Unspecified> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Why an endpoint URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("not a URL")]
    NotAUrl,
    #[error("the URL must use https (http is allowed only in development)")]
    NotHttps,
    #[error("the URL must not contain a user name or password")]
    Credentials,
}

/// Parses an endpoint URL: absolute http(s), https unless `allow_http`, no credentials.
pub fn parse_url(text: &str, allow_http: bool) -> Result<url::Url, WebhookUrlError> {
    let url = url::Url::parse(text).map_err(|_| WebhookUrlError::NotAUrl)?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err(WebhookUrlError::NotHttps),
        _ => return Err(WebhookUrlError::NotAUrl),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(WebhookUrlError::NotAUrl);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebhookUrlError::Credentials);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let header = signature("whsec_test", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify(
            "whsec_test",
            &header,
            b"{\"a\":1}",
            1_700_000_010,
            300
        ));
        assert!(!verify(
            "whsec_other",
            &header,
            b"{\"a\":1}",
            1_700_000_010,
            300
        ));
        assert!(!verify(
            "whsec_test",
            &header,
            b"{\"a\":2}",
            1_700_000_010,
            300
        ));
        assert!(
            !verify("whsec_test", &header, b"{\"a\":1}", 1_700_009_999, 300),
            "replayed"
        );
        assert!(!verify("whsec_test", "t=1,v1=zz", b"", 1, 300));
    }

    #[test]
    fn endpoint_urls_are_https_unless_allowed() {
        assert!(parse_url("https://hooks.example.com/zipkit", false).is_ok());
        assert_eq!(
            parse_url("http://hooks.example.com/", false),
            Err(WebhookUrlError::NotHttps)
        );
        assert!(parse_url("http://127.0.0.1:9/hook", true).is_ok());
        assert_eq!(parse_url("ftp://x/", true), Err(WebhookUrlError::NotAUrl));
        assert_eq!(
            parse_url("https://u:p@x.example/", false),
            Err(WebhookUrlError::Credentials)
        );
    }
}
