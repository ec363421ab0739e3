//! Names of what a test creates (databases, vhosts, buckets), which carry their creation time,
//! so that a later run can tell a crashed run's leftovers by age; and cleanup run from `Drop`.

/// How old a leftover (database, vhost, bucket) must be before a later run removes it: long
/// enough that no live test run still uses it.
pub const LEFTOVER_AGE_SECS: u64 = 2 * 60 * 60;

/// A name unique to this test, with its creation time so sweepers can judge its age.
pub fn unique_name(prefix: &str, separator: char) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{separator}{now}{separator}{}", &random[..12])
}

/// The creation time encoded by `unique_name`, if `name` is one of ours.
pub fn created_at(name: &str, prefix: &str, separator: char) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_prefix(separator)?
        .split(separator)
        .next()?
        .parse()
        .ok()
}

pub fn is_leftover(name: &str, prefix: &str, separator: char) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    created_at(name, prefix, separator).is_some_and(|t| now.saturating_sub(t) > LEFTOVER_AGE_SECS)
}

/// Runs async cleanup from `Drop`, which may happen inside or outside a runtime, even while a
/// failing test unwinds: on a fresh thread with its own small runtime.
pub fn block_on_cleanup<F>(label: &str, fut: F)
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
