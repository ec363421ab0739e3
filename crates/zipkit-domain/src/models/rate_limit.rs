//! Rate limits shared by every API process: GCRA over one row per key in PostgreSQL, taken with
//! one statement, so N API replicas allow the configured rate once, not N times.
//!
//! GCRA keeps, per key, the time at which its allowance would be full again (`tat`). A request
//! at `now` moves it to `max(tat, now) + interval` and is allowed when that is at most
//! `burst × interval` ahead of `now`: a full burst at once, then one request per interval.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::rate_limits;

/// One key's quota: `per_minute` sustained, `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub per_minute: u32,
    pub burst: u32,
}

impl Quota {
    /// Microseconds between two requests at the sustained rate.
    fn interval_us(self) -> i64 {
        60_000_000 / i64::from(self.per_minute.max(1))
    }
}

#[derive(QueryableByName)]
struct Taken {
    /// `None`: allowed. Otherwise how long until one more request would be.
    #[diesel(sql_type = Nullable<BigInt>)]
    wait_us: Option<i64>,
}

#[derive(Debug)]
pub struct RateLimit;

impl RateLimit {
    /// Takes one request from `key`'s allowance: `None` when allowed, else how long to wait.
    pub async fn take(
        conn: &mut AsyncPgConnection,
        key: &str,
        quota: Quota,
    ) -> QueryResult<Option<Duration>> {
        let interval = quota.interval_us();
        let limit = interval * i64::from(quota.burst.max(1));
        // The upsert moves `tat` only when the request is allowed; otherwise no row is updated
        // and the outer SELECT reads the unchanged `tat` to say how long to wait.
        let taken: Taken = diesel::sql_query(
            "WITH moved AS (
                 INSERT INTO rate_limits AS r (key, tat)
                 VALUES ($1, clock_timestamp() + make_interval(secs => $2 / 1e6))
                 ON CONFLICT (key) DO UPDATE
                     SET tat = greatest(r.tat, clock_timestamp()) + make_interval(secs => $2 / 1e6)
                     WHERE greatest(r.tat, clock_timestamp()) + make_interval(secs => $2 / 1e6)
                           - clock_timestamp() <= make_interval(secs => $3 / 1e6)
                 RETURNING 1
             )
             SELECT CASE WHEN EXISTS (SELECT 1 FROM moved) THEN NULL
                 ELSE (SELECT greatest(1, (extract(epoch FROM
                          greatest(r.tat, clock_timestamp()) + make_interval(secs => $2 / 1e6)
                          - make_interval(secs => $3 / 1e6) - clock_timestamp()) * 1e6)::bigint)
                       FROM rate_limits r WHERE r.key = $1)
             END AS wait_us",
        )
        .bind::<Text, _>(key)
        .bind::<BigInt, _>(interval)
        .bind::<BigInt, _>(limit)
        .get_result(conn)
        .await?;
        Ok(taken
            .wait_us
            .map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(1))))
    }

    /// Forgets keys whose allowance is full again (their `tat` has passed): run now and then.
    pub async fn forget_full(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
        diesel::delete(rate_limits::table.filter(rate_limits::tat.lt(diesel::dsl::now)))
            .execute(conn)
            .await
    }
}
