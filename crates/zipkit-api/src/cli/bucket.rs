//! `zipkit-api bucket`: register (with the write test), list, test again and remove a
//! project's buckets.

use clap::{Args, Subcommand, ValueEnum};
use secrecy::SecretString;
use serde_json::json;
use zipkit_domain::models::{Bucket, BucketCapabilities, BucketCredentials};
use zipkit_domain::{BucketId, ProjectId, Service};

use crate::admin::buckets::{self, BucketAdminError, BucketInput};
use crate::settings::Settings;

use super::{CliError, Output, bucket_clients, connect, day, keyring, project_exists, read_secret};

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
    /// Let jobs read their sources from a bucket (`s3://<bucket>/…`: its keys need
    /// s3:GetObject and s3:ListBucket), or stop them (`--deny`).
    Sources {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        bucket: BucketId,
        /// Let jobs read it.
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        allow: bool,
        /// Stop jobs reading it.
        #[arg(long)]
        deny: bool,
    },
    /// Delete a bucket (refused while zip jobs refer to it).
    Delete {
        #[arg(long)]
        project: ProjectId,
        #[arg(long)]
        bucket: BucketId,
    },
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
            output.report(
                || {
                    format!(
                        "added {} bucket {} ({}); {}",
                        bucket.service,
                        bucket.name,
                        bucket.id,
                        tested(bucket.capabilities.as_ref())
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
                    "capabilities": bucket.capabilities,
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
            output.report(
                || {
                    format!(
                        "updated the credentials of {} bucket {}; {}",
                        updated.service,
                        updated.name,
                        tested(updated.capabilities.as_ref())
                    )
                },
                json!({
                    "object": "bucket",
                    "id": updated.id,
                    "tested": !no_test,
                    "capabilities": updated.capabilities,
                }),
            );
        }
        BucketCommand::Test { project, bucket } => {
            let found = buckets::test(
                &mut conn,
                &keyring,
                project,
                bucket,
                &bucket_clients(settings),
            )
            .await
            .map_err(from_bucket_error)?;
            output.report(
                || tested(Some(&found)),
                json!({"object": "bucket_test", "bucket": bucket, "ok": true, "capabilities": found}),
            );
        }
        BucketCommand::Sources {
            project,
            bucket,
            allow,
            deny: _,
        } => {
            let updated = buckets::set_read_sources(&mut conn, project, bucket, allow)
                .await
                .map_err(from_bucket_error)?;
            let warning = allow
                .then(|| buckets::read_sources_missing(&updated))
                .flatten();
            output.report(
                || {
                    let said = if allow {
                        format!("jobs may read their sources from bucket {}", updated.name)
                    } else {
                        format!(
                            "jobs may no longer read sources from bucket {}",
                            updated.name
                        )
                    };
                    match &warning {
                        Some(warning) => format!("{said}; but {warning}"),
                        None => said,
                    }
                },
                json!({
                    "object": "bucket",
                    "id": updated.id,
                    "name": updated.name,
                    "read_sources": updated.read_sources,
                    "warning": warning,
                }),
            );
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

/// What a passed test found, a capability a line; or that no test ran.
fn tested(capabilities: Option<&BucketCapabilities>) -> String {
    let Some(found) = capabilities else {
        return "not tested (--no-test)".to_owned();
    };
    let mut text = "write test passed; the keys may:".to_owned();
    for line in found.lines() {
        let answer = if line.allowed {
            "yes".to_owned()
        } else {
            format!("no: needs {}", line.needs)
        };
        text.push_str(&format!("\n  {:<30} {answer}", line.label));
    }
    text
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
