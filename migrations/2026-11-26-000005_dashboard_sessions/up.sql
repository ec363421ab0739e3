-- Dashboard sign-ins: server-side sessions (the cookie holds a random token; only its SHA-256 is
-- stored, so a database leak does not leak sessions) and the failed logins that throttle guessing.

CREATE TABLE dashboard_sessions (
    id           uuid PRIMARY KEY,
    token_hash   bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Synchronizer token every form of this session must send back.
    csrf_token   text NOT NULL CHECK (length(csrf_token) >= 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_user_id_idx ON dashboard_sessions (user_id);

CREATE TABLE login_failures (
    id           uuid PRIMARY KEY,
    -- As typed, lower-cased: an unknown address is throttled like a known one.
    email        text NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email_idx ON login_failures (email, attempted_at DESC);
