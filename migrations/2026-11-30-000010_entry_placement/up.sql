-- Where each entry's bytes sit in the archive of the job's current build, recorded as they are
-- written out: a worker taking the job over re-derives the archive writer's state from these
-- (offsets, the central directory records) and does not download again the sources whose bytes
-- are all in parts already uploaded, and picks the source cut by the uploaded parts' end up
-- with `Range`. NULL until the entry's bytes are out (or when a new build starts from byte zero).
-- The start (offset of the local header, method, ZIP64 header, and the source's validator to
-- send as If-Range) is recorded as the header goes out for a stored entry of at least one part,
-- the end with everything else for every entry.
ALTER TABLE zip_entries
    ADD COLUMN archive_offset bigint CHECK (archive_offset >= 0),
    ADD COLUMN deflated boolean,
    ADD COLUMN zip64 boolean,
    -- The source's strong ETag or Last-Modified as first answered.
    ADD COLUMN source_validator text CHECK (length(source_validator) <= 1024),
    ADD COLUMN archive_end bigint,
    ADD COLUMN compressed_size bigint CHECK (compressed_size >= 0),
    -- CRC-32 of the archive's bytes from its start to `archive_end`.
    ADD COLUMN archive_crc32 bigint CHECK (archive_crc32 BETWEEN 0 AND 4294967295),
    ADD CONSTRAINT zip_entries_placement_whole CHECK (
        (archive_offset IS NULL) = (deflated IS NULL)
        AND (archive_offset IS NULL) = (zip64 IS NULL)
        AND (archive_end IS NULL) = (compressed_size IS NULL)
        AND (archive_end IS NULL) = (archive_crc32 IS NULL)
        AND (archive_end IS NULL OR archive_offset IS NOT NULL)
        AND archive_end > archive_offset + compressed_size
    );
