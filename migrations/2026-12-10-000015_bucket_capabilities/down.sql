ALTER TABLE buckets DROP COLUMN capabilities;
