-- What a job asked of its result beyond the defaults: how long its download link lives, the
-- archive object's Cache-Control, tags, server-side encryption and storage class, and after how many days the
-- archive is deleted (and when a worker took it to delete). A table of its own: `zips` is at
-- its column limit. A job without a row asked for nothing: a link lives one hour.
CREATE TABLE zip_result_settings (
    zip_id uuid PRIMARY KEY REFERENCES zips (id) ON DELETE CASCADE,
    download_url_ttl_secs integer CHECK (download_url_ttl_secs > 0),
    cache_control text,
    -- {"key": "value", …}: at most 10, as S3 allows.
    tags jsonb NOT NULL DEFAULT '{}',
    server_side_encryption text CHECK (server_side_encryption IN ('AES256', 'aws:kms')),
    sse_kms_key_id text CHECK (sse_kms_key_id IS NULL OR server_side_encryption = 'aws:kms'),
    storage_class text,
    expires_in_days integer CHECK (expires_in_days > 0),
    archive_deleted_at timestamptz
);
-- The sweeper's question: archives whose time is up and that nobody took yet.
CREATE INDEX zip_result_settings_expiring_idx ON zip_result_settings (zip_id)
    WHERE expires_in_days IS NOT NULL AND archive_deleted_at IS NULL;
