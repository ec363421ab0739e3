-- What the bucket's keys were found able to do at their last successful test (read, list, abort
-- a multipart upload, set an ACL, full-object CRC-32 checksums, UploadPartCopy), as a JSON
-- object of booleans. NULL: not checked since the bucket was saved (test it again to know).
ALTER TABLE buckets ADD COLUMN capabilities jsonb;
