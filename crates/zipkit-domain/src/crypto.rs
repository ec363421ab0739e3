//! Encryption at rest for bucket credentials and webhook secrets: AES-256-GCM (ring) under a key
//! ring from configuration. Each ciphertext is bound to the row and field it belongs to (associated
//! data), so one copied to another row or field, or altered, fails to decrypt.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

/// `[crypto]` settings: named 32-byte keys (base64) and the one new secrets are sealed with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoSettings {
    pub active_key: String,
    #[serde(default)]
    pub keys: BTreeMap<String, SecretString>,
    /// A folder whose every file is a key named after the file (a mounted Kubernetes Secret).
    /// Ids that environment variable names cannot carry (`prod-2026`, `Key.1`) work here:
    /// `ZIPKIT__CRYPTO__KEYS__<ID>` is read in lower case, with no `-` or `.`.
    #[serde(default)]
    pub keys_dir: Option<std::path::PathBuf>,
}

impl CryptoSettings {
    /// `keys` and the files of `keys_dir`, by id.
    fn all_keys(&self) -> Result<BTreeMap<String, SecretString>, KeyRingError> {
        let mut all = self.keys.clone();
        let Some(dir) = &self.keys_dir else {
            return Ok(all);
        };
        let unreadable = |e: std::io::Error| KeyRingError::KeysDir {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        };
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Kubernetes' own entries in a mounted Secret (`..data`, `..2026_…`) and hidden files.
            if id.starts_with('.') || !std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
                continue;
            }
            let key = std::fs::read_to_string(entry.path()).map_err(unreadable)?;
            if all.insert(id.clone(), SecretString::from(key)).is_some() {
                return Err(KeyRingError::DuplicateId(id));
            }
        }
        Ok(all)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("crypto.keys is empty; configure at least one 32-byte key (base64)")]
    NoKeys,
    #[error(
        "crypto.active_key `{active}` is not one of crypto.keys ({known}); ids set as ZIPKIT__CRYPTO__KEYS__<ID> variables are read in lower case with no `-` or `.`: give such ids as files in crypto.keys_dir"
    )]
    UnknownActiveKey { active: String, known: String },
    #[error("crypto.keys_dir `{dir}` cannot be read: {reason}")]
    KeysDir { dir: String, reason: String },
    #[error("crypto key `{0}` is given both in crypto.keys and as a file in crypto.keys_dir")]
    DuplicateId(String),
    #[error("crypto.keys.{0} is not valid base64")]
    NotBase64(String),
    #[error("crypto.keys.{id} must decode to 32 bytes, got {len}")]
    WrongLength { id: String, len: usize },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the secret was sealed with key `{0}`, which is not in crypto.keys")]
    UnknownKey(String),
    #[error("the secret does not decrypt: it was altered, or copied from another record or field")]
    Rejected,
    #[error("could not obtain random bytes for a nonce")]
    Random,
}

/// What a ciphertext belongs to: the table/field and the row id, fed to AES-GCM as associated data.
#[derive(Debug, Clone, Copy)]
pub struct SecretBinding<'a> {
    pub field: &'a str,
    pub row: Uuid,
}

impl SecretBinding<'_> {
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(16 + self.field.len() + 16);
        aad.extend_from_slice(b"zipkit/v1/");
        aad.extend_from_slice(self.field.as_bytes());
        aad.push(b'/');
        aad.extend_from_slice(self.row.as_bytes());
        aad
    }
}

/// A sealed secret and the id of the key that sealed it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    /// nonce (12 bytes) || ciphertext || tag (16 bytes)
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

pub struct KeyRing {
    active: String,
    keys: BTreeMap<String, LessSafeKey>,
    rng: SystemRandom,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    pub fn from_settings(settings: &CryptoSettings) -> Result<Self, KeyRingError> {
        let all = settings.all_keys()?;
        if all.is_empty() {
            return Err(KeyRingError::NoKeys);
        }
        let mut keys = BTreeMap::new();
        for (id, encoded) in &all {
            let bytes = BASE64
                .decode(encoded.expose_secret().trim())
                .map_err(|_| KeyRingError::NotBase64(id.clone()))?;
            let unbound =
                UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| KeyRingError::WrongLength {
                    id: id.clone(),
                    len: bytes.len(),
                })?;
            keys.insert(id.clone(), LessSafeKey::new(unbound));
        }
        if !keys.contains_key(&settings.active_key) {
            return Err(KeyRingError::UnknownActiveKey {
                active: settings.active_key.clone(),
                known: keys.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(Self {
            active: settings.active_key.clone(),
            keys,
            rng: SystemRandom::new(),
        })
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    pub fn seal(
        &self,
        plaintext: &[u8],
        binding: SecretBinding<'_>,
    ) -> Result<Sealed, CryptoError> {
        let key = &self.keys[&self.active];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut in_out = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(binding.associated_data()),
            &mut in_out,
        )
        .map_err(|_| CryptoError::Rejected)?;
        let mut ciphertext = Vec::with_capacity(NONCE_LEN + in_out.len());
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&in_out);
        Ok(Sealed {
            key_id: self.active.clone(),
            ciphertext,
        })
    }

    pub fn seal_str(
        &self,
        plaintext: &SecretString,
        binding: SecretBinding<'_>,
    ) -> Result<Sealed, CryptoError> {
        self.seal(plaintext.expose_secret().as_bytes(), binding)
    }

    pub fn open(
        &self,
        sealed: &Sealed,
        binding: SecretBinding<'_>,
    ) -> Result<SecretString, CryptoError> {
        let key = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.ciphertext.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CryptoError::Rejected);
        }
        let (nonce, body) = sealed.ciphertext.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Rejected)?;
        let mut in_out = body.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(binding.associated_data()), &mut in_out)
            .map_err(|_| CryptoError::Rejected)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Rejected)?;
        Ok(SecretString::from(text))
    }

    /// For key rotation: the secret sealed again under the active key, or `None` when it already is.
    pub fn reseal(
        &self,
        sealed: &Sealed,
        binding: SecretBinding<'_>,
    ) -> Result<Option<Sealed>, CryptoError> {
        if sealed.key_id == self.active {
            return Ok(None);
        }
        let plain = self.open(sealed, binding)?;
        self.seal_str(&plain, binding).map(Some)
    }
}

/// A fresh random key, base64-encoded, for `crypto.keys` (used by the CLI and the demo).
pub fn generate_key() -> Result<String, CryptoError> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| CryptoError::Random)?;
    Ok(BASE64.encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_with(active: &str, ids: &[&str]) -> KeyRing {
        let keys = ids
            .iter()
            .map(|id| {
                (
                    (*id).to_owned(),
                    SecretString::from(generate_key().unwrap()),
                )
            })
            .collect();
        KeyRing::from_settings(&CryptoSettings {
            active_key: active.to_owned(),
            keys,
            keys_dir: None,
        })
        .unwrap()
    }

    fn binding(field: &str, row: Uuid) -> SecretBinding<'_> {
        SecretBinding { field, row }
    }

    #[test]
    fn a_sealed_secret_opens_with_the_same_binding() {
        let ring = ring_with("k1", &["k1"]);
        let row = Uuid::new_v4();
        let sealed = ring
            .seal(b"AKIAEXAMPLE", binding("buckets.access_key_id", row))
            .unwrap();
        assert!(!sealed.ciphertext.windows(11).any(|w| w == b"AKIAEXAMPLE"));
        let opened = ring
            .open(&sealed, binding("buckets.access_key_id", row))
            .unwrap();
        assert_eq!(opened.expose_secret(), "AKIAEXAMPLE");
    }

    #[test]
    fn a_ciphertext_copied_to_another_row_is_rejected() {
        let ring = ring_with("k1", &["k1"]);
        let sealed = ring
            .seal(
                b"secret",
                binding("buckets.secret_access_key", Uuid::new_v4()),
            )
            .unwrap();
        let other_row = binding("buckets.secret_access_key", Uuid::new_v4());
        assert_eq!(
            ring.open(&sealed, other_row).unwrap_err(),
            CryptoError::Rejected
        );
    }

    #[test]
    fn a_ciphertext_swapped_between_fields_is_rejected() {
        let ring = ring_with("k1", &["k1"]);
        let row = Uuid::new_v4();
        let sealed = ring
            .seal(b"secret", binding("buckets.secret_access_key", row))
            .unwrap();
        assert_eq!(
            ring.open(&sealed, binding("buckets.access_key_id", row))
                .unwrap_err(),
            CryptoError::Rejected
        );
    }

    #[test]
    fn a_tampered_ciphertext_is_rejected_wherever_the_bit_flips() {
        let ring = ring_with("k1", &["k1"]);
        let row = Uuid::new_v4();
        let sealed = ring.seal(b"secret", binding("f", row)).unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut tampered = sealed.clone();
            tampered.ciphertext[i] ^= 0x01;
            assert_eq!(
                ring.open(&tampered, binding("f", row)).unwrap_err(),
                CryptoError::Rejected,
                "byte {i}"
            );
        }
        let mut truncated = sealed.clone();
        truncated.ciphertext.truncate(20);
        assert_eq!(
            ring.open(&truncated, binding("f", row)).unwrap_err(),
            CryptoError::Rejected
        );
    }

    #[test]
    fn a_secret_sealed_under_an_unknown_key_names_the_key() {
        let old = ring_with("old", &["old"]);
        let row = Uuid::new_v4();
        let sealed = old.seal(b"secret", binding("f", row)).unwrap();
        let new = ring_with("new", &["new"]);
        assert_eq!(
            new.open(&sealed, binding("f", row)).unwrap_err(),
            CryptoError::UnknownKey("old".into())
        );
    }

    #[test]
    fn a_key_with_the_same_id_but_other_bytes_rejects() {
        let a = ring_with("k1", &["k1"]);
        let b = ring_with("k1", &["k1"]);
        let row = Uuid::new_v4();
        let sealed = a.seal(b"secret", binding("f", row)).unwrap();
        assert_eq!(
            b.open(&sealed, binding("f", row)).unwrap_err(),
            CryptoError::Rejected
        );
    }

    #[test]
    fn reseal_moves_a_secret_to_the_active_key_and_skips_current_ones() {
        let keys: BTreeMap<String, SecretString> = ["old", "new"]
            .iter()
            .map(|id| {
                (
                    (*id).to_owned(),
                    SecretString::from(generate_key().unwrap()),
                )
            })
            .collect();
        let old = KeyRing::from_settings(&CryptoSettings {
            active_key: "old".into(),
            keys: keys.clone(),
            keys_dir: None,
        })
        .unwrap();
        let new = KeyRing::from_settings(&CryptoSettings {
            active_key: "new".into(),
            keys,
            keys_dir: None,
        })
        .unwrap();
        let row = Uuid::new_v4();
        let sealed = old.seal(b"secret", binding("f", row)).unwrap();
        let resealed = new
            .reseal(&sealed, binding("f", row))
            .unwrap()
            .expect("moved to the new key");
        assert_eq!(resealed.key_id, "new");
        assert_eq!(
            new.open(&resealed, binding("f", row))
                .unwrap()
                .expose_secret(),
            "secret"
        );
        assert_eq!(new.reseal(&resealed, binding("f", row)).unwrap(), None);
    }

    #[test]
    fn bad_key_settings_fail_naming_the_key() {
        let settings = |active: &str, id: &str, key: &str| CryptoSettings {
            active_key: active.into(),
            keys: [(id.to_owned(), SecretString::from(key.to_owned()))].into(),
            keys_dir: None,
        };
        let short = BASE64.encode([0u8; 16]);
        assert_eq!(
            KeyRing::from_settings(&settings("k1", "k1", &short))
                .unwrap_err()
                .to_string(),
            "crypto.keys.k1 must decode to 32 bytes, got 16"
        );
        assert_eq!(
            KeyRing::from_settings(&settings("k1", "k1", "***"))
                .unwrap_err()
                .to_string(),
            "crypto.keys.k1 is not valid base64"
        );
        let good = generate_key().unwrap();
        assert_eq!(
            KeyRing::from_settings(&settings("k2", "k1", &good))
                .unwrap_err()
                .to_string(),
            "crypto.active_key `k2` is not one of crypto.keys (k1); ids set as ZIPKIT__CRYPTO__KEYS__<ID> variables are read in lower case with no `-` or `.`: give such ids as files in crypto.keys_dir"
        );
    }

    #[test]
    fn keys_dir_names_keys_by_their_file_names_hyphens_dots_and_case_kept() {
        let dir = std::env::temp_dir().join(format!("zipkit-keys-{}", Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("..2026_12_06")).unwrap();
        // As a mounted Kubernetes Secret looks: files, a hidden data folder, a trailing newline.
        std::fs::write(
            dir.join("prod-2026"),
            format!("{}\n", generate_key().unwrap()),
        )
        .unwrap();
        std::fs::write(dir.join("Old.Key_1"), generate_key().unwrap()).unwrap();
        std::fs::write(dir.join("..data"), "not a key").unwrap();
        let settings = |active: &str| CryptoSettings {
            active_key: active.into(),
            keys: BTreeMap::new(),
            keys_dir: Some(dir.clone()),
        };
        let ring = KeyRing::from_settings(&settings("prod-2026")).unwrap();
        assert_eq!(
            format!("{ring:?}"),
            r#"KeyRing { active: "prod-2026", key_ids: ["Old.Key_1", "prod-2026"] }"#
        );
        let sealed = ring.seal(b"secret", binding("f", Uuid::nil())).unwrap();
        assert_eq!(sealed.key_id, "prod-2026");
        assert!(KeyRing::from_settings(&settings("Old.Key_1")).is_ok());
        assert!(
            KeyRing::from_settings(&settings("prod_2026"))
                .unwrap_err()
                .to_string()
                .contains("(Old.Key_1, prod-2026)")
        );
        // The same id from both places is refused rather than one silently winning.
        let both = CryptoSettings {
            keys: [(
                "prod-2026".to_owned(),
                SecretString::from(generate_key().unwrap()),
            )]
            .into(),
            ..settings("prod-2026")
        };
        assert!(matches!(
            KeyRing::from_settings(&both),
            Err(KeyRingError::DuplicateId(id)) if id == "prod-2026"
        ));
        let missing = CryptoSettings {
            keys_dir: Some(dir.join("nowhere")),
            ..settings("prod-2026")
        };
        assert!(
            KeyRing::from_settings(&missing)
                .unwrap_err()
                .to_string()
                .starts_with("crypto.keys_dir `")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
