-- A job's archive size in bytes, exact, once it is known: at creation when every source gives its
-- size and is stored, else from the worker once the rest of the archive is certain. Follows the
-- sources a job skips. A table of its own: one value, written by both API and worker.
CREATE TABLE zip_expected_sizes (
    zip_id uuid PRIMARY KEY REFERENCES zips (id) ON DELETE CASCADE,
    size bigint NOT NULL CHECK (size >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
