//! Rate limits shared by every API process: GCRA over one row per key in PostgreSQL, taken with
//! one statement, so N API replicas allow the configured rate once, not N times.
//!
//! GCRA keeps, per key, the time at which its allowance would be full again (`tat`). A request
//! at `now` moves it to `max(tat, now) + interval` and is allowed when that is at most
//! `burst × interval` ahead of `now`: a full burst at once, then one request per interval.
//! Taking `n` requests at once moves it by `n × interval` under the same bound.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::schema::rate_limits;

/// One key's quota: `per_minute` sustained, `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub per_minute: u32,
    pub burst: u32,
}

impl Quota {
    /// Microseconds between two requests at the sustained rate (at least one: a rate above a
    /// million a second is a million a second).
    fn interval_us(self) -> i64 {
        (60_000_000 / i64::from(self.per_minute.max(1))).max(1)
    }
}

#[derive(QueryableByName)]
struct Taken {
    /// How many requests were granted (at least one), or `None` when none could be.
    #[diesel(sql_type = Nullable<Integer>)]
    granted: Option<i32>,
    /// When none was granted: how long until one more request would be.
    #[diesel(sql_type = Nullable<BigInt>)]
    wait_us: Option<i64>,
}

/// What [`RateLimit::take`] got from a key's allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This many requests (at least one, at most the number asked for).
    Granted(u32),
    /// None: the next one is allowed after this long.
    Wait(Duration),
}

#[derive(Debug)]
pub struct RateLimit;

impl RateLimit {
    /// Takes up to `want` requests from `key`'s allowance at once (as many as it holds, at
    /// least one), or says how long until one would be allowed. A process that spends the
    /// requests granted from memory asks once per `want` requests instead of once per request;
    /// it can never spend more than the allowance, only hold some of it unused for a while.
    pub async fn take(
        conn: &mut AsyncPgConnection,
        key: &str,
        quota: Quota,
        want: u32,
    ) -> QueryResult<Grant> {
        let interval = quota.interval_us();
        let burst = quota.burst.max(1);
        let want = i32::try_from(want.clamp(1, burst)).unwrap_or(1);
        let limit = interval * i64::from(burst);
        // `room`: microseconds of allowance left now (the limit less what is owed), so
        // `room / interval` requests can be granted. The upsert moves `tat` only when at least
        // one can; otherwise no row is updated and the outer SELECT reads the unchanged `tat` to
        // say how long to wait. Every expression in SET reads the row as it was.
        let taken: Taken = diesel::sql_query(
            "WITH moved AS (
                 INSERT INTO rate_limits AS r (key, tat, granted)
                 VALUES ($1, statement_timestamp() + make_interval(secs => $4 * $2 / 1e6), $4)
                 ON CONFLICT (key) DO UPDATE
                     SET granted = least($4, floor((extract(epoch FROM statement_timestamp()
                             - greatest(r.tat, statement_timestamp())) * 1e6 + $3) / $2))::int,
                         tat = greatest(r.tat, statement_timestamp()) + make_interval(secs =>
                             least($4, floor((extract(epoch FROM statement_timestamp()
                             - greatest(r.tat, statement_timestamp())) * 1e6 + $3) / $2)) * $2 / 1e6)
                     WHERE extract(epoch FROM statement_timestamp()
                             - greatest(r.tat, statement_timestamp())) * 1e6 + $3 >= $2
                 RETURNING granted
             )
             SELECT (SELECT granted FROM moved) AS granted,
                 CASE WHEN EXISTS (SELECT 1 FROM moved) THEN NULL
                 ELSE (SELECT greatest(1, (extract(epoch FROM
                          greatest(r.tat, statement_timestamp()) - statement_timestamp()) * 1e6
                          + $2 - $3)::bigint)
                       FROM rate_limits r WHERE r.key = $1)
             END AS wait_us",
        )
        .bind::<Text, _>(key)
        .bind::<BigInt, _>(interval)
        .bind::<BigInt, _>(limit)
        .bind::<Integer, _>(want)
        .get_result(conn)
        .await?;
        Ok(match taken.granted {
            Some(n) => Grant::Granted(u32::try_from(n).unwrap_or(1).max(1)),
            None => Grant::Wait(Duration::from_micros(
                taken
                    .wait_us
                    .and_then(|us| u64::try_from(us).ok())
                    .unwrap_or(1),
            )),
        })
    }

    /// Forgets keys whose allowance is full again (their `tat` has passed): run now and then.
    pub async fn forget_full(conn: &mut AsyncPgConnection) -> QueryResult<usize> {
        diesel::delete(rate_limits::table.filter(rate_limits::tat.lt(diesel::dsl::now)))
            .execute(conn)
            .await
    }
}
