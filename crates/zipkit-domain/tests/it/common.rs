//! Shared set-up for the domain's database tests.

use std::collections::BTreeMap;

use secrecy::SecretString;
use zipkit_domain::crypto::{CryptoSettings, KeyRing, generate_key};
use zipkit_test_support::TestDatabase;

pub async fn database() -> TestDatabase {
    TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await
}

/// A key ring of fresh random keys named `ids`, with `active` sealing new secrets.
pub fn keyring(active: &str, keys: &BTreeMap<String, SecretString>) -> KeyRing {
    KeyRing::from_settings(&CryptoSettings {
        active_key: active.to_owned(),
        keys: keys.clone(),
        keys_dir: None,
    })
    .expect("key ring")
}

pub fn random_keys(ids: &[&str]) -> BTreeMap<String, SecretString> {
    ids.iter()
        .map(|id| {
            (
                (*id).to_owned(),
                SecretString::from(generate_key().expect("key")),
            )
        })
        .collect()
}
