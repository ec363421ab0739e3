DROP INDEX zip_entries_skipped_idx;
