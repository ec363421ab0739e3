//! Adding, testing and removing a project's webhook endpoints (CLI and dashboard).

use diesel_async::AsyncPgConnection;
use secrecy::SecretString;
use zipkit_domain::crypto::KeyRing;
use zipkit_domain::models::{ModelError, NewWebhookEndpoint, WebhookDelivery, WebhookEndpoint};
use zipkit_domain::{ProjectId, WebhookDeliveryId, WebhookEndpointId};
use zipkit_egress::{CheckError, EgressPolicy};

#[derive(Debug, thiserror::Error)]
pub enum WebhookAdminError {
    /// A field is invalid; `field` names it (for the form or the CLI flag).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no such webhook endpoint in this project")]
    NotFound,
    #[error("the system random generator failed")]
    Random,
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<diesel::result::Error> for WebhookAdminError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Model(ModelError::Query(err))
    }
}

/// An endpoint just created and its signing secret, which is shown once.
#[derive(Debug)]
pub struct CreatedEndpoint {
    pub endpoint: WebhookEndpoint,
    pub secret: SecretString,
}

pub async fn create(
    conn: &mut AsyncPgConnection,
    keyring: &KeyRing,
    project: ProjectId,
    url: &str,
    description: &str,
    allow_http: bool,
    egress: &EgressPolicy,
) -> Result<CreatedEndpoint, WebhookAdminError> {
    let url = zipkit_domain::webhooks::parse_url(url.trim(), allow_http).map_err(|e| {
        WebhookAdminError::Invalid {
            field: "url",
            message: e.to_string(),
        }
    })?;
    // The URL is a customer-supplied address: refused in plain words before anything connects
    // (the worker checks again on every delivery; a name may resolve differently later).
    if let Err(CheckError::Forbidden(forbidden)) = egress.check_url_now(&url).await {
        return Err(WebhookAdminError::Invalid {
            field: "url",
            message: format!(
                "`{}` is a private, loopback, link-local or otherwise internal address, which this deployment does not send webhooks to",
                forbidden.host
            ),
        });
    }
    let description = description.trim();
    if description.chars().count() > 500 {
        return Err(WebhookAdminError::Invalid {
            field: "description",
            message: "at most 500 characters".into(),
        });
    }
    let secret = SecretString::from(
        zipkit_domain::webhooks::generate_secret().map_err(|_| WebhookAdminError::Random)?,
    );
    let endpoint = WebhookEndpoint::create(
        conn,
        keyring,
        NewWebhookEndpoint {
            project_id: project,
            url: url.as_str(),
            description,
            signing_secret: &secret,
        },
    )
    .await?;
    Ok(CreatedEndpoint { endpoint, secret })
}

/// The project's endpoint, or `NotFound` (also for another project's endpoint).
pub async fn find(
    conn: &mut AsyncPgConnection,
    project: ProjectId,
    id: WebhookEndpointId,
) -> Result<WebhookEndpoint, WebhookAdminError> {
    WebhookEndpoint::find(conn, id)
        .await?
        .filter(|e| e.project_id == project)
        .ok_or(WebhookAdminError::NotFound)
}

/// Queues a `webhook.test` event for one endpoint; a worker delivers it. Returns the event id.
pub async fn queue_test(
    conn: &mut AsyncPgConnection,
    endpoint: &WebhookEndpoint,
) -> Result<String, WebhookAdminError> {
    let event_id = format!("evt_{}", WebhookDeliveryId::new().as_uuid().simple());
    let payload = serde_json::json!({
        "id": event_id,
        "object": "event",
        "type": "webhook.test",
        "created": chrono::Utc::now().timestamp(),
        "data": {"object": {"message": "A test event from zipkit."}},
    });
    WebhookDelivery::enqueue_for(
        conn,
        &[endpoint.id],
        &event_id,
        "webhook.test",
        None,
        &payload,
        zipkit_runtime::telemetry::traceparent(&tracing::Span::current()).as_deref(),
    )
    .await?;
    Ok(event_id)
}

pub async fn remove(
    conn: &mut AsyncPgConnection,
    project: ProjectId,
    id: WebhookEndpointId,
) -> Result<WebhookEndpoint, WebhookAdminError> {
    let endpoint = find(conn, project, id).await?;
    WebhookEndpoint::delete(conn, endpoint.id).await?;
    Ok(endpoint)
}
