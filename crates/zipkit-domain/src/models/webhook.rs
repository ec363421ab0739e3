//! Webhook endpoints of a project; the signing secret is sealed like bucket credentials.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use secrecy::SecretString;

use super::ModelError;
use crate::crypto::{KeyRing, Sealed, SecretBinding};
use crate::ids::{ProjectId, WebhookEndpointId};
use crate::schema::webhook_endpoints;

pub(crate) const SIGNING_SECRET_FIELD: &str = "webhook_endpoints.secret";

#[derive(Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = webhook_endpoints, check_for_backend(diesel::pg::Pg))]
pub struct WebhookEndpoint {
    pub id: WebhookEndpointId,
    pub project_id: ProjectId,
    pub url: String,
    pub description: String,
    pub secret_ciphertext: Vec<u8>,
    pub encryption_key_id: String,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct NewWebhookEndpoint<'a> {
    pub project_id: ProjectId,
    pub url: &'a str,
    pub description: &'a str,
    pub signing_secret: &'a SecretString,
}

impl WebhookEndpoint {
    pub async fn create(
        conn: &mut AsyncPgConnection,
        keyring: &KeyRing,
        new: NewWebhookEndpoint<'_>,
    ) -> Result<Self, ModelError> {
        let id = WebhookEndpointId::new();
        let sealed = keyring.seal_str(
            new.signing_secret,
            SecretBinding {
                field: SIGNING_SECRET_FIELD,
                row: *id.as_uuid(),
            },
        )?;
        Ok(diesel::insert_into(webhook_endpoints::table)
            .values((
                webhook_endpoints::id.eq(id),
                webhook_endpoints::project_id.eq(new.project_id),
                webhook_endpoints::url.eq(new.url),
                webhook_endpoints::description.eq(new.description),
                webhook_endpoints::secret_ciphertext.eq(&sealed.ciphertext),
                webhook_endpoints::encryption_key_id.eq(&sealed.key_id),
            ))
            .returning(WebhookEndpoint::as_returning())
            .get_result(conn)
            .await?)
    }

    pub fn signing_secret(&self, keyring: &KeyRing) -> Result<SecretString, ModelError> {
        Ok(keyring.open(
            &Sealed {
                key_id: self.encryption_key_id.clone(),
                ciphertext: self.secret_ciphertext.clone(),
            },
            SecretBinding {
                field: SIGNING_SECRET_FIELD,
                row: *self.id.as_uuid(),
            },
        )?)
    }

    pub async fn find(
        conn: &mut AsyncPgConnection,
        id: WebhookEndpointId,
    ) -> QueryResult<Option<Self>> {
        webhook_endpoints::table
            .find(id)
            .select(WebhookEndpoint::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// Removes an endpoint (and, by cascade, its delivery history); says whether it existed.
    pub async fn delete(conn: &mut AsyncPgConnection, id: WebhookEndpointId) -> QueryResult<bool> {
        let deleted = diesel::delete(webhook_endpoints::table.find(id))
            .execute(conn)
            .await?;
        Ok(deleted == 1)
    }

    pub async fn list(conn: &mut AsyncPgConnection, project: ProjectId) -> QueryResult<Vec<Self>> {
        webhook_endpoints::table
            .filter(webhook_endpoints::project_id.eq(project))
            .order(webhook_endpoints::created_at.desc())
            .select(WebhookEndpoint::as_select())
            .load(conn)
            .await
    }
}
