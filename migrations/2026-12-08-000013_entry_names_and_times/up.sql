-- Names every system can write, each entry's own time, and sizes declared in the request.
ALTER TABLE zip_entries
    -- The name as the request gave it, when the job asked for names Windows cannot create to be
    -- rewritten (`windows_safe_names`) and this one was: `filename` is the rewritten one.
    ADD COLUMN given_filename text,
    -- The time the request gave for the entry, if any.
    ADD COLUMN modified_at timestamptz,
    -- The time written in the entry's headers (the requested one, else the source's
    -- Last-Modified, else the job's creation), recorded with its placement so that a worker
    -- taking the job over writes the same bytes.
    ADD COLUMN entry_time timestamptz,
    -- The source's size in bytes as the request declared it: decides ZIP64 when the source
    -- sends no length, and the source must send exactly that many bytes.
    ADD COLUMN declared_size bigint CHECK (declared_size >= 0);
