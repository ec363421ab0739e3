//! The job message on the broker. The PostgreSQL row is the truth; the message only names the job.

use serde::{Deserialize, Serialize};

use crate::ids::ZipId;

/// Published by the API (and the republishing sweeper), consumed by workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMessage {
    /// Version of this contract; bumped on an incompatible change.
    pub v: u8,
    pub zip_id: ZipId,
    /// Delivery attempt, starting at 1; a delayed retry publishes the next one.
    pub attempt: u32,
    /// W3C trace context of the request that created the job, so one trace spans API and worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl JobMessage {
    pub const VERSION: u8 = 1;

    pub fn first(zip_id: ZipId, traceparent: Option<String>) -> Self {
        Self {
            v: Self::VERSION,
            zip_id,
            attempt: 1,
            traceparent,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a JobMessage always serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_through_json() {
        let msg = JobMessage::first(
            ZipId::new(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        );
        assert_eq!(JobMessage::from_bytes(&msg.to_bytes()).unwrap(), msg);
    }

    #[test]
    fn a_message_with_unknown_fields_is_refused() {
        let raw = format!(
            r#"{{"v":1,"zip_id":"{}","attempt":1,"extra":true}}"#,
            ZipId::new()
        );
        assert!(JobMessage::from_bytes(raw.as_bytes()).is_err());
    }
}
