DROP TABLE zip_parts;
DROP TABLE zip_entries;
DROP TABLE zips;
