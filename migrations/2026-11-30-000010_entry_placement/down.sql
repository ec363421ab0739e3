ALTER TABLE zip_entries
    DROP CONSTRAINT zip_entries_placement_whole,
    DROP COLUMN archive_crc32,
    DROP COLUMN compressed_size,
    DROP COLUMN archive_end,
    DROP COLUMN zip64,
    DROP COLUMN deflated,
    DROP COLUMN archive_offset;
