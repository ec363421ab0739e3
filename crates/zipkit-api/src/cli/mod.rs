//! The operator CLI: everything the dashboard does, scriptable. Secrets (passwords, secret
//! access keys) are read from standard input — a hidden prompt on a terminal, the first line
//! otherwise — never from arguments, which leak into shell history and `ps`.
//!
//! Exit codes: 0 done, 1 unexpected failure (e.g. database unreachable), 2 usage error,
//! 3 invalid input, 4 not found, 5 test failed (bucket or webhook), 6 refused (duplicate,
//! still in use).

mod accounts;
mod bucket;
mod keys;
mod webhook;

pub use accounts::{ProjectCommand, Role, TokenCommand, UserCommand, project, token, user};
pub use bucket::{BucketAddArgs, BucketCommand, ServiceArg, bucket};
pub use keys::{KeysCommand, keys, keys_generate};
pub use webhook::{WebhookCommand, webhook};

use std::io::{BufRead, IsTerminal};

use diesel_async::AsyncPgConnection;
use secrecy::{ExposeSecret, SecretString};
use zipkit_domain::ProjectId;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::models::Project;

use crate::settings::Settings;

/// How a command reports what it made: sentences for people (the default; a secret shown once
/// goes alone on stdout, the sentence to stderr), or one JSON object on stdout for scripts, Helm
/// hooks and NOTES.txt recipes (`--output json`), errors then as `{"error": {...}}` on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

impl Output {
    /// Prints `text` (to stdout) or `json`.
    fn report(self, text: impl FnOnce() -> String, json: serde_json::Value) {
        match self {
            Self::Text => println!("{}", text()),
            Self::Json => println!("{json}"),
        }
    }

    /// A secret shown once: alone on stdout after `note` on stderr, or inside `json`.
    fn secret(self, note: impl FnOnce() -> String, secret: &str, json: serde_json::Value) {
        match self {
            Self::Text => {
                eprintln!("{}", note());
                println!("{secret}");
            }
            Self::Json => println!("{json}"),
        }
    }
}

/// A failure with its exit code; the message is printed as `error: …`.
#[derive(Debug)]
pub struct CliError {
    pub exit_code: i32,
    pub message: String,
}

impl CliError {
    fn new(exit_code: i32, message: impl Into<String>) -> Self {
        Self {
            exit_code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(3, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(4, message)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(err: E) -> Self {
        Self::new(1, err.to_string())
    }
}

/// Reads one secret: a hidden prompt on a terminal, the first line of piped input otherwise.
fn read_secret(prompt: &str) -> Result<SecretString, CliError> {
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)?
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if value.is_empty() {
        return Err(CliError::invalid(format!(
            "{} is empty (pipe it on standard input)",
            prompt.trim_end_matches(": ")
        )));
    }
    Ok(SecretString::from(value))
}

async fn connect(settings: &Settings) -> Result<AsyncPgConnection, CliError> {
    use diesel_async::AsyncConnection;
    AsyncPgConnection::establish(settings.database.url.expose_secret())
        .await
        .map_err(|e| CliError::new(1, format!("cannot reach PostgreSQL: {e}")))
}

fn egress(settings: &Settings) -> zipkit_egress::EgressPolicy {
    zipkit_egress::EgressPolicy::new(&settings.egress)
}

fn bucket_clients(settings: &Settings) -> zipkit_storage::BucketClients {
    zipkit_storage::BucketClients::new(egress(settings))
}

fn keyring(settings: &Settings) -> Result<KeyRing, CliError> {
    KeyRing::from_settings(&settings.crypto).map_err(|e| CliError::new(1, e.to_string()))
}

async fn project_exists(conn: &mut AsyncPgConnection, id: ProjectId) -> Result<Project, CliError> {
    Project::find(conn, id)
        .await?
        .ok_or_else(|| CliError::not_found(format!("no project {id}")))
}

fn day(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}
