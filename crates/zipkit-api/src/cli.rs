//! The operator CLI: everything the dashboard does, scriptable. Secrets (passwords, secret
//! access keys) are read from standard input — a hidden prompt on a terminal, the first line
//! otherwise — never from arguments, which leak into shell history and `ps`.
//!
//! Exit codes: 0 done, 1 unexpected failure (e.g. database unreachable), 2 usage error,
//! 3 invalid input, 4 not found, 5 test failed (bucket or webhook), 6 refused (duplicate,
//! still in use).

use std::io::{BufRead, IsTerminal};

use clap::{Args, Subcommand, ValueEnum};
use diesel_async::AsyncPgConnection;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::enums::ProjectRole;
use zipkit_domain::models::{
    AccessToken, Bucket, BucketCredentials, Project, User, WebhookDelivery, WebhookEndpoint,
    rotate_encryption_keys,
};
use zipkit_domain::{
    AccessTokenId, BucketId, DeliveryState, ProjectId, Service, WebhookEndpointId,
};

use crate::admin;
use crate::admin::buckets::{self, BucketAdminError, BucketInput};
use crate::admin::passwords;
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a dashboard user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project, optionally with its first owner.
    Create {
        #[arg(long)]
        name: String,
        /// Email of an existing user to make owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Add a user to a project (or change their role).
    AddMember {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        email: String,
        #[arg(long, value_enum, default_value_t = Role::Member)]
        role: Role,
    },
    /// List every project.
    List,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    Owner,
    Member,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an access token; it is printed once, on standard output.
    Create {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        name: String,
    },
    /// List a project's tokens (never the tokens themselves).
    List {
        #[arg(long)]
        project: ProjectId,
    },
    /// Revoke a token.
    Revoke {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        token: AccessTokenId,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ServiceArg {
    S3,
    R2,
}

#[derive(Debug, Args)]
pub struct BucketAddArgs {
    #[arg(long)]
    project: ProjectId,
    #[arg(long, value_enum)]
    service: ServiceArg,
    /// The bucket's name (it must already exist).
    #[arg(long)]
    name: String,
    /// AWS region (S3), e.g. `eu-west-1`; R2 is always `auto`.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Cloudflare account id (R2).
    #[arg(long)]
    account_id: Option<String>,
    /// Custom endpoint of an S3-compatible store.
    #[arg(long)]
    endpoint: Option<String>,
    /// Path-style addressing (most S3-compatible stores need it).
    #[arg(long)]
    path_style: bool,
    /// Canned ACL sent with uploads (S3 only); none by default.
    #[arg(long)]
    acl: Option<String>,
    #[arg(long)]
    access_key_id: String,
    /// Store without the write test.
    #[arg(long)]
    no_test: bool,
}

#[derive(Debug, Subcommand)]
pub enum BucketCommand {
    /// Add a bucket; the secret access key is read from standard input. Tested before it is saved.
    Add(Box<BucketAddArgs>),
    /// List a project's buckets (never their keys).
    List {
        #[arg(long)]
        project: ProjectId,
    },
    /// Replace a bucket's credentials (secret from standard input), retested before saving.
    Edit {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        bucket: BucketId,
        #[arg(long)]
        access_key_id: String,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        no_test: bool,
    },
    /// Run the write test with the stored credentials.
    Test {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        bucket: BucketId,
    },
    /// Delete a bucket (refused while zip jobs refer to it).
    Delete {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        bucket: BucketId,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random key for `crypto.keys`.
    Generate,
    /// Re-seal every stored secret under `crypto.active_key`.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add an endpoint; its signing secret is printed once, on standard output.
    Add {
        #[arg(long)]
        project: ProjectId,
        /// https (http only with `webhooks.allow_http`, for development).
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List a project's endpoints with their latest delivery.
    List {
        #[arg(long)]
        project: ProjectId,
    },
    /// Queue a `webhook.test` event for one endpoint and wait for a worker to deliver it.
    Test {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        endpoint: WebhookEndpointId,
        /// How long to wait for the first attempt.
        #[arg(long, default_value_t = 30)]
        wait_secs: u64,
    },
    /// Remove an endpoint (and its delivery history).
    Remove {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        endpoint: WebhookEndpointId,
    },
}

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

fn from_bucket_error(err: BucketAdminError) -> CliError {
    match err {
        BucketAdminError::Invalid { field, message } => {
            CliError::invalid(format!("--{}: {message}", field.replace('_', "-")))
        }
        BucketAdminError::NotFound => CliError::not_found("no such bucket in this project"),
        BucketAdminError::TestFailed(e) => CliError::new(5, format!("bucket test failed: {e}")),
        e @ (BucketAdminError::Duplicate { .. } | BucketAdminError::InUse { .. }) => {
            CliError::new(6, e.to_string())
        }
        BucketAdminError::Model(e) => CliError::new(1, e.to_string()),
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

pub async fn user(
    settings: &Settings,
    command: UserCommand,
    output: Output,
) -> Result<(), CliError> {
    let UserCommand::Create { email } = command;
    let email = email.trim().to_lowercase();
    if !(3..=320).contains(&email.len()) || !email.contains('@') {
        return Err(CliError::invalid("--email: not an email address"));
    }
    let password = read_secret("Password: ")?;
    let hash = passwords::hash(password.expose_secret(), &settings.passwords)
        .map_err(|e| CliError::invalid(e.to_string()))?;
    let mut conn = connect(settings).await?;
    if User::find_by_email(&mut conn, &email).await?.is_some() {
        return Err(CliError::new(
            6,
            format!("a user with email {email} already exists"),
        ));
    }
    let user = User::create(&mut conn, &email, &hash).await?;
    output.report(
        || format!("created user {} ({})", user.email, user.id),
        json!({"object": "user", "id": user.id, "email": user.email}),
    );
    Ok(())
}

pub async fn project(
    settings: &Settings,
    command: ProjectCommand,
    output: Output,
) -> Result<(), CliError> {
    let mut conn = connect(settings).await?;
    match command {
        ProjectCommand::Create { name, owner } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(CliError::invalid("--name: 1 to 200 characters"));
            }
            let owner =
                match owner {
                    Some(email) => Some(User::find_by_email(&mut conn, &email).await?.ok_or_else(
                        || CliError::not_found(format!("no user with email {email}")),
                    )?),
                    None => None,
                };
            let project = Project::create(&mut conn, name).await?;
            if let Some(owner) = &owner {
                Project::add_member(&mut conn, project.id, owner.id, ProjectRole::Owner).await?;
            }
            output.report(
                || format!("created project {} ({})", project.name, project.id),
                json!({
                    "object": "project",
                    "id": project.id,
                    "name": project.name,
                    "owner": owner.as_ref().map(|o| &o.email),
                }),
            );
        }
        ProjectCommand::AddMember {
            project,
            email,
            role,
        } => {
            project_exists(&mut conn, project).await?;
            let user = User::find_by_email(&mut conn, &email)
                .await?
                .ok_or_else(|| CliError::not_found(format!("no user with email {email}")))?;
            let role = match role {
                Role::Owner => ProjectRole::Owner,
                Role::Member => ProjectRole::Member,
            };
            Project::add_member(&mut conn, project, user.id, role).await?;
            println!(
                "{} is now {} of project {project}",
                user.email,
                role.as_str()
            );
        }
        ProjectCommand::List => {
            println!("{:<36}  {:<16}  NAME", "ID", "CREATED");
            for p in Project::list(&mut conn).await? {
                println!("{:<36}  {:<16}  {}", p.id, day(p.created_at), p.name);
            }
        }
    }
    Ok(())
}

pub async fn token(
    settings: &Settings,
    command: TokenCommand,
    output: Output,
) -> Result<(), CliError> {
    let mut conn = connect(settings).await?;
    match command {
        TokenCommand::Create { project, name } => {
            project_exists(&mut conn, project).await?;
            let created = admin::tokens::create(&mut conn, project, &name)
                .await
                .map_err(from_token_error)?;
            output.secret(
                || {
                    format!(
                        "created token {} ({}); it is shown once, below:",
                        created.stored.prefix, created.stored.id
                    )
                },
                created.secret.expose_secret(),
                json!({
                    "object": "token",
                    "id": created.stored.id,
                    "project_id": project,
                    "name": name,
                    "prefix": created.stored.prefix,
                    "secret": created.secret.expose_secret(),
                }),
            );
        }
        TokenCommand::List { project } => {
            project_exists(&mut conn, project).await?;
            println!(
                "{:<36}  {:<12}  {:<16}  {:<16}  {:<8}  NAME",
                "ID", "PREFIX", "CREATED", "LAST USED", "STATE"
            );
            for t in AccessToken::list(&mut conn, project).await? {
                let last = t.last_used_at.map_or_else(|| "never".to_owned(), day);
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!(
                    "{:<36}  {:<12}  {:<16}  {:<16}  {:<8}  {}",
                    t.id,
                    t.prefix,
                    day(t.created_at),
                    last,
                    state,
                    t.name
                );
            }
        }
        TokenCommand::Revoke { project, token } => {
            project_exists(&mut conn, project).await?;
            if admin::tokens::revoke(&mut conn, project, token)
                .await
                .map_err(from_token_error)?
            {
                println!("revoked token {token}");
            } else {
                println!("token {token} was already revoked");
            }
        }
    }
    Ok(())
}

fn from_token_error(err: admin::tokens::TokenAdminError) -> CliError {
    use admin::tokens::TokenAdminError;
    match err {
        TokenAdminError::InvalidName => CliError::invalid("--name: 1 to 200 characters"),
        TokenAdminError::NotFound => CliError::not_found("no such token in this project"),
        other => CliError::new(1, other.to_string()),
    }
}

pub async fn bucket(
    settings: &Settings,
    command: BucketCommand,
    output: Output,
) -> Result<(), CliError> {
    let mut conn = connect(settings).await?;
    let keyring = keyring(settings)?;
    match command {
        BucketCommand::Add(args) => {
            project_exists(&mut conn, args.project).await?;
            let secret = read_secret("Secret access key: ")?;
            let service = match args.service {
                ServiceArg::S3 => Service::S3,
                ServiceArg::R2 => Service::R2,
            };
            let input = BucketInput {
                service,
                name: args.name,
                region: args.region,
                account_id: args.account_id,
                endpoint_url: args.endpoint,
                path_style: args.path_style,
                acl: args.acl,
                access_key_id: SecretString::from(args.access_key_id),
                secret_access_key: secret,
            };
            let bucket = buckets::add(
                &mut conn,
                &keyring,
                args.project,
                input,
                args.no_test,
                &bucket_clients(settings),
            )
            .await
            .map_err(from_bucket_error)?;
            let tested = if args.no_test {
                "not tested (--no-test)"
            } else {
                "write test passed"
            };
            output.report(
                || {
                    format!(
                        "added {} bucket {} ({}); {tested}",
                        bucket.service, bucket.name, bucket.id
                    )
                },
                json!({
                    "object": "bucket",
                    "id": bucket.id,
                    "project_id": args.project,
                    "service": bucket.service.as_str(),
                    "name": bucket.name,
                    "region": bucket.region,
                    "tested": !args.no_test,
                }),
            );
        }
        BucketCommand::List { project } => {
            project_exists(&mut conn, project).await?;
            println!(
                "{:<36}  {:<7}  {:<16}  {:<12}  {:<8}  {:<6}  NAME",
                "ID", "SERVICE", "CREATED", "REGION", "KEY", "TEST"
            );
            for b in Bucket::list(&mut conn, project).await? {
                let test = match b.last_test_ok {
                    Some(true) => "ok",
                    Some(false) => "failed",
                    None => "-",
                };
                println!(
                    "{:<36}  {:<7}  {:<16}  {:<12}  {:<8}  {:<6}  {}",
                    b.id,
                    b.service.as_str().to_uppercase(),
                    day(b.created_at),
                    b.region,
                    b.access_key_hint,
                    test,
                    b.name
                );
            }
        }
        BucketCommand::Edit {
            project,
            bucket,
            access_key_id,
            region,
            no_test,
        } => {
            let secret = read_secret("Secret access key: ")?;
            let credentials = BucketCredentials {
                access_key_id: SecretString::from(access_key_id),
                secret_access_key: secret,
            };
            let updated = buckets::edit_credentials(
                &mut conn,
                &keyring,
                project,
                bucket,
                buckets::CredentialsEdit {
                    credentials,
                    region,
                    skip_test: no_test,
                },
                &bucket_clients(settings),
            )
            .await
            .map_err(from_bucket_error)?;
            println!(
                "updated the credentials of {} bucket {}",
                updated.service, updated.name
            );
        }
        BucketCommand::Test { project, bucket } => {
            buckets::test(
                &mut conn,
                &keyring,
                project,
                bucket,
                &bucket_clients(settings),
            )
            .await
            .map_err(from_bucket_error)?;
            println!("write test passed");
        }
        BucketCommand::Delete { project, bucket } => {
            buckets::delete(&mut conn, project, bucket)
                .await
                .map_err(from_bucket_error)?;
            println!("deleted bucket {bucket}");
        }
    }
    Ok(())
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

fn from_webhook_error(err: admin::webhooks::WebhookAdminError) -> CliError {
    use admin::webhooks::WebhookAdminError;
    match err {
        WebhookAdminError::Invalid { field, message } => {
            CliError::invalid(format!("--{field}: {message}"))
        }
        WebhookAdminError::NotFound => {
            CliError::not_found("no such webhook endpoint in this project")
        }
        other => CliError::new(1, other.to_string()),
    }
}

pub async fn webhook(
    settings: &Settings,
    command: WebhookCommand,
    output: Output,
) -> Result<(), CliError> {
    let mut conn = connect(settings).await?;
    match command {
        WebhookCommand::Add {
            project,
            url,
            description,
        } => {
            project_exists(&mut conn, project).await?;
            let created = admin::webhooks::create(
                &mut conn,
                &keyring(settings)?,
                project,
                &url,
                &description,
                settings.webhooks.allow_http,
                &egress(settings),
            )
            .await
            .map_err(from_webhook_error)?;
            output.secret(
                || {
                    format!(
                        "created webhook endpoint {} ({}); its signing secret is shown once, below:",
                        created.endpoint.url, created.endpoint.id
                    )
                },
                created.secret.expose_secret(),
                json!({
                    "object": "webhook_endpoint",
                    "id": created.endpoint.id,
                    "project_id": project,
                    "url": created.endpoint.url,
                    "secret": created.secret.expose_secret(),
                }),
            );
        }
        WebhookCommand::List { project } => {
            project_exists(&mut conn, project).await?;
            println!(
                "{:<36}  {:<8}  {:<16}  {:<22}  URL (DESCRIPTION)",
                "ID", "STATE", "CREATED", "LAST DELIVERY"
            );
            for e in WebhookEndpoint::list(&mut conn, project).await? {
                let last = WebhookDelivery::recent(&mut conn, e.id, 1).await?;
                let last = last.first().map_or_else(
                    || "none".to_owned(),
                    |d| match d.last_status_code {
                        Some(code) => format!("{} (HTTP {code})", d.state),
                        None => d.state.to_string(),
                    },
                );
                let state = if e.enabled { "enabled" } else { "disabled" };
                let description = if e.description.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.description)
                };
                println!(
                    "{:<36}  {:<8}  {:<16}  {:<22}  {}{}",
                    e.id,
                    state,
                    day(e.created_at),
                    last,
                    e.url,
                    description
                );
            }
        }
        WebhookCommand::Test {
            project,
            endpoint,
            wait_secs,
        } => {
            let endpoint = admin::webhooks::find(&mut conn, project, endpoint)
                .await
                .map_err(from_webhook_error)?;
            let event_id = admin::webhooks::queue_test(&mut conn, &endpoint)
                .await
                .map_err(from_webhook_error)?;
            eprintln!(
                "queued test event {event_id} for {}; waiting for a worker to deliver it",
                endpoint.url
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
            loop {
                let delivery = WebhookDelivery::for_event(&mut conn, &event_id)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| CliError::new(1, "the test delivery disappeared"))?;
                if delivery.attempts > 0 {
                    let attempts = WebhookDelivery::attempts(&mut conn, delivery.id).await?;
                    let last = attempts.last();
                    let what = match last {
                        Some(a) => match (&a.status_code, &a.error) {
                            (Some(code), _) => format!("HTTP {code} in {} ms", a.duration_ms),
                            (None, Some(error)) => error.clone(),
                            (None, None) => "no answer".to_owned(),
                        },
                        None => "no answer".to_owned(),
                    };
                    if delivery.state == DeliveryState::Succeeded {
                        println!("delivered: {what}");
                        return Ok(());
                    }
                    let next = if delivery.state == DeliveryState::Pending {
                        "; it will be retried"
                    } else {
                        ""
                    };
                    return Err(CliError::new(
                        5,
                        format!("webhook test failed: {what}{next}"),
                    ));
                }
                if std::time::Instant::now() >= deadline {
                    return Err(CliError::new(
                        1,
                        format!(
                            "no worker attempted the delivery within {wait_secs} s (is a worker running?); it stays queued"
                        ),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        WebhookCommand::Remove { project, endpoint } => {
            let endpoint = admin::webhooks::remove(&mut conn, project, endpoint)
                .await
                .map_err(from_webhook_error)?;
            println!(
                "removed webhook endpoint {} ({})",
                endpoint.url, endpoint.id
            );
        }
    }
    Ok(())
}
