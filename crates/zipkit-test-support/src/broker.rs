//! A RabbitMQ vhost per test, created and deleted through the management API, so queues of
//! concurrent tests (and of the developer's own runs) never meet.

use crate::leftovers::{block_on_cleanup, is_leftover, unique_name};
use crate::services::{amqp_base_url, rabbitmq_api_url};

const PREFIX: &str = "zipkit-test";

#[derive(Debug)]
pub struct TestBroker {
    vhost: String,
}

#[derive(serde::Deserialize)]
struct VhostInfo {
    name: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .expect("HTTP client")
}

/// (`http://host:port`, user, password) from the management URL.
fn api() -> (String, String, String) {
    let url = url::Url::parse(&rabbitmq_api_url()).expect("ZIPKIT_TEST_RABBITMQ_API is a URL");
    let base = format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(15672)
    );
    let user = if url.username().is_empty() {
        "guest".to_owned()
    } else {
        url.username().to_owned()
    };
    let password = url.password().unwrap_or("guest").to_owned();
    (base, user, password)
}

fn encode(vhost: &str) -> String {
    url::form_urlencoded::byte_serialize(vhost.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn delete_vhost(vhost: &str) -> Result<(), String> {
    let (base, user, password) = api();
    let response = client()
        .delete(format!("{base}/api/vhosts/{}", encode(vhost)))
        .basic_auth(user, Some(password))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() || response.status() == reqwest::StatusCode::NOT_FOUND {
        Ok(())
    } else {
        Err(format!(
            "deleting vhost {vhost}: HTTP {}",
            response.status()
        ))
    }
}

impl TestBroker {
    /// A fresh vhost the default user may use fully; also sweeps vhosts of crashed runs.
    pub async fn new() -> Self {
        let (base, user, password) = api();
        let http = client();
        let unreachable = |e: reqwest::Error| {
            panic!(
                "RabbitMQ management API at {base} is not reachable ({e}); run scripts/services.sh up"
            )
        };

        let vhosts: Vec<VhostInfo> = http
            .get(format!("{base}/api/vhosts"))
            .basic_auth(&user, Some(&password))
            .send()
            .await
            .unwrap_or_else(unreachable)
            .json()
            .await
            .expect("vhost list");
        for old in vhosts.iter().filter(|v| is_leftover(&v.name, PREFIX, '-')) {
            let _ = delete_vhost(&old.name).await;
        }

        let vhost = unique_name(PREFIX, '-');
        let created = http
            .put(format!("{base}/api/vhosts/{}", encode(&vhost)))
            .basic_auth(&user, Some(&password))
            .send()
            .await
            .expect("create vhost");
        assert!(
            created.status().is_success(),
            "creating vhost {vhost}: HTTP {}",
            created.status()
        );
        let granted = http
            .put(format!(
                "{base}/api/permissions/{}/{}",
                encode(&vhost),
                encode(&user)
            ))
            .basic_auth(&user, Some(&password))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .expect("grant vhost permissions");
        assert!(
            granted.status().is_success(),
            "granting on {vhost}: HTTP {}",
            granted.status()
        );
        Self { vhost }
    }

    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The AMQP URL of this test's vhost.
    pub fn url(&self) -> String {
        format!(
            "{}/{}",
            amqp_base_url().trim_end_matches('/'),
            encode(&self.vhost)
        )
    }

    /// Names and message counts of the queues in this vhost.
    pub async fn queues(&self) -> Vec<(String, u64)> {
        #[derive(serde::Deserialize)]
        struct Queue {
            name: String,
            #[serde(default)]
            messages: u64,
        }
        let (base, user, password) = api();
        let queues: Vec<Queue> = client()
            .get(format!("{base}/api/queues/{}", encode(&self.vhost)))
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("list queues")
            .json()
            .await
            .expect("queue list");
        queues.into_iter().map(|q| (q.name, q.messages)).collect()
    }
}

/// A message taken from a queue by a test.
#[derive(Debug)]
pub struct Taken {
    pub body: Vec<u8>,
    pub headers: std::collections::BTreeMap<String, String>,
    pub persistent: bool,
}

impl TestBroker {
    /// Takes (and acks) the next message of `queue` in this vhost, waiting up to `timeout`.
    pub async fn take(&self, queue: &str, timeout: std::time::Duration) -> Option<Taken> {
        use lapin::options::BasicGetOptions;
        let connection =
            lapin::Connection::connect(&self.url(), lapin::ConnectionProperties::default())
                .await
                .expect("connect to the test vhost");
        let channel = connection.create_channel().await.expect("channel");
        let deadline = tokio::time::Instant::now() + timeout;
        let mut taken = None;
        while taken.is_none() && tokio::time::Instant::now() < deadline {
            match channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
            {
                Ok(Some(message)) => {
                    let properties = &message.delivery.properties;
                    let headers = properties
                        .headers()
                        .as_ref()
                        .map(|table| {
                            table
                                .inner()
                                .iter()
                                .map(|(k, v)| {
                                    let text = match v {
                                        lapin::types::AMQPValue::LongString(s) => s.to_string(),
                                        other => format!("{other:?}"),
                                    };
                                    (k.to_string(), text)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    taken = Some(Taken {
                        body: message.delivery.data.clone(),
                        headers,
                        persistent: *properties.delivery_mode() == Some(2),
                    });
                }
                Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                Err(_) => break,
            }
        }
        let _ = connection.close(200, "done".into()).await;
        taken
    }

    /// How many messages wait in `queue` (as the management API last sampled it: give it a moment).
    pub async fn depth(&self, queue: &str) -> u64 {
        self.queues()
            .await
            .into_iter()
            .find(|(name, _)| name == queue)
            .map_or(0, |(_, n)| n)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let vhost = self.vhost.clone();
        block_on_cleanup(&vhost.clone(), async move { delete_vhost(&vhost).await });
    }
}
