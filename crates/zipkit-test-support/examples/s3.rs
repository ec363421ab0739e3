//! What the customer does on their own side of the demo, against the local S3 store:
//!   s3 create-bucket NAME         (zipkit never creates buckets; the customer does)
//!   s3 get BUCKET KEY FILE        (fetch the finished archive)

use zipkit_test_support::bucket::client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let s3 = client();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["create-bucket", name] => {
            let exists = s3
                .list_buckets()
                .send()
                .await?
                .buckets()
                .iter()
                .any(|b| b.name() == Some(name));
            if !exists {
                s3.create_bucket().bucket(*name).send().await?;
            }
        }
        ["get", bucket, key, file] => {
            let object = s3.get_object().bucket(*bucket).key(*key).send().await?;
            std::fs::write(file, object.body.collect().await?.into_bytes())?;
        }
        _ => return Err("usage: s3 create-bucket NAME | s3 get BUCKET KEY FILE".into()),
    }
    Ok(())
}
