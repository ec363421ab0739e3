-- Sign-in throttling by client address as well as account: a stranger's failures lock out their
-- own address (for that account, or for every account once they spray), never the owner's.
ALTER TABLE login_failures ADD COLUMN client_address text NOT NULL DEFAULT '';
CREATE INDEX login_failures_address_idx ON login_failures (client_address, attempted_at DESC);
