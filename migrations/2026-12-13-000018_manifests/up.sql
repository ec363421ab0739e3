-- A job's manifest waits in zip_listings too, as its only item: `manifest` set (an http(s) or
-- s3:// URL of JSON Lines or CSV, one entry per line, at most `max_entries`), `bucket` the
-- manifest's bucket (empty for an http(s) one). The worker reads it into entries in the same
-- transaction that lists prefixes.
ALTER TABLE zip_listings
    ADD COLUMN manifest text,
    ADD COLUMN manifest_format text,
    ADD COLUMN max_entries integer;
