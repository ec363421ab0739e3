//! A fresh bucket per test on the local S3-compatible store (s3s-fs), emptied and deleted when
//! the test ends.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;

use crate::leftovers::{block_on_cleanup, is_leftover, unique_name};
use crate::services::{s3_access_key, s3_endpoint, s3_secret_key};

const PREFIX: &str = "zipkit-test";

#[derive(Debug)]
pub struct TestBucket {
    name: String,
    client: Client,
}

/// A client for the local store with the harness's credentials.
pub fn client() -> Client {
    client_with(&s3_access_key(), &s3_secret_key())
}

/// A client for the local store with the given credentials (to test wrong ones).
pub fn client_with(access_key: &str, secret_key: &str) -> Client {
    client_for(&s3_endpoint(), access_key, secret_key)
}

/// A path-style client for any S3-compatible endpoint (another store than the harness's).
pub fn client_for(endpoint: &str, access_key: &str, secret_key: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "zipkit-test",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    Client::from_conf(config)
}

async fn delete_bucket(client: &Client, name: &str) -> Result<(), String> {
    use futures_util::StreamExt;
    // The first page again until there is none: each listing of a store that walks the whole
    // bucket (s3s-fs) gets shorter as objects go, which a continuation token would not make it.
    loop {
        let page = client
            .list_objects_v2()
            .bucket(name)
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let keys: Vec<String> = page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        if keys.is_empty() {
            break;
        }
        let deleted: Vec<Result<(), String>> = futures_util::stream::iter(keys)
            .map(|key| async move {
                client
                    .delete_object()
                    .bucket(name)
                    .key(key)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| format!("{e:?}"))
            })
            .buffer_unordered(32)
            .collect()
            .await;
        deleted.into_iter().collect::<Result<Vec<()>, String>>()?;
    }
    client
        .delete_bucket()
        .bucket(name)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(())
}

impl TestBucket {
    /// A new empty bucket; also sweeps buckets left by crashed runs.
    pub async fn new() -> Self {
        let client = client();
        let existing = client.list_buckets().send().await.unwrap_or_else(|e| {
            panic!(
                "the S3 store at {} is not reachable ({e:?}); run scripts/services.sh up",
                s3_endpoint()
            )
        });
        for old in existing.buckets().iter().filter_map(|b| b.name()) {
            if is_leftover(old, PREFIX, '-') {
                let _ = delete_bucket(&client, old).await;
            }
        }
        let name = unique_name(PREFIX, '-');
        client
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create test bucket");
        Self { name, client }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether an object (a completed upload) exists under `key`.
    pub async fn has(&self, key: &str) -> bool {
        self.head_object(key).await.is_ok()
    }

    /// What the store says of an object: its headers (Content-Type, Content-Disposition,
    /// Cache-Control, …).
    pub async fn head(&self, key: &str) -> HeadObjectOutput {
        self.head_object(key)
            .await
            .unwrap_or_else(|e| panic!("HEAD {key}: {e}"))
    }

    async fn head_object(&self, key: &str) -> Result<HeadObjectOutput, String> {
        let head = self.client.head_object().bucket(&self.name).key(key);
        head.send().await.map_err(|e| e.to_string())
    }

    /// The keys of every object in this bucket (up to a thousand).
    pub async fn keys(&self) -> Vec<String> {
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .send()
            .await
            .expect("a listing");
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    /// Stores `bytes` under `key`.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
    }

    /// The bytes of an object in this bucket.
    pub async fn get(&self, key: &str) -> Vec<u8> {
        self.get_object(key)
            .await
            .body
            .collect()
            .await
            .expect("read object body")
            .into_bytes()
            .to_vec()
    }

    /// Writes an object of this bucket to the file at `path` as it arrives (for objects too
    /// large to hold); returns its size.
    pub async fn get_to_file(&self, key: &str, path: &std::path::Path) -> u64 {
        let mut file = tokio::fs::File::create(path)
            .await
            .expect("create the file");
        let mut body = self.get_object(key).await.body.into_async_read();
        let written = tokio::io::copy(&mut body, &mut file)
            .await
            .expect("read object body");
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .expect("flush the file");
        written
    }

    async fn get_object(&self, key: &str) -> aws_sdk_s3::operation::get_object::GetObjectOutput {
        self.client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .expect("get object")
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        // A new client: a pooled connection of the test's client belongs to the test's runtime,
        // which is blocked right here, so using it would wait forever.
        let name = self.name.clone();
        block_on_cleanup(&name.clone(), async move {
            delete_bucket(&client(), &name).await
        });
    }
}
