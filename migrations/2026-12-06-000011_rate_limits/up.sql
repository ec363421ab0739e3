-- Rate limits shared by every API replica: one row per limited key (a client address or an
-- access token) holding its GCRA "theoretical arrival time". Unlogged: a crash forgets the
-- allowances (everyone starts with a full burst), which is cheaper than writing each request
-- to the WAL.
CREATE UNLOGGED TABLE rate_limits (
    key  text PRIMARY KEY,
    tat  timestamptz NOT NULL
);
