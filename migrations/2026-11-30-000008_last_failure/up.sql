-- The failure of a job's previous attempt (`code: message`), kept when the job is given back for
-- another attempt, so the worker can tell a store that keeps answering the same way from one that
-- had a moment.
ALTER TABLE zips ADD COLUMN last_failure text CHECK (length(last_failure) <= 4096);
