-- Zip jobs, their entries in archive order, and the multipart-upload parts already written.

CREATE TABLE zips (
    id               uuid PRIMARY KEY,
    project_id       uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    bucket_id        uuid NOT NULL,
    object_key       text NOT NULL CHECK (octet_length(object_key) BETWEEN 1 AND 1024),
    status           text NOT NULL DEFAULT 'none'
                     CHECK (status IN ('none', 'processing', 'succeeded', 'failed', 'cancelled')),
    metadata         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    compression      text NOT NULL DEFAULT 'auto' CHECK (compression IN ('auto', 'store', 'deflate')),
    on_error         text NOT NULL DEFAULT 'fail' CHECK (on_error IN ('fail', 'skip')),
    idempotency_key  text,
    request_hash     bytea,
    files_total      integer NOT NULL CHECK (files_total > 0),
    files_done       integer NOT NULL DEFAULT 0 CHECK (files_done >= 0),
    bytes_downloaded bigint NOT NULL DEFAULT 0 CHECK (bytes_downloaded >= 0),
    bytes_uploaded   bigint NOT NULL DEFAULT 0 CHECK (bytes_uploaded >= 0),
    result_size      bigint,
    result_etag      text,
    result_entries   integer,
    error_type       text,
    error_code       text,
    error_message    text,
    error_param      text,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- The worker holding the job and until when; a heartbeat extends it, an expired one may be taken over.
    lease_owner      text,
    lease_expires_at timestamptz,
    upload_id        text,
    -- Set when the broker confirmed the job message; NULL means a sweeper must (re)publish it.
    published_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- RESTRICT: a bucket cannot be deleted while jobs refer to it.
    FOREIGN KEY (bucket_id, project_id) REFERENCES buckets (id, project_id) ON DELETE RESTRICT,
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);
CREATE UNIQUE INDEX zips_project_idempotency_key_idx ON zips (project_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX zips_project_created_idx ON zips (project_id, created_at DESC, id DESC);
CREATE INDEX zips_bucket_id_idx ON zips (bucket_id);
CREATE INDEX zips_unpublished_idx ON zips (created_at) WHERE published_at IS NULL AND status = 'none';

CREATE TABLE zip_entries (
    zip_id        uuid NOT NULL REFERENCES zips (id) ON DELETE CASCADE,
    entry_index   integer NOT NULL CHECK (entry_index >= 0),
    url           text NOT NULL,
    filename      text NOT NULL,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'skipped', 'failed')),
    size          bigint CHECK (size >= 0),
    crc32         bigint CHECK (crc32 BETWEEN 0 AND 4294967295),
    error_code    text,
    error_message text,
    PRIMARY KEY (zip_id, entry_index)
);
-- Backstop for the API's case-insensitive duplicate check (which folds Unicode case too).
CREATE UNIQUE INDEX zip_entries_zip_filename_idx ON zip_entries (zip_id, lower(filename));

CREATE TABLE zip_parts (
    zip_id      uuid NOT NULL REFERENCES zips (id) ON DELETE CASCADE,
    upload_id   text NOT NULL,
    part_number integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    etag        text NOT NULL,
    size        bigint NOT NULL CHECK (size > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (zip_id, upload_id, part_number)
);
