-- How long the presigned download link of a job's archive lives, as the request chose it (or the
-- deployment's default then). A table of its own: `zips` is at its column limit. A job without a
-- row uses one hour.
CREATE TABLE zip_download_links (
    zip_id uuid PRIMARY KEY REFERENCES zips (id) ON DELETE CASCADE,
    ttl_secs integer NOT NULL CHECK (ttl_secs > 0)
);
