ALTER TABLE zips DROP COLUMN last_failure;
