//! Rate limits on the API: per client address on every `/v1` request (before authentication,
//! so guessing tokens is slowed too) and per access token once it is known. GCRA, twice: first
//! in this process's memory (governor: a flood is refused without a query), then in PostgreSQL
//! (`RateLimit::take`, one statement), which every API replica shares, so a deployment allows
//! the configured rate once, whatever its number of replicas. A process takes a key's shared
//! allowance a few requests at a time (a sixteenth of the burst, at most 32) and spends them from
//! memory, so the shared row is written once per few requests; a replica can hold some of a
//! key's allowance unused, never spend more than it. A refusal is 429 `rate_limited` with
//! `Retry-After` in the one envelope. When PostgreSQL cannot be asked, the shared check lets the
//! request through: the request needs the database anyway and will say so.
//!
//! The client address is the peer's, unless the peer is a proxy the operator listed in
//! `rate_limits.trusted_proxies`: then it is the last address in `X-Forwarded-For` that is not
//! one of those proxies (addresses further left are the client's to write, so never trusted).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use serde::Deserialize;

use diesel_async::AsyncPgConnection;
use zipkit_domain::db::PgPool;
use zipkit_domain::models::{Grant, Quota as SharedQuota, RateLimit};

use crate::error::ApiError;

/// `[rate_limits]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained `/v1` requests per minute from one client address, and the burst above it.
    pub api_per_address_per_minute: u32,
    pub api_per_address_burst: u32,
    /// Sustained `/v1` requests per minute with one access token, and the burst above it.
    pub api_per_token_per_minute: u32,
    pub api_per_token_burst: u32,
    /// Proxies (CIDR) whose `X-Forwarded-For` names the client.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Failed sign-ins within `sign_in_window_minutes`: from one address for one account, then
    /// that address waits (the account's owner elsewhere does not); from one address for any
    /// accounts, then that address waits (password spraying).
    pub sign_in_failures_per_account_and_address: u32,
    pub sign_in_failures_per_address: u32,
    pub sign_in_window_minutes: u32,
}

impl RateLimitSettings {
    /// Checks once at start that every allowance and the sign-in window are at least 1.
    pub fn validate(&self) -> Result<(), String> {
        for (key, value) in [
            (
                "api_per_address_per_minute",
                self.api_per_address_per_minute,
            ),
            ("api_per_address_burst", self.api_per_address_burst),
            ("api_per_token_per_minute", self.api_per_token_per_minute),
            ("api_per_token_burst", self.api_per_token_burst),
            ("sign_in_window_minutes", self.sign_in_window_minutes),
        ] {
            if value == 0 {
                return Err(format!("rate_limits.{key} must be at least 1 (it is 0)"));
            }
        }
        Ok(())
    }
}

/// The limiters of one process.
#[derive(Debug, Clone)]
pub struct RateLimits {
    per_address: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    per_token: Arc<DefaultKeyedRateLimiter<String>>,
    held: Arc<Held>,
    trusted_proxies: Arc<Vec<IpNet>>,
    pub settings: RateLimitSettings,
}

/// Requests this process took from the shared allowance and has not spent yet, per shared key,
/// with when each key last asked the database (to forget idle keys).
#[derive(Debug, Default)]
struct Held(Mutex<HashMap<String, (u32, Instant)>>);

impl Held {
    /// Spends one held request of `key`, if there is one.
    fn spend(&self, key: &str) -> bool {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get_mut(key) {
            Some((left, _)) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Keeps `count` more requests of `key` for later.
    fn keep(&self, key: &str, count: u32) {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = held.entry(key.to_owned()).or_insert((0, Instant::now()));
        entry.0 += count;
        entry.1 = Instant::now();
    }

    /// Forgets keys that have not asked for a while; what they held goes unused.
    fn forget_older_than(&self, age: Duration) {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, (_, asked)| asked.elapsed() < age);
        held.shrink_to_fit();
    }
}

/// How many requests to take from a shared allowance at once: a sixteenth of the burst (so all
/// replicas together hold a small part of it), at most 32, at least 1 (exact for small bursts).
fn chunk(burst: u32) -> u32 {
    (burst / 16).clamp(1, 32)
}

/// The values are at least 1 (`RateLimitSettings::validate`).
fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            per_address: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                settings.api_per_address_per_minute,
                settings.api_per_address_burst,
            ))),
            per_token: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                settings.api_per_token_per_minute,
                settings.api_per_token_burst,
            ))),
            held: Arc::default(),
            trusted_proxies: Arc::new(settings.trusted_proxies.clone()),
            settings: settings.clone(),
        }
    }

    /// The client's address (see the module header).
    pub fn client_address(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !trusted(ip))
                .unwrap_or(peer),
        )
    }

    /// One request with the token whose id is `token_id`: this process's limiter, then the
    /// deployment's.
    pub async fn check_token(
        &self,
        conn: &mut AsyncPgConnection,
        token_id: &str,
    ) -> Result<(), ApiError> {
        const WHOSE: &str = "this access token";
        check(&self.per_token, &token_id.to_owned(), WHOSE)?;
        let quota = SharedQuota {
            per_minute: self.settings.api_per_token_per_minute,
            burst: self.settings.api_per_token_burst,
        };
        let key = format!("token:{token_id}");
        if self.held.spend(&key) {
            return Ok(());
        }
        self.take_shared(conn, &key, quota, WHOSE).await
    }

    /// One request from `address`: this process's limiter, then the deployment's.
    pub async fn check_address(&self, pool: &PgPool, address: IpAddr) -> Result<(), ApiError> {
        const WHOSE: &str = "this address";
        check(&self.per_address, &address, WHOSE)?;
        let quota = SharedQuota {
            per_minute: self.settings.api_per_address_per_minute,
            burst: self.settings.api_per_address_burst,
        };
        let key = format!("address:{address}");
        if self.held.spend(&key) {
            return Ok(());
        }
        let Ok(mut conn) = pool.get().await else {
            return Ok(());
        };
        self.take_shared(&mut conn, &key, quota, WHOSE).await
    }

    /// Forgets keys that are back to a full allowance (run every minute).
    pub fn forget_idle(&self) {
        self.per_address.retain_recent();
        self.per_token.retain_recent();
        self.per_address.shrink_to_fit();
        self.per_token.shrink_to_fit();
        self.held.forget_older_than(Duration::from_secs(60));
    }

    /// The deployment-wide check once this process holds none of the key's allowance (see the
    /// module header): a few more requests from the shared row, one spent now.
    async fn take_shared(
        &self,
        conn: &mut AsyncPgConnection,
        key: &str,
        quota: SharedQuota,
        whose: &str,
    ) -> Result<(), ApiError> {
        match RateLimit::take(conn, key, quota, chunk(quota.burst)).await {
            Ok(Grant::Granted(count)) => {
                self.held.keep(key, count - 1);
                Ok(())
            }
            Ok(Grant::Wait(wait)) => Err(ApiError::rate_limited(whose, wait)),
            Err(e) => {
                tracing::warn!(error = %e, "the shared rate limit could not be read; letting the request through");
                Ok(())
            }
        }
    }
}

fn check<K: Clone + Hash + Eq>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    whose: &str,
) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::rate_limited(whose, wait)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RateLimitSettings {
        RateLimitSettings {
            api_per_address_per_minute: 60,
            api_per_address_burst: 3,
            api_per_token_per_minute: 60,
            api_per_token_burst: 2,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            sign_in_failures_per_account_and_address: 5,
            sign_in_failures_per_address: 20,
            sign_in_window_minutes: 15,
        }
    }

    #[test]
    fn a_token_gets_its_burst_then_waits_about_a_second_per_request() {
        let limits = RateLimits::new(&settings());
        let take = |token: &str| check(&limits.per_token, &token.to_owned(), "this access token");
        assert!(take("a").is_ok());
        assert!(take("a").is_ok());
        let refused = take("a").unwrap_err();
        assert_eq!(refused.code(), "rate_limited");
        assert!(take("b").is_ok(), "other tokens are not affected");
    }

    #[test]
    fn held_requests_are_spent_one_at_a_time_and_forgotten_when_idle() {
        let held = Held::default();
        assert!(!held.spend("k"), "nothing held yet");
        held.keep("k", 2);
        assert!(held.spend("k") && held.spend("k"));
        assert!(!held.spend("k"), "two kept, two spent");
        held.keep("k", 1);
        held.forget_older_than(Duration::ZERO);
        assert!(!held.spend("k"), "forgotten");
    }

    #[test]
    fn a_process_takes_a_sixteenth_of_the_burst_at_once_and_small_bursts_exactly() {
        assert_eq!(chunk(3), 1);
        assert_eq!(chunk(200), 12);
        assert_eq!(chunk(400), 25);
        assert_eq!(chunk(100_000), 32);
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        use actix_web::test::TestRequest;
        let limits = RateLimits::new(&settings());
        let direct = TestRequest::default()
            .peer_addr("203.0.113.7:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "198.51.100.1"))
            .to_http_request();
        assert_eq!(
            limits.client_address(&direct),
            Some("203.0.113.7".parse().unwrap()),
            "a client cannot name itself"
        );
        let proxied = TestRequest::default()
            .peer_addr("10.1.2.3:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.2.3.4, 198.51.100.1, 10.9.9.9"))
            .to_http_request();
        assert_eq!(
            limits.client_address(&proxied),
            Some("198.51.100.1".parse().unwrap()),
            "the last address the trusted proxies did not add"
        );
    }
}
