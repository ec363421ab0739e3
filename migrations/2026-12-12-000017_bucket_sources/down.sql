DROP TABLE zip_listings;
ALTER TABLE buckets DROP COLUMN read_sources;
