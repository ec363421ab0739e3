//! `zipkit-api webhook`: endpoints (with their signing secrets), test events and deliveries.

use clap::Subcommand;
use secrecy::ExposeSecret;
use serde_json::json;
use zipkit_domain::models::{WebhookDelivery, WebhookEndpoint};
use zipkit_domain::{DeliveryState, ProjectId, WebhookEndpointId};

use crate::admin;
use crate::settings::Settings;

use super::{CliError, Output, connect, day, egress, keyring, project_exists};

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
