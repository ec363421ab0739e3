-- A job's skipped entries, counted and listed in order without reading its other entries (a job
-- of a million entries may skip a few, or most).
CREATE INDEX zip_entries_skipped_idx ON zip_entries (zip_id, entry_index) WHERE state = 'skipped';
