-- Whether jobs may read their sources from the bucket (`s3://<bucket>/…`): opt-in, since it
-- needs s3:GetObject and s3:ListBucket beyond the write-only policy a destination needs.
ALTER TABLE buckets ADD COLUMN read_sources boolean NOT NULL DEFAULT false;

-- What a worker still has to turn into a job's entries: a prefix (one entry per object it finds
-- under it, in key order, at the item's place among the job's sources), or a manifest (`manifest`
-- set: an http(s) or s3:// URL of JSON Lines or CSV, one entry per line, at most `max_entries`).
-- The worker writes the entries and deletes these rows in one transaction before its first build.
CREATE TABLE zip_listings (
    zip_id uuid NOT NULL REFERENCES zips (id) ON DELETE CASCADE,
    item_index integer NOT NULL,
    bucket text NOT NULL,
    prefix text NOT NULL,
    include text[] NOT NULL DEFAULT '{}',
    exclude text[] NOT NULL DEFAULT '{}',
    path text NOT NULL DEFAULT '',
    manifest text,
    manifest_format text,
    max_entries integer,
    PRIMARY KEY (zip_id, item_index)
);
