-- What a worker taking a job over needs to continue its multipart upload instead of starting
-- again, and what a sweeper needs to find uploads nobody will finish.
-- One row per multipart upload a job started: how its archive is cut and compressed (`plan`: the
-- new owner resumes only when its own settings give the same bytes), and when it ended
-- (completed or aborted; NULL while it may still be resumed or must still be cleaned up).
CREATE TABLE zip_uploads (
    zip_id uuid NOT NULL REFERENCES zips (id) ON DELETE CASCADE,
    upload_id text NOT NULL CHECK (length(upload_id) BETWEEN 1 AND 1024),
    plan text NOT NULL CHECK (length(plan) <= 256),
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    PRIMARY KEY (zip_id, upload_id)
);
CREATE INDEX zip_uploads_open ON zip_uploads (started_at) WHERE ended_at IS NULL;
-- The CRC-32 of each part as sent, to check that the archive a new owner rebuilds is byte for
-- byte the one already in the bucket.
ALTER TABLE zip_parts ADD COLUMN crc32 bigint CHECK (crc32 BETWEEN 0 AND 4294967295);
