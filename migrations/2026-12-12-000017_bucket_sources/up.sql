-- Whether jobs may read their sources from the bucket (`s3://<bucket>/…`): opt-in, since it
-- needs s3:GetObject and s3:ListBucket beyond the write-only policy a destination needs.
ALTER TABLE buckets ADD COLUMN read_sources boolean NOT NULL DEFAULT false;

-- A job's prefixes still to list: each becomes one entry per object the worker finds under it,
-- in key order, at the item's place among the job's sources. The worker lists them, writes the
-- entries and deletes these rows in one transaction before its first build.
CREATE TABLE zip_listings (
    zip_id uuid NOT NULL REFERENCES zips (id) ON DELETE CASCADE,
    item_index integer NOT NULL,
    bucket text NOT NULL,
    prefix text NOT NULL,
    include text[] NOT NULL DEFAULT '{}',
    exclude text[] NOT NULL DEFAULT '{}',
    path text NOT NULL DEFAULT '',
    PRIMARY KEY (zip_id, item_index)
);
