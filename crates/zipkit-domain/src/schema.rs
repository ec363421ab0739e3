// @generated automatically by Diesel CLI.

diesel::table! {
    access_tokens (id) {
        id -> Uuid,
        project_id -> Uuid,
        name -> Text,
        prefix -> Text,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    buckets (id) {
        id -> Uuid,
        project_id -> Uuid,
        service -> Text,
        name -> Text,
        region -> Text,
        r2_account_id -> Nullable<Text>,
        endpoint_url -> Nullable<Text>,
        force_path_style -> Bool,
        access_key_id_ciphertext -> Bytea,
        secret_access_key_ciphertext -> Bytea,
        encryption_key_id -> Text,
        access_key_hint -> Text,
        acl -> Nullable<Text>,
        last_tested_at -> Nullable<Timestamptz>,
        last_test_ok -> Nullable<Bool>,
        last_test_message -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        capabilities -> Nullable<Jsonb>,
        read_sources -> Bool,
    }
}

diesel::table! {
    dashboard_sessions (id) {
        id -> Uuid,
        token_hash -> Bytea,
        user_id -> Uuid,
        csrf_token -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    login_failures (id) {
        id -> Uuid,
        email -> Text,
        attempted_at -> Timestamptz,
        client_address -> Text,
    }
}

diesel::table! {
    project_members (project_id, user_id) {
        project_id -> Uuid,
        user_id -> Uuid,
        role -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    projects (id) {
        id -> Uuid,
        name -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    rate_limits (key) {
        key -> Text,
        tat -> Timestamptz,
        granted -> Int4,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Text,
        password_hash -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Uuid,
        event_id -> Text,
        event_type -> Text,
        endpoint_id -> Uuid,
        zip_id -> Nullable<Uuid>,
        payload -> Jsonb,
        state -> Text,
        attempts -> Int4,
        last_status_code -> Nullable<Int4>,
        next_attempt_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        traceparent -> Nullable<Text>,
    }
}

diesel::table! {
    webhook_delivery_attempts (delivery_id, attempt) {
        delivery_id -> Uuid,
        attempt -> Int4,
        status_code -> Nullable<Int4>,
        error -> Nullable<Text>,
        duration_ms -> Int4,
        attempted_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Uuid,
        project_id -> Uuid,
        url -> Text,
        description -> Text,
        secret_ciphertext -> Bytea,
        encryption_key_id -> Text,
        enabled -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    zip_entries (zip_id, entry_index) {
        zip_id -> Uuid,
        entry_index -> Int4,
        url -> Text,
        filename -> Text,
        state -> Text,
        size -> Nullable<Int8>,
        crc32 -> Nullable<Int8>,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        archive_offset -> Nullable<Int8>,
        deflated -> Nullable<Bool>,
        zip64 -> Nullable<Bool>,
        source_validator -> Nullable<Text>,
        archive_end -> Nullable<Int8>,
        compressed_size -> Nullable<Int8>,
        archive_crc32 -> Nullable<Int8>,
        given_filename -> Nullable<Text>,
        modified_at -> Nullable<Timestamptz>,
        entry_time -> Nullable<Timestamptz>,
        declared_size -> Nullable<Int8>,
    }
}

diesel::table! {
    zip_expected_sizes (zip_id) {
        zip_id -> Uuid,
        size -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    zip_listings (zip_id, item_index) {
        zip_id -> Uuid,
        item_index -> Int4,
        bucket -> Text,
        prefix -> Text,
        include -> Array<Nullable<Text>>,
        exclude -> Array<Nullable<Text>>,
        path -> Text,
        manifest -> Nullable<Text>,
        manifest_format -> Nullable<Text>,
        max_entries -> Nullable<Int4>,
    }
}

diesel::table! {
    zip_parts (zip_id, upload_id, part_number) {
        zip_id -> Uuid,
        upload_id -> Text,
        part_number -> Int4,
        etag -> Text,
        size -> Int8,
        created_at -> Timestamptz,
        crc32 -> Nullable<Int8>,
    }
}

diesel::table! {
    zip_result_settings (zip_id) {
        zip_id -> Uuid,
        download_url_ttl_secs -> Nullable<Int4>,
        cache_control -> Nullable<Text>,
        tags -> Jsonb,
        server_side_encryption -> Nullable<Text>,
        sse_kms_key_id -> Nullable<Text>,
        storage_class -> Nullable<Text>,
        expires_in_days -> Nullable<Int4>,
        archive_deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    zip_uploads (zip_id, upload_id) {
        zip_id -> Uuid,
        upload_id -> Text,
        plan -> Text,
        started_at -> Timestamptz,
        ended_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    zips (id) {
        id -> Uuid,
        project_id -> Uuid,
        bucket_id -> Uuid,
        object_key -> Text,
        status -> Text,
        metadata -> Jsonb,
        compression -> Text,
        on_error -> Text,
        idempotency_key -> Nullable<Text>,
        request_hash -> Nullable<Bytea>,
        files_total -> Int4,
        files_done -> Int4,
        bytes_downloaded -> Int8,
        bytes_uploaded -> Int8,
        result_size -> Nullable<Int8>,
        result_etag -> Nullable<Text>,
        result_entries -> Nullable<Int4>,
        error_type -> Nullable<Text>,
        error_code -> Nullable<Text>,
        error_message -> Nullable<Text>,
        error_param -> Nullable<Text>,
        attempts -> Int4,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamptz>,
        upload_id -> Nullable<Text>,
        published_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
        traceparent -> Nullable<Text>,
        last_failure -> Nullable<Text>,
    }
}

diesel::joinable!(access_tokens -> projects (project_id));
diesel::joinable!(buckets -> projects (project_id));
diesel::joinable!(dashboard_sessions -> users (user_id));
diesel::joinable!(project_members -> projects (project_id));
diesel::joinable!(project_members -> users (user_id));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_deliveries -> zips (zip_id));
diesel::joinable!(webhook_delivery_attempts -> webhook_deliveries (delivery_id));
diesel::joinable!(webhook_endpoints -> projects (project_id));
diesel::joinable!(zip_entries -> zips (zip_id));
diesel::joinable!(zip_expected_sizes -> zips (zip_id));
diesel::joinable!(zip_listings -> zips (zip_id));
diesel::joinable!(zip_parts -> zips (zip_id));
diesel::joinable!(zip_result_settings -> zips (zip_id));
diesel::joinable!(zip_uploads -> zips (zip_id));
diesel::joinable!(zips -> projects (project_id));

diesel::allow_tables_to_appear_in_same_query!(
    access_tokens,
    buckets,
    dashboard_sessions,
    login_failures,
    project_members,
    projects,
    rate_limits,
    users,
    webhook_deliveries,
    webhook_delivery_attempts,
    webhook_endpoints,
    zip_entries,
    zip_expected_sizes,
    zip_listings,
    zip_parts,
    zip_result_settings,
    zip_uploads,
    zips,
);
