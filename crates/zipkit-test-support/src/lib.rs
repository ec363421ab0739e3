//! Test harness on the real local services (see scripts/services.sh): each test gets its own
//! PostgreSQL database (copied from a migrated template), its own RabbitMQ vhost and its own
//! S3 bucket, all removed when the test ends, and leftovers of crashed runs swept by age.

pub mod broker;
pub mod bucket;
pub mod canned_http;
pub mod chart;
pub mod database;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod readers;
pub mod receiver;
pub mod services;
pub mod sources;
pub mod stack;
pub mod store_proxy;
pub mod tls;

pub use broker::TestBroker;
pub use bucket::TestBucket;
pub use database::TestDatabase;

/// How old a leftover (database, vhost, bucket) must be before a later run removes it: long
/// enough that no live test run still uses it.
pub const LEFTOVER_AGE_SECS: u64 = 2 * 60 * 60;

/// A name unique to this test, with its creation time so sweepers can judge its age.
pub(crate) fn unique_name(prefix: &str, separator: char) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{separator}{now}{separator}{}", &random[..12])
}

/// The creation time encoded by `unique_name`, if `name` is one of ours.
pub(crate) fn created_at(name: &str, prefix: &str, separator: char) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_prefix(separator)?
        .split(separator)
        .next()?
        .parse()
        .ok()
}

pub(crate) fn is_leftover(name: &str, prefix: &str, separator: char) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    created_at(name, prefix, separator).is_some_and(|t| now.saturating_sub(t) > LEFTOVER_AGE_SECS)
}

/// Runs async cleanup from `Drop`, which may happen inside or outside a runtime, even while a
/// failing test unwinds: on a fresh thread with its own small runtime.
pub(crate) fn block_on_cleanup<F>(label: &str, fut: F)
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let label = label.to_owned();
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            // Bounded, so a stuck service can never hang the whole test run.
            Ok(rt) => rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(30), fut)
                    .await
                    .unwrap_or_else(|_| Err("timed out after 30 s".into()))
            }),
            Err(e) => Err(e.to_string()),
        }
    })
    .join();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("test cleanup of {label} failed: {e}"),
        Err(_) => eprintln!("test cleanup of {label} panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unique_name_carries_its_creation_time() {
        let name = unique_name("zipkit_test", '_');
        assert!(created_at(&name, "zipkit_test", '_').is_some());
        assert!(!is_leftover(&name, "zipkit_test", '_'));
        assert!(is_leftover("zipkit_test_1000_abc", "zipkit_test", '_'));
        assert!(!is_leftover("someone_elses_db", "zipkit_test", '_'));
    }
}
