//! `zipkit-api keys`: a new encryption key, and re-sealing every stored secret under the
//! active one.

use clap::Subcommand;
use serde_json::json;
use zipkit_domain::models::rotate_encryption_keys;

use crate::settings::Settings;

use super::{CliError, Output, connect, keyring};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random key for `crypto.keys`.
    Generate,
    /// Re-seal every stored secret under `crypto.active_key`.
    Rotate,
}

/// `keys generate`: needs no settings, since it makes the first key.
pub fn keys_generate(output: Output) -> Result<(), CliError> {
    let key = zipkit_domain::crypto::generate_key()?;
    output.report(|| key.clone(), json!({"object": "key", "key": key}));
    Ok(())
}

pub async fn keys(
    settings: &Settings,
    command: KeysCommand,
    output: Output,
) -> Result<(), CliError> {
    match command {
        KeysCommand::Generate => keys_generate(output)?,
        KeysCommand::Rotate => {
            let keyring = keyring(settings)?;
            let mut conn = connect(settings).await?;
            let report = rotate_encryption_keys(&mut conn, &keyring).await?;
            println!(
                "re-sealed {} bucket(s) and {} webhook endpoint(s) under key {}",
                report.buckets,
                report.webhook_endpoints,
                keyring.active_key_id()
            );
        }
    }
    Ok(())
}
