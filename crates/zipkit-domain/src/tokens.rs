//! API access tokens: 256 random bits behind a readable prefix, shown once, stored as SHA-256.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Every token starts with this, so leaked tokens are easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "zk_";
const RANDOM_BYTES: usize = 32;
/// Characters of the token kept in clear for lists: the prefix and 8 random characters.
pub const DISPLAY_PREFIX_LEN: usize = TOKEN_PREFIX.len() + 8;
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43; // 32 bytes in unpadded base64url

/// The SHA-256 of a token: the only form ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        Self(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `presented` is the token this hash was made from, compared in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        Self::of(presented).0.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A token just made: `secret` is shown to its owner once and then forgotten.
#[derive(Debug)]
pub struct GeneratedToken {
    pub secret: SecretString,
    pub display_prefix: String,
    pub hash: TokenHash,
}

#[derive(Debug, thiserror::Error)]
#[error("could not obtain random bytes for a token")]
pub struct RandomError;

pub fn generate_token() -> Result<GeneratedToken, RandomError> {
    let mut random = [0u8; RANDOM_BYTES];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| RandomError)?;
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    Ok(GeneratedToken {
        display_prefix: token[..DISPLAY_PREFIX_LEN].to_owned(),
        hash: TokenHash::of(&token),
        secret: SecretString::from(token),
    })
}

/// 256 random bits, base64url: dashboard session tokens and CSRF tokens.
pub fn random_secret() -> Result<String, RandomError> {
    let mut random = [0u8; RANDOM_BYTES];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| RandomError)?;
    Ok(URL_SAFE_NO_PAD.encode(random))
}

/// Whether two strings are equal, in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A cheap shape check before any database lookup, so junk never costs a query.
pub fn looks_like_token(candidate: &str) -> bool {
    candidate.len() == TOKEN_LEN
        && candidate.starts_with(TOKEN_PREFIX)
        && candidate[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The presented token's hash, when it has the right shape.
pub fn hash_presented(candidate: &SecretString) -> Option<TokenHash> {
    let candidate = candidate.expose_secret();
    looks_like_token(candidate).then(|| TokenHash::of(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_has_the_prefix_and_verifies_against_its_own_hash() {
        let token = generate_token().unwrap();
        let secret = token.secret.expose_secret();
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert!(looks_like_token(secret));
        assert!(secret.starts_with(&token.display_prefix));
        assert!(token.hash.verify(secret));
    }

    #[test]
    fn a_token_does_not_verify_against_another_tokens_hash() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a.secret.expose_secret(), b.secret.expose_secret());
        assert!(!a.hash.verify(b.secret.expose_secret()));
        assert!(!b.hash.verify(a.secret.expose_secret()));
    }

    #[test]
    fn a_token_altered_in_one_character_does_not_verify() {
        let token = generate_token().unwrap();
        let secret = token.secret.expose_secret();
        let mut altered = secret.to_owned().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(looks_like_token(&altered));
        assert!(!token.hash.verify(&altered));
        assert!(!token.hash.verify(""));
    }

    #[test]
    fn the_stored_hash_is_sha256_of_the_token_and_never_the_token() {
        let token = generate_token().unwrap();
        assert_eq!(token.hash.as_bytes().len(), 32);
        assert_eq!(
            TokenHash::from_bytes(token.hash.as_bytes()),
            Some(token.hash.clone())
        );
        assert!(!format!("{:?}", token).contains(token.secret.expose_secret()));
    }

    #[test]
    fn junk_is_refused_before_hashing() {
        for junk in [
            "",
            "zk_",
            "Bearer x",
            "sk_live_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            &format!("zk_{}", "!".repeat(43)),
        ] {
            assert!(!looks_like_token(junk), "{junk}");
            assert!(hash_presented(&SecretString::from(junk.to_owned())).is_none());
        }
    }
}
