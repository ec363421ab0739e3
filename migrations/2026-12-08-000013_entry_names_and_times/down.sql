ALTER TABLE zip_entries
    DROP COLUMN declared_size,
    DROP COLUMN entry_time,
    DROP COLUMN modified_at,
    DROP COLUMN given_filename;
