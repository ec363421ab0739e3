//! Key rotation: re-seal every stored secret under the active key. Safe to run repeatedly and
//! concurrently with normal traffic: each row is updated only if it still has the key it was read with.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::ModelError;
use super::bucket::{ACCESS_KEY_ID_FIELD, Bucket, SECRET_ACCESS_KEY_FIELD};
use super::webhook::{SIGNING_SECRET_FIELD, WebhookEndpoint};
use crate::crypto::{KeyRing, Sealed, SecretBinding};
use crate::schema::{buckets, webhook_endpoints};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub buckets: usize,
    pub webhook_endpoints: usize,
}

pub async fn rotate_encryption_keys(
    conn: &mut AsyncPgConnection,
    keyring: &KeyRing,
) -> Result<RotationReport, ModelError> {
    let active = keyring.active_key_id();
    let mut report = RotationReport::default();

    let stale: Vec<Bucket> = buckets::table
        .filter(buckets::encryption_key_id.ne(active))
        .select(Bucket::as_select())
        .load(conn)
        .await?;
    for bucket in stale {
        let row = *bucket.id.as_uuid();
        let reseal = |field, ciphertext: &Vec<u8>| {
            let sealed = Sealed {
                key_id: bucket.encryption_key_id.clone(),
                ciphertext: ciphertext.clone(),
            };
            keyring.reseal(&sealed, SecretBinding { field, row })
        };
        let (Some(access), Some(secret)) = (
            reseal(ACCESS_KEY_ID_FIELD, &bucket.access_key_id_ciphertext)?,
            reseal(
                SECRET_ACCESS_KEY_FIELD,
                &bucket.secret_access_key_ciphertext,
            )?,
        ) else {
            continue;
        };
        report.buckets += diesel::update(buckets::table.find(bucket.id))
            .filter(buckets::encryption_key_id.eq(&bucket.encryption_key_id))
            .set((
                buckets::access_key_id_ciphertext.eq(access.ciphertext),
                buckets::secret_access_key_ciphertext.eq(secret.ciphertext),
                buckets::encryption_key_id.eq(active),
            ))
            .execute(conn)
            .await?;
    }

    let stale: Vec<WebhookEndpoint> = webhook_endpoints::table
        .filter(webhook_endpoints::encryption_key_id.ne(active))
        .select(WebhookEndpoint::as_select())
        .load(conn)
        .await?;
    for endpoint in stale {
        let sealed = Sealed {
            key_id: endpoint.encryption_key_id.clone(),
            ciphertext: endpoint.secret_ciphertext.clone(),
        };
        let binding = SecretBinding {
            field: SIGNING_SECRET_FIELD,
            row: *endpoint.id.as_uuid(),
        };
        let Some(resealed) = keyring.reseal(&sealed, binding)? else {
            continue;
        };
        report.webhook_endpoints += diesel::update(webhook_endpoints::table.find(endpoint.id))
            .filter(webhook_endpoints::encryption_key_id.eq(&endpoint.encryption_key_id))
            .set((
                webhook_endpoints::secret_ciphertext.eq(resealed.ciphertext),
                webhook_endpoints::encryption_key_id.eq(active),
            ))
            .execute(conn)
            .await?;
    }
    Ok(report)
}
