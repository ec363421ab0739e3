-- Customer buckets a project writes archives into. Credentials are AES-256-GCM ciphertexts
-- (nonce || ciphertext || tag) bound to the row id; `encryption_key_id` names the key-ring entry.

CREATE TABLE buckets (
    id                           uuid PRIMARY KEY,
    project_id                   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    service                      text NOT NULL CHECK (service IN ('s3', 'r2')),
    name                         text NOT NULL CHECK (length(name) BETWEEN 3 AND 63),
    region                       text NOT NULL CHECK (length(region) BETWEEN 1 AND 64),
    r2_account_id                text,
    endpoint_url                 text,
    force_path_style             boolean NOT NULL DEFAULT false,
    access_key_id_ciphertext     bytea NOT NULL,
    secret_access_key_ciphertext bytea NOT NULL,
    encryption_key_id            text NOT NULL,
    -- A masked hint of the access key id (e.g. "…WXYZ"), the only part ever shown again.
    access_key_hint              text NOT NULL,
    -- Canned ACL sent with uploads; NULL sends no ACL header (R2 rejects them).
    acl                          text,
    last_tested_at               timestamptz,
    last_test_ok                 boolean,
    last_test_message            text,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, service, name),
    -- Lets zips reference (bucket, project) so a job can never point at another project's bucket.
    UNIQUE (id, project_id),
    CHECK ((service = 'r2') = (r2_account_id IS NOT NULL)),
    CHECK (service = 's3' OR endpoint_url IS NULL),
    CHECK (service = 's3' OR acl IS NULL)
);
