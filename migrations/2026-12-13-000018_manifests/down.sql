ALTER TABLE zip_listings
    DROP COLUMN manifest,
    DROP COLUMN manifest_format,
    DROP COLUMN max_entries;
