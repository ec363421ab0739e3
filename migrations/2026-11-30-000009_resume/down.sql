ALTER TABLE zip_parts DROP COLUMN crc32;
DROP TABLE zip_uploads;
