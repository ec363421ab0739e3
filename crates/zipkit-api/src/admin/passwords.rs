//! Password hashing for dashboard users: Argon2id with configured parameters (OWASP's minimum
//! by default), and the small fixed pool of threads sign-ins are verified on.
//!
//! Each Argon2id hash holds `memory_kib` (19 MiB by default) while it runs. Verifying on an
//! unbounded blocking pool let a hundred strangers with wrong passwords hold a hundred of those
//! at once, so sign-ins go through `PasswordPool`: `hash_threads` threads, `hash_queue`
//! sign-ins waiting, and beyond that an immediate `Busy` (a 503 with `Retry-After`) before any
//! hashing. Memory for hashing is bounded by `hash_threads × memory_kib` whoever knocks.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use serde::Deserialize;

/// Shortest accepted password.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// `[passwords]` settings: how new passwords are hashed and how many sign-ins may hash at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    /// Threads verifying sign-ins; each holds `memory_kib` while it works.
    pub hash_threads: usize,
    /// Sign-ins that may wait for a thread; one more is answered 503 at once.
    pub hash_queue: usize,
    /// Argon2id memory cost of new hashes, in KiB (stored hashes keep their own parameters).
    pub memory_kib: u32,
    /// Argon2id passes over that memory.
    pub iterations: u32,
    /// Argon2id lanes.
    pub parallelism: u32,
}

impl Default for PasswordSettings {
    /// OWASP's Password Storage Cheat Sheet, Argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            hash_threads: 2,
            hash_queue: 16,
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordSettings {
    /// Checked once at start-up, naming the key that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.hash_threads == 0 {
            return Err("passwords.hash_threads must be at least 1".into());
        }
        self.params().map(|_| ())
    }

    fn params(&self) -> Result<Params, String> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None).map_err(|e| {
            format!(
                "passwords.memory_kib / iterations / parallelism ({}, {}, {}) are not valid Argon2id parameters: {e}",
                self.memory_kib, self.iterations, self.parallelism
            )
        })
    }

    fn argon2(&self) -> Result<Argon2<'static>, PasswordError> {
        let params = self.params().map_err(PasswordError::Hash)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_PASSWORD_CHARS} characters long")]
    TooShort,
    #[error("hashing the password failed: {0}")]
    Hash(String),
}

/// The PHC string to store (`$argon2id$v=19$m=…`).
pub fn hash(password: &str, settings: &PasswordSettings) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    let hash: PasswordHash = settings
        .argon2()?
        .hash_password(password.as_bytes())
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string, with the parameters stored in it
/// (constant-time inside argon2).
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Every hashing thread and every queue place is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many sign-ins are being checked at once")]
pub struct Busy;

type Work = Box<dyn FnOnce() + Send>;

/// The fixed threads sign-ins are verified on. Dropping it (with the app) ends the threads.
#[derive(Clone)]
pub struct PasswordPool {
    work: SyncSender<Work>,
    settings: Arc<PasswordSettings>,
    /// A hash with the configured parameters, so an unknown address costs what a known one does.
    dummy: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for PasswordPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordPool")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl PasswordPool {
    pub fn start(settings: &PasswordSettings) -> std::io::Result<Self> {
        // A queue of `hash_queue` on top of the threads themselves: a thread that has taken its
        // work off the queue frees a place.
        let (work, queue) = mpsc::sync_channel::<Work>(settings.hash_queue);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..settings.hash_threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("password-hash-{index}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next piece of work.
                        let next = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match next {
                            Ok(run) => run(),
                            Err(_) => return, // the pool was dropped
                        }
                    }
                })?;
        }
        Ok(Self {
            work,
            settings: Arc::new(settings.clone()),
            dummy: Arc::new(OnceLock::new()),
        })
    }

    /// Verifies `password` against `stored` (or, for an unknown account, against a dummy hash
    /// with the same cost, answering false) on the pool. `Busy` at once when it is full.
    pub fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<impl Future<Output = bool> + use<>, Busy> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let (settings, dummy) = (Arc::clone(&self.settings), Arc::clone(&self.dummy));
        let run: Work = Box::new(move || {
            let verified = match stored {
                Some(stored) => verify(&password, &stored),
                None => {
                    let dummy = dummy.get_or_init(|| {
                        hash("no user has this password", &settings).unwrap_or_default()
                    });
                    let _ = verify(&password, dummy);
                    false
                }
            };
            let _ = answer.send(verified);
        });
        match self.work.try_send(run) {
            Ok(()) => Ok(async move { answered.await.unwrap_or(false) }),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: these tests are about the pool, not the cost.
    fn cheap() -> PasswordSettings {
        PasswordSettings {
            memory_kib: 64,
            iterations: 1,
            ..PasswordSettings::default()
        }
    }

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let stored = hash("correct horse battery", &PasswordSettings::default()).unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains("correct horse"));
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse batterY", &stored));
        assert!(!verify("correct horse battery", "not a hash"));
    }

    #[test]
    fn new_hashes_use_the_configured_parameters_and_old_ones_still_verify() {
        let old = hash("correct horse battery", &cheap()).unwrap();
        assert!(old.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{old}");
        assert!(verify("correct horse battery", &old));
    }

    #[test]
    fn short_passwords_and_impossible_parameters_are_refused() {
        assert!(matches!(
            hash("short", &PasswordSettings::default()),
            Err(PasswordError::TooShort)
        ));
        let wrong = PasswordSettings {
            memory_kib: 1,
            ..PasswordSettings::default()
        };
        assert!(
            wrong
                .validate()
                .unwrap_err()
                .contains("passwords.memory_kib")
        );
        let none = PasswordSettings {
            hash_threads: 0,
            ..PasswordSettings::default()
        };
        assert!(none.validate().unwrap_err().contains("hash_threads"));
    }

    #[tokio::test]
    async fn the_pool_verifies_and_answers_busy_beyond_its_threads_and_queue() {
        let settings = PasswordSettings {
            hash_threads: 1,
            hash_queue: 1,
            ..cheap()
        };
        let pool = PasswordPool::start(&settings).unwrap();
        let stored = hash("correct horse battery", &settings).unwrap();
        assert!(
            pool.verify("correct horse battery".into(), Some(stored.clone()))
                .unwrap()
                .await
        );
        assert!(!pool.verify("wrong".into(), Some(stored)).unwrap().await);
        assert!(!pool.verify("anything".into(), None).unwrap().await);

        // Hold the only thread, fill the one queue place: the next is refused at once.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        pool.work
            .try_send(Box::new(move || {
                let _ = started.send(());
                let _ = held.recv();
            }))
            .unwrap();
        running.recv().unwrap();
        let queued = pool.verify("anything".into(), None).unwrap();
        assert!(matches!(pool.verify("anything".into(), None), Err(Busy)));
        release.send(()).unwrap();
        assert!(!queued.await);
        // And once the queue has drained, a place is free again.
        assert!(!pool.verify("anything".into(), None).unwrap().await);
    }
}
