//! The zips API against real PostgreSQL and RabbitMQ: what is stored, what is published, and
//! every refusal with its documented envelope.

use crate::common;

use std::time::Duration;

use common::{JOBS, TestApp, settings, start, zip_body};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use zipkit_domain::messages::JobMessage;
use zipkit_domain::models::{AccessToken, EntryOutcome, JobError, Zip, ZipOutcome};
use zipkit_domain::schema::zips;
use zipkit_domain::{EntryState, Service, ZipId};
use zipkit_test_support::proxy::TcpProxy;
use zipkit_test_support::services::amqp_host_port;
use zipkit_test_support::{TestBroker, TestDatabase};

async fn zip_count(db: &TestDatabase) -> i64 {
    let mut conn = db.connect().await;
    zips::table
        .count()
        .get_result(&mut conn)
        .await
        .expect("count")
}

fn assert_error(
    status: u16,
    body: &Value,
    want_status: u16,
    error_type: &str,
    code: &str,
    param: Option<&str>,
) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["type"], error_type, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(
        body["error"]["param"],
        param.map_or(Value::Null, |p| json!(p)),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["error"]["request_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("req_")),
        "{body}"
    );
}

#[tokio::test]
async fn a_valid_create_is_stored_and_its_message_arrives_with_the_id_and_a_traceparent() {
    let (db, broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;

    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (status, body) = app
        .send(
            app.post_zip(&token, &zip_body("my-zipkit-archives", 3))
                .header("traceparent", incoming),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let data = &body["data"];
    assert_eq!(data["object"], "zip");
    assert_eq!(data["status"], "none");
    assert_eq!(data["id"], data["uuid"]);
    assert_eq!(data["metadata"], json!({"order_id": "order_456"}));
    assert_eq!(
        data["bucket"],
        json!({"service": "s3", "name": "my-zipkit-archives"})
    );
    assert_eq!(data["key"], "exports/2026-11.zip");
    assert_eq!(data["compression"], "auto");
    assert_eq!(data["on_error"], "fail");
    assert_eq!(data["progress"]["files_total"], 3);
    assert_eq!(data["result"], Value::Null);
    assert_eq!(data["error"], Value::Null);
    let id: ZipId = data["uuid"].as_str().unwrap().parse().unwrap();

    let mut conn = db.connect().await;
    let stored = Zip::find(&mut conn, project, id)
        .await
        .unwrap()
        .expect("stored");
    assert!(
        stored.published_at.is_some(),
        "marked published after the confirm"
    );
    let entries = Zip::entries(&mut conn, id).await.unwrap();
    let names: Vec<_> = entries.iter().map(|e| e.filename.as_str()).collect();
    assert_eq!(names, ["docs/f0.pdf", "docs/f1.pdf", "docs/f2.pdf"]);

    let message = broker
        .take(JOBS, Duration::from_secs(5))
        .await
        .expect("the job message is on the queue");
    let job = JobMessage::from_bytes(&message.body).expect("a job message");
    assert_eq!(job.zip_id, id);
    assert_eq!(job.attempt, 1);
    let traceparent = job.traceparent.expect("a traceparent");
    assert!(
        traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "continues the caller's trace"
    );
    assert_eq!(message.headers.get("traceparent"), Some(&traceparent));
    assert!(message.persistent);
    app.stop().await;
}

#[tokio::test]
async fn the_api_is_served_under_api_v1_too() {
    let (db, _broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;
    let (status, created) = app
        .send(
            app.http
                .post(format!("{}/api/v1/zips", app.base))
                .bearer_auth(&token)
                .json(&zip_body("my-zipkit-archives", 1)),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["data"]["uuid"].as_str().unwrap();
    let (status, fetched) = app.get_as(&token, &format!("/v1/zips/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(fetched["data"]["uuid"], id);
    app.stop().await;
}

#[tokio::test]
async fn every_rejection_has_its_status_type_code_and_param_and_enqueues_nothing() {
    let (db, broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;
    let ok = zip_body("my-zipkit-archives", 2);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = ok.clone();
        f(&mut v);
        v
    };
    let too_many: Vec<Value> = (0..51)
        .map(|i| json!({"url": format!("https://e.com/{i}"), "filename": format!("{i}.bin")}))
        .collect();
    let json_cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (
            with(&|v| v["urls"] = json!([])),
            400,
            "urls_empty",
            Some("urls"),
        ),
        (
            with(&|v| v["urls"] = json!(too_many.clone())),
            400,
            "urls_too_many",
            Some("urls"),
        ),
        (
            with(&|v| v["urls"][1]["url"] = json!("ftp://e.com/x")),
            400,
            "url_invalid",
            Some("urls[1].url"),
        ),
        (
            with(&|v| v["urls"][1]["url"] = json!("https://user:pw@e.com/x")),
            400,
            "url_invalid",
            Some("urls[1].url"),
        ),
        (
            with(&|v| v["urls"][1]["url"] = json!(format!("https://e.com/{}", "a".repeat(5000)))),
            400,
            "url_invalid",
            Some("urls[1].url"),
        ),
        (
            with(&|v| v["urls"][1]["url"] = json!("/relative")),
            400,
            "url_invalid",
            Some("urls[1].url"),
        ),
        (
            with(&|v| v["urls"][0]["filename"] = json!("")),
            400,
            "filename_invalid",
            Some("urls[0].filename"),
        ),
        (
            with(&|v| v["urls"][0]["filename"] = json!("/etc/passwd")),
            400,
            "filename_invalid",
            Some("urls[0].filename"),
        ),
        (
            with(&|v| v["urls"][0]["filename"] = json!("a/../../b")),
            400,
            "filename_invalid",
            Some("urls[0].filename"),
        ),
        (
            with(&|v| v["urls"][0]["filename"] = json!("a\\b")),
            400,
            "filename_invalid",
            Some("urls[0].filename"),
        ),
        (
            with(&|v| v["urls"][0]["filename"] = json!("a\u{1}b")),
            400,
            "filename_invalid",
            Some("urls[0].filename"),
        ),
        (
            with(&|v| v["urls"][0]["filename"] = json!("x".repeat(300))),
            400,
            "filename_invalid",
            Some("urls[0].filename"),
        ),
        (
            with(&|v| v["urls"][1]["filename"] = json!("DOCS/F0.PDF")),
            400,
            "filename_duplicate",
            Some("urls[1].filename"),
        ),
        (
            with(&|v| v["key"] = json!("")),
            400,
            "key_invalid",
            Some("key"),
        ),
        (
            with(&|v| v["key"] = json!("k".repeat(1025))),
            400,
            "key_invalid",
            Some("key"),
        ),
        // Keys that would climb out of the bucket on a store that maps keys to paths.
        (
            with(&|v| v["key"] = json!("../other-bucket/x.zip")),
            400,
            "key_invalid",
            Some("key"),
        ),
        (
            with(&|v| v["key"] = json!("exports/../../x.zip")),
            400,
            "key_invalid",
            Some("key"),
        ),
        (
            with(&|v| v["key"] = json!("./x.zip")),
            400,
            "key_invalid",
            Some("key"),
        ),
        (
            with(&|v| v["key"] = json!("/etc/x.zip")),
            400,
            "key_invalid",
            Some("key"),
        ),
        (
            with(&|v| v["key"] = json!("exports//x.zip")),
            400,
            "key_invalid",
            Some("key"),
        ),
        (
            with(&|v| v["key"] = json!("..\\x.zip")),
            400,
            "key_invalid",
            Some("key"),
        ),
        (
            with(&|v| v["service"] = json!("gcs")),
            400,
            "service_invalid",
            Some("service"),
        ),
        (
            with(&|v| v["metadata"] = json!("order_456")),
            400,
            "metadata_invalid",
            Some("metadata"),
        ),
        (
            with(&|v| v["colour"] = json!("red")),
            400,
            "parameter_unknown",
            Some("colour"),
        ),
        (
            with(&|v| {
                v.as_object_mut().unwrap().remove("key");
            }),
            400,
            "parameter_missing",
            Some("key"),
        ),
        (
            with(&|v| v["urls"] = json!({"url": "x"})),
            400,
            "parameter_invalid",
            Some("urls"),
        ),
        (
            with(&|v| v["bucket_name"] = json!("not-configured")),
            404,
            "bucket_not_found",
            Some("bucket_name"),
        ),
    ];
    for (body, status, code, param) in json_cases {
        let (got, answer) = app.send(app.post_zip(&token, &body)).await;
        assert_error(got, &answer, status, "invalid_request_error", code, param);
    }

    let raw = |body: &'static str, content_type: &'static str| {
        app.http
            .post(format!("{}/v1/zips", app.base))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
    };
    let (status, body) = app.send(raw("{\"urls\": [", "application/json")).await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request_error",
        "body_invalid_json",
        None,
    );
    let (status, body) = app
        .send(raw("urls=x", "application/x-www-form-urlencoded"))
        .await;
    assert_error(
        status,
        &body,
        415,
        "invalid_request_error",
        "content_type_unsupported",
        None,
    );
    let huge = json!({"urls": [{"url": "https://e.com/a", "filename": "a"}], "bucket_name": "x".repeat(70_000), "key": "k"});
    let (status, body) = app.send(app.post_zip(&token, &huge)).await;
    assert_error(
        status,
        &body,
        413,
        "invalid_request_error",
        "body_too_large",
        None,
    );
    let (status, body) = app
        .send(app.post_zip(&token, &ok).header("Idempotency-Key", ""))
        .await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request_error",
        "idempotency_key_invalid",
        None,
    );

    assert_eq!(zip_count(&db).await, 0, "nothing stored");
    assert!(
        broker
            .take(JOBS, Duration::from_millis(300))
            .await
            .is_none(),
        "nothing enqueued"
    );
    app.stop().await;
}

#[tokio::test]
async fn bodies_with_one_meaning_only_arrays_duplicates_and_doubled_credentials_are_refused() {
    let (db, _broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "bucket").await;
    let raw = |body: String| {
        app.http
            .post(format!("{}/v1/zips", app.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
    };
    let url = "https://example.com/a.txt";
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        // A struct read from an array by position.
        (
            format!(r#"[[{{"url": "{url}", "filename": "a.txt"}}], "bucket", "k.zip"]"#),
            "parameter_invalid",
            None,
        ),
        (
            format!(r#"{{"urls": [["{url}", "a.txt"]], "bucket_name": "bucket", "key": "k.zip"}}"#),
            "parameter_invalid",
            Some("urls[0]"),
        ),
        ("[]".to_owned(), "parameter_invalid", None),
        // The last value of a repeated key is not the one validated.
        (
            format!(
                r#"{{"urls": [{{"url": "{url}", "filename": "a.txt"}}], "bucket_name": "bucket", "key": "k.zip", "key": "../x.zip"}}"#
            ),
            "body_invalid_json",
            None,
        ),
        (
            format!(
                r#"{{"urls": [{{"url": "{url}", "filename": "a.txt", "filename": "b.txt"}}], "bucket_name": "bucket", "key": "k.zip"}}"#
            ),
            "body_invalid_json",
            None,
        ),
    ];
    for (body, code, param) in cases {
        let (status, answer) = app.send(raw(body.clone())).await;
        assert_error(status, &answer, 400, "invalid_request_error", code, param);
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        for rust in ["CreateZipBody", "UrlItem", "struct"] {
            assert!(!message.contains(rust), "{body}: {message}");
        }
    }
    assert_eq!(zip_count(&db).await, 0, "nothing was created");

    // An unknown query parameter is named.
    let (status, answer) = app.get_as(&token, "/v1/zips?limit=5&colour=red").await;
    assert_error(
        status,
        &answer,
        400,
        "invalid_request_error",
        "parameter_unknown",
        Some("colour"),
    );

    // Two Authorization headers, even both valid, are refused.
    let (status, answer) = app
        .send(
            app.http
                .get(format!("{}/v1/zips", app.base))
                .header("authorization", format!("Bearer {token}"))
                .header("authorization", format!("Bearer {token}")),
        )
        .await;
    assert_error(
        status,
        &answer,
        401,
        "authentication_error",
        "authentication_required",
        None,
    );
}

#[tokio::test]
async fn a_bucket_of_another_project_or_service_is_a_404_that_reveals_nothing() {
    let (db, broker, app) = start().await;
    let (mine, token) = app.project(&db, "Mine").await;
    let (theirs, _) = app.project(&db, "Theirs").await;
    app.bucket(&db, theirs, Service::S3, "their-archives").await;
    app.bucket(&db, mine, Service::R2, "r2-only").await;

    let (status, foreign) = app
        .send(app.post_zip(&token, &zip_body("their-archives", 1)))
        .await;
    assert_error(
        status,
        &foreign,
        404,
        "invalid_request_error",
        "bucket_not_found",
        Some("bucket_name"),
    );
    let (status, missing) = app
        .send(app.post_zip(&token, &zip_body("nobody-has-this", 1)))
        .await;
    assert_error(
        status,
        &missing,
        404,
        "invalid_request_error",
        "bucket_not_found",
        Some("bucket_name"),
    );
    assert_eq!(
        foreign["error"]["message"]
            .as_str()
            .unwrap()
            .replace("their-archives", "X"),
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nobody-has-this", "X"),
        "a foreign bucket reads exactly like a missing one"
    );
    let (status, other_service) = app
        .send(app.post_zip(&token, &zip_body("r2-only", 1)))
        .await;
    assert_error(
        status,
        &other_service,
        404,
        "invalid_request_error",
        "bucket_not_found",
        Some("bucket_name"),
    );
    let mut r2 = zip_body("r2-only", 1);
    r2["service"] = json!("r2");
    assert_eq!(
        app.send(app.post_zip(&token, &r2)).await.0,
        202,
        "the same name with its service is found"
    );

    assert_eq!(zip_count(&db).await, 1);
    assert!(broker.take(JOBS, Duration::from_secs(5)).await.is_some());
    app.stop().await;
}

#[tokio::test]
async fn requests_without_a_valid_bearer_token_get_401() {
    let (db, _broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    let url = format!("{}/v1/zips", app.base);
    let (status, body) = app.send(app.http.get(&url)).await;
    assert_error(
        status,
        &body,
        401,
        "authentication_error",
        "authentication_required",
        None,
    );
    let (status, body) = app
        .send(
            app.http
                .get(&url)
                .header("authorization", format!("Basic {token}")),
        )
        .await;
    assert_error(
        status,
        &body,
        401,
        "authentication_error",
        "authentication_required",
        None,
    );
    let (status, body) = app
        .send(app.http.get(&url).bearer_auth("zk_not-a-real-token"))
        .await;
    assert_error(
        status,
        &body,
        401,
        "authentication_error",
        "invalid_api_key",
        None,
    );
    let forged = format!("zk_{}", "A".repeat(43));
    let (status, body) = app.send(app.http.get(&url).bearer_auth(&forged)).await;
    assert_error(
        status,
        &body,
        401,
        "authentication_error",
        "invalid_api_key",
        None,
    );
    assert_eq!(
        app.send(app.http.get(&url).bearer_auth(&token)).await.0,
        200
    );

    let mut conn = db.connect().await;
    let tokens = AccessToken::list(&mut conn, project).await.unwrap();
    assert!(tokens[0].last_used_at.is_some(), "use is recorded");
    AccessToken::revoke(&mut conn, project, tokens[0].id)
        .await
        .unwrap();
    let (status, body) = app.send(app.http.get(&url).bearer_auth(&token)).await;
    assert_error(
        status,
        &body,
        401,
        "authentication_error",
        "invalid_api_key",
        None,
    );
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_use_the_envelope() {
    let (db, _broker, app) = start().await;
    let (_, token) = app.project(&db, "Acme").await;
    let (status, body) = app.get_as(&token, "/v1/nothing").await;
    assert_error(
        status,
        &body,
        404,
        "invalid_request_error",
        "route_not_found",
        None,
    );
    let (status, body) = app
        .send(
            app.http
                .delete(format!("{}/v1/zips", app.base))
                .bearer_auth(&token),
        )
        .await;
    assert_error(
        status,
        &body,
        405,
        "invalid_request_error",
        "method_not_allowed",
        None,
    );
    let refused = app
        .http
        .delete(format!("{}/v1/zips", app.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(
        refused.headers()["allow"],
        "GET, HEAD, POST",
        "RFC 9110 wants Allow on a 405"
    );
    let refused = app
        .http
        .put(format!("{}/v1/zips/{}/cancel", app.base, ZipId::new()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("PUT");
    assert_eq!(refused.headers()["allow"], "POST");
    let (status, body) = app.get_as(&token, "/v1/zips/not-a-uuid").await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request_error",
        "parameter_invalid",
        Some("uuid"),
    );
    let (status, body) = app
        .get_as(&token, &format!("/v1/zips/{}", ZipId::new()))
        .await;
    assert_error(
        status,
        &body,
        404,
        "invalid_request_error",
        "zip_not_found",
        Some("uuid"),
    );
    let (status, body) = app.get_as(&token, "/v1/zips?limit=0").await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request_error",
        "parameter_invalid",
        Some("limit"),
    );
    let (status, body) = app.get_as(&token, "/v1/zips?status=done").await;
    assert_error(
        status,
        &body,
        400,
        "invalid_request_error",
        "parameter_invalid",
        Some("status"),
    );
    app.stop().await;
}

#[tokio::test]
async fn another_projects_zip_is_not_found_for_get_or_cancel() {
    let (db, _broker, app) = start().await;
    let (mine, token) = app.project(&db, "Mine").await;
    let (_, other_token) = app.project(&db, "Theirs").await;
    app.bucket(&db, mine, Service::S3, "my-zipkit-archives")
        .await;
    let (_, created) = app
        .send(app.post_zip(&token, &zip_body("my-zipkit-archives", 1)))
        .await;
    let id = created["data"]["uuid"].as_str().unwrap();
    let (status, body) = app.get_as(&other_token, &format!("/v1/zips/{id}")).await;
    assert_error(
        status,
        &body,
        404,
        "invalid_request_error",
        "zip_not_found",
        Some("uuid"),
    );
    let (status, body) = app
        .post_as(&other_token, &format!("/v1/zips/{id}/cancel"))
        .await;
    assert_error(
        status,
        &body,
        404,
        "invalid_request_error",
        "zip_not_found",
        Some("uuid"),
    );
    let (_, list) = app.get_as(&other_token, "/v1/zips").await;
    assert_eq!(list["data"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn the_same_idempotency_key_replays_the_job_and_a_different_body_conflicts() {
    let (db, broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;
    let body = zip_body("my-zipkit-archives", 2);
    let (first, created) = app
        .send(
            app.post_zip(&token, &body)
                .header("Idempotency-Key", "order-456-export"),
        )
        .await;
    assert_eq!(first, 202, "{created}");
    let (again, replayed) = app
        .send(
            app.post_zip(&token, &body)
                .header("Idempotency-Key", "order-456-export"),
        )
        .await;
    assert_eq!(again, 200, "{replayed}");
    assert_eq!(replayed["data"]["uuid"], created["data"]["uuid"]);

    let mut changed = body.clone();
    changed["key"] = json!("exports/other.zip");
    let (status, conflict) = app
        .send(
            app.post_zip(&token, &changed)
                .header("Idempotency-Key", "order-456-export"),
        )
        .await;
    assert_error(
        status,
        &conflict,
        409,
        "invalid_request_error",
        "idempotency_key_reused",
        None,
    );

    // The same key in another project is another job.
    let (other, other_token) = app.project(&db, "Other").await;
    app.bucket(&db, other, Service::S3, "my-zipkit-archives")
        .await;
    let (status, theirs) = app
        .send(
            app.post_zip(&other_token, &body)
                .header("Idempotency-Key", "order-456-export"),
        )
        .await;
    assert_eq!(status, 202);
    assert_ne!(theirs["data"]["uuid"], created["data"]["uuid"]);

    assert_eq!(zip_count(&db).await, 2);
    assert!(broker.take(JOBS, Duration::from_secs(5)).await.is_some());
    assert!(broker.take(JOBS, Duration::from_secs(5)).await.is_some());
    assert!(
        broker
            .take(JOBS, Duration::from_millis(300))
            .await
            .is_none(),
        "a replay publishes nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn cancel_moves_a_pending_job_to_cancelled_idempotently_and_refuses_finished_ones() {
    let (db, _broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;
    let cancel = |id: &str| {
        app.http
            .post(format!("{}/v1/zips/{id}/cancel", app.base))
            .bearer_auth(&token)
    };

    let (_, created) = app
        .send(app.post_zip(&token, &zip_body("my-zipkit-archives", 1)))
        .await;
    let id = created["data"]["uuid"].as_str().unwrap().to_owned();
    let (status, body) = app.send(cancel(&id)).await;
    assert_eq!(
        (status, body["data"]["status"].clone()),
        (200, json!("cancelled")),
        "{body}"
    );
    assert!(body["data"]["finished_at"].is_string());
    let (status, body) = app.send(cancel(&id)).await;
    assert_eq!(
        (status, body["data"]["status"].clone()),
        (200, json!("cancelled")),
        "cancel is idempotent"
    );

    let (_, created) = app
        .send(app.post_zip(&token, &zip_body("my-zipkit-archives", 1)))
        .await;
    let done: ZipId = created["data"]["uuid"].as_str().unwrap().parse().unwrap();
    let mut conn = db.connect().await;
    Zip::claim(&mut conn, done, "w1", chrono::Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    Zip::finish(
        &mut conn,
        done,
        "w1",
        &ZipOutcome::Succeeded {
            size: 10,
            etag: "\"e\"".into(),
            entries: 1,
        },
    )
    .await
    .unwrap()
    .unwrap();
    let (status, body) = app.send(cancel(&done.to_string())).await;
    assert_error(
        status,
        &body,
        409,
        "invalid_request_error",
        "zip_not_cancellable",
        Some("uuid"),
    );
    let (_, fetched) = app.get_as(&token, &format!("/v1/zips/{done}")).await;
    assert_eq!(fetched["data"]["status"], "succeeded");
    // No link: the bucket was saved without a test, so nobody knows its keys may read.
    assert_eq!(
        fetched["data"]["result"],
        json!({"size": 10, "etag": "\"e\"", "entries": 1, "skipped": [], "skipped_count": 0,
               "download_url": null, "download_url_expires_at": null,
               "expires_at": null, "deleted_at": null})
    );
    app.stop().await;
}

#[tokio::test]
async fn the_list_pages_newest_first_and_filters_by_status() {
    let (db, _broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;
    let mut created = Vec::new();
    for _ in 0..5 {
        let (_, body) = app
            .send(app.post_zip(&token, &zip_body("my-zipkit-archives", 1)))
            .await;
        created.push(body["data"]["uuid"].as_str().unwrap().to_owned());
    }
    let list = |query: String| {
        app.http
            .get(format!("{}/v1/zips?{query}", app.base))
            .bearer_auth(&token)
    };

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=2&starting_after={c}"),
            None => "limit=2".to_owned(),
        };
        let (status, page) = app.send(list(query)).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["object"], "list");
        pages += 1;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|z| z["uuid"].as_str().unwrap().to_owned()),
        );
        if page["has_more"] == json!(false) {
            assert_eq!(page["next_cursor"], Value::Null);
            break;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(pages, 3);
    created.reverse();
    assert_eq!(seen, created, "every job once, newest first");

    let (_, cancelled) = app
        .post_as(&token, &format!("/v1/zips/{}/cancel", created[2]))
        .await;
    assert_eq!(cancelled["data"]["status"], "cancelled");
    let (_, filtered) = app.send(list("status=cancelled".into())).await;
    let ids: Vec<_> = filtered["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["uuid"].clone())
        .collect();
    assert_eq!(ids, [json!(created[2])]);
    // A well-formed cursor naming no zip of the project is a 404, like any unknown zip.
    let (status, body) = app
        .send(list(format!("starting_after={}", ZipId::new())))
        .await;
    assert_error(
        status,
        &body,
        404,
        "invalid_request_error",
        "zip_not_found",
        Some("starting_after"),
    );
    app.stop().await;
}

#[tokio::test]
async fn a_job_created_while_rabbitmq_is_away_is_published_once_it_is_back() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    // The API reaches RabbitMQ through a proxy that starts closed: the broker is "down".
    let mut proxy = TcpProxy::closed(amqp_host_port());
    let via_proxy = broker
        .url()
        .replace(&amqp_host_port(), &format!("127.0.0.1:{}", proxy.port()));
    let app = TestApp::start(settings(db.url(), &via_proxy)).await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;

    let (status, body) = app.get("/readyz").await;
    assert_eq!(
        (status, body["checks"]["broker"].clone()),
        (200, json!("down"))
    );
    let (status, created) = app
        .send(app.post_zip(&token, &zip_body("my-zipkit-archives", 1)))
        .await;
    assert_eq!(
        status, 202,
        "accepted although the broker is down: {created}"
    );
    let id: ZipId = created["data"]["uuid"].as_str().unwrap().parse().unwrap();
    let mut conn = db.connect().await;
    assert!(
        Zip::find(&mut conn, project, id)
            .await
            .unwrap()
            .unwrap()
            .published_at
            .is_none()
    );

    proxy.open().await;
    let (_, body) = app
        .get_until("/readyz", |_, body| body["checks"]["broker"] == "ok")
        .await;
    assert_eq!(body["checks"]["broker"], "ok", "the API reconnected");
    let message = broker
        .take(JOBS, Duration::from_secs(15))
        .await
        .expect("the sweeper published the job");
    assert_eq!(JobMessage::from_bytes(&message.body).unwrap().zip_id, id);
    let mut published = false;
    for _ in 0..50 {
        if Zip::find(&mut conn, project, id)
            .await
            .unwrap()
            .unwrap()
            .published_at
            .is_some()
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "the publication is recorded");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_creates_beyond_the_pool_size_are_all_published_at_once() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    let mut small = settings(db.url(), &broker.url());
    small.database.max_connections = 2;
    small.api.republish_after_secs = 600; // only the request path may publish here
    let app = TestApp::start(small).await;
    app.get_until("/readyz", |_, body| body["checks"]["broker"] == "ok")
        .await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;

    let body = zip_body("my-zipkit-archives", 2);
    let requests = (0..16).map(|_| app.send(app.post_zip(&token, &body)));
    let answers = futures_util::future::join_all(requests).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 202),
        "{answers:?}"
    );

    let mut conn = db.connect().await;
    let unpublished: i64 = zips::table
        .filter(zips::published_at.is_null())
        .count()
        .get_result(&mut conn)
        .await
        .expect("count");
    assert_eq!(
        unpublished, 0,
        "every request published and recorded its own job"
    );
    app.stop().await;
}

/// A job of `sources` sources in a new project, every one left out (`source_not_found`) and the
/// job failed with `all_sources_skipped`, as a worker records them; with the project's token.
async fn failed_skipping_every_source(
    db: &TestDatabase,
    app: &TestApp,
    sources: usize,
) -> (ZipId, String) {
    let (project, token) = app.project(db, "Acme").await;
    app.bucket(db, project, Service::S3, "my-zipkit-archives")
        .await;
    let (_, created) = app
        .send(app.post_zip(&token, &zip_body("my-zipkit-archives", sources)))
        .await;
    let id: ZipId = created["data"]["uuid"]
        .as_str()
        .and_then(|u| u.parse().ok())
        .expect("the job's uuid");
    let mut conn = db.connect().await;
    Zip::claim(&mut conn, id, "w1", chrono::Duration::seconds(30))
        .await
        .expect("claim")
        .expect("the job is free");
    let outcomes: Vec<EntryOutcome> = (0..i32::try_from(sources).expect("a count of sources"))
        .map(|index| EntryOutcome {
            index,
            state: EntryState::Skipped,
            size: None,
            crc32: None,
            error_code: Some("source_not_found".into()),
            error_message: Some(format!("urls[{index}] answered 404")),
        })
        .collect();
    Zip::record_entries(&mut conn, id, &outcomes)
        .await
        .expect("record");
    let failure = JobError {
        error_type: "invalid_request_error".into(),
        code: "all_sources_skipped".into(),
        message: "every source failed and was skipped".into(),
        param: None,
    };
    Zip::finish(&mut conn, id, "w1", &ZipOutcome::Failed(failure))
        .await
        .expect("finish")
        .expect("the job was ours");
    (id, token)
}

#[tokio::test]
async fn a_job_that_failed_with_every_source_skipped_lists_each_with_its_reason() {
    let (db, _broker, app) = start().await;
    let (id, token) = failed_skipping_every_source(&db, &app, 2).await;
    let get = app
        .http
        .get(format!("{}/v1/zips/{id}", app.base))
        .bearer_auth(&token);
    let (status, body) = app.send(get).await;
    assert_eq!(status, 200);
    let error = &body["data"]["error"];
    assert_eq!(error["code"], "all_sources_skipped", "{body}");
    let reported: Vec<(i64, &str)> = error["skipped"]
        .as_array()
        .expect("error.skipped")
        .iter()
        .map(|s| (s["index"].as_i64().unwrap(), s["code"].as_str().unwrap()))
        .collect();
    assert_eq!(reported, [(0, "source_not_found"), (1, "source_not_found")]);
    assert!(body["data"]["result"].is_null());
    app.stop().await;
}

/// A job that left out most of its many sources lists only the first 100 on the zip object
/// (the API's and the webhook's), with the count; the rest are paged through in order.
#[tokio::test]
async fn a_job_that_skipped_many_sources_lists_the_first_and_pages_through_all() {
    let (db, _broker, app) = common::start_adjusted(|s| s.api.max_urls = 250).await;
    let (id, token) = failed_skipping_every_source(&db, &app, 250).await;
    let indexes = |list: &Value| -> Vec<i64> {
        list.as_array()
            .expect("a list of skipped sources")
            .iter()
            .map(|s| s["index"].as_i64().unwrap())
            .collect()
    };

    let (status, body) = app.get_as(&token, &format!("/v1/zips/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let error = &body["data"]["error"];
    assert_eq!(error["skipped_count"], 250, "{body}");
    assert_eq!(indexes(&error["skipped"]), (0..100).collect::<Vec<_>>());
    let (_, listed) = app.get_as(&token, "/v1/zips").await;
    assert_eq!(listed["data"][0]["error"]["skipped_count"], 250);
    assert_eq!(indexes(&listed["data"][0]["error"]["skipped"]).len(), 100);

    // Every one, in order, a page at a time.
    let (status, first) = app
        .get_as(&token, &format!("/v1/zips/{id}/skipped?limit=120"))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["object"], "list");
    assert_eq!(indexes(&first["data"]), (0..120).collect::<Vec<_>>());
    assert_eq!(first["data"][7]["code"], "source_not_found");
    assert_eq!(first["data"][7]["message"], "urls[7] answered 404");
    assert_eq!(first["data"][7]["filename"], "docs/f7.pdf");
    assert_eq!(first["has_more"], true);
    assert_eq!(first["next_cursor"], 119);
    let (_, rest) = app
        .get_as(
            &token,
            &format!("/v1/zips/{id}/skipped?starting_after=119&limit=1000"),
        )
        .await;
    assert_eq!(indexes(&rest["data"]), (120..250).collect::<Vec<_>>());
    assert_eq!(rest["has_more"], false);
    assert!(rest["next_cursor"].is_null(), "{rest}");
    let (_, default_page) = app.get_as(&token, &format!("/v1/zips/{id}/skipped")).await;
    assert_eq!(indexes(&default_page["data"]).len(), 100);

    // Bad queries, and a zip of another project.
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("starting_after=-1", "starting_after"),
        ("starting_after=4294967296", "starting_after"),
    ] {
        let (status, body) = app
            .get_as(&token, &format!("/v1/zips/{id}/skipped?{query}"))
            .await;
        assert_error(
            status,
            &body,
            400,
            "invalid_request_error",
            "parameter_invalid",
            Some(param),
        );
    }
    let (_, other) = app.project(&db, "Other").await;
    let (status, body) = app.get_as(&other, &format!("/v1/zips/{id}/skipped")).await;
    assert_error(
        status,
        &body,
        404,
        "invalid_request_error",
        "zip_not_found",
        Some("uuid"),
    );
    app.stop().await;
}

/// Both binaries on the test's own database and vhost, trusting a CA made for the test, the
/// store behind TLS as in production, and a tenant (project, token, bucket) made with the CLI.
struct TlsStack {
    _db: TestDatabase,
    _vhost: TestBroker,
    bucket: zipkit_test_support::TestBucket,
    ca: zipkit_test_support::tls::TestCa,
    store: zipkit_test_support::tls::TlsFront,
    stack: zipkit_test_support::stack::Stack,
    tenant: zipkit_test_support::stack::Tenant,
}

impl TlsStack {
    /// With `env` on top of the test environment.
    async fn start(env: &[(&str, &str)]) -> Self {
        use zipkit_test_support::stack::{Stack, sibling_binary};
        const BINARY: &str = env!("CARGO_BIN_EXE_zipkit-api");
        let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
        let vhost = TestBroker::new().await;
        let bucket = zipkit_test_support::TestBucket::new().await;
        let ca = zipkit_test_support::tls::TestCa::new();
        let store = ca
            .front_for(&zipkit_test_support::services::s3_endpoint())
            .await;
        let trust = ca.trust_env();
        let mut all: Vec<(&str, &str)> = trust.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(env);
        let worker = sibling_binary(BINARY, "zipkit-worker");
        let stack = Stack::start(BINARY, &worker, db.url(), &vhost.url(), &all).await;
        let tenant = stack.tenant_at(bucket.name(), &store.origin());
        Self {
            _db: db,
            _vhost: vhost,
            bucket,
            ca,
            store,
            stack,
            tenant,
        }
    }
}

/// A dry run against the binaries, everything over HTTPS as in production: what it predicts is
/// what a worker then builds (the exact size when every entry is stored, a bound that holds when
/// one is deflated), it names each source that would be skipped or fail, connects to no internal
/// address, and creates nothing.
#[tokio::test]
async fn a_dry_run_predicts_the_archive_a_worker_then_builds_and_creates_nothing() {
    use zipkit_test_support::sources::{Behaviour, SourceServer};
    use zipkit_test_support::stack::post_job;

    let photo: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sources = SourceServer::start(vec![
        (
            "notes.txt",
            Behaviour::Serve(b"dry run notes\n".repeat(4_000)),
        ),
        ("photo.jpg", Behaviour::Serve(photo)),
        ("chunked.bin", Behaviour::Chunked(vec![b'c'; 300_000])),
        ("empty", Behaviour::Serve(Vec::new())),
        ("missing", Behaviour::Status(404)),
    ])
    .await;
    let tls = TlsStack::start(&[("ZIPKIT__WORKER__PART_SIZE_MIB", "5")]).await;
    let TlsStack {
        ca, stack, tenant, ..
    } = &tls;
    let source_front = ca.front_for(&sources.url("empty")).await;
    let url = |name: &str| source_front.https(&sources.url(name));
    let good = vec![
        json!({"url": url("notes.txt"), "filename": "notes.txt"}),
        json!({"url": url("photo.jpg"), "filename": "photos/photo.jpg"}),
        json!({"url": url("chunked.bin"), "filename": "chunked.bin", "size": 300_000}),
        json!({"url": url("empty"), "filename": "empty"}),
    ];
    let mut with_problems = good.clone();
    with_problems.push(json!({"url": url("missing"), "filename": "missing.txt"}));
    // A private address: refused by the policy before any connection.
    with_problems.push(json!({"url": "https://10.255.255.1/secret", "filename": "secret.txt"}));
    let http = reqwest::Client::new();
    let dry_run = |urls: &Vec<Value>, compression: &str, on_error: &str| {
        let body = json!({"urls": urls, "bucket_name": tenant.bucket, "key": "dry.zip",
            "compression": compression, "on_error": on_error, "dry_run": true});
        let request = http
            .post(stack.api_url("/v1/zips"))
            .bearer_auth(&tenant.token)
            .json(&body);
        async move {
            let answer = request.send().await.expect("POST");
            assert_eq!(answer.status(), 200);
            answer.json::<Value>().await.expect("JSON")["data"].clone()
        }
    };

    // Stored, skipping: exact, with the two bad sources named and left out.
    let stored = dry_run(&with_problems, "store", "skip").await;
    assert_eq!(stored["object"], "dry_run");
    assert_eq!(stored["size_exact"], true, "{stored}");
    assert_eq!(
        (&stored["entries"], &stored["zip64"]),
        (&json!(4), &json!(false))
    );
    assert_eq!(
        (&stored["part_size"], &stored["parts"]),
        (&json!(5 * 1024 * 1024), &json!(1))
    );
    assert_eq!(stored["failure"], Value::Null);
    let problems: Vec<(u64, &str, &str)> = stored["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().unwrap_or_default(),
                p["code"].as_str().unwrap_or_default(),
                p["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            (4, "source_not_found", "skipped"),
            (5, "source_address_forbidden", "skipped")
        ]
    );

    // Failing on error: the first bad source fails the job, named as the job would name it.
    let failing = dry_run(&with_problems, "store", "fail").await;
    assert_eq!(failing["failure"]["code"], "source_not_found", "{failing}");
    assert_eq!(failing["failure"]["param"], "urls[4]");
    assert_eq!(failing["problems"][0]["outcome"], "fails_job");

    // Nothing was created, and no source was downloaded in full by the dry runs.
    let listed: Value = http
        .get(stack.api_url("/v1/zips"))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["data"], json!([]));

    // The job itself: exactly the size predicted.
    let body = json!({"urls": with_problems, "bucket_name": tenant.bucket, "key": "dry.zip",
        "compression": "store", "on_error": "skip"});
    let job = stack.run_job(&tenant.token, &body, &[]).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", stack.logs());
    assert_eq!(job["result"]["size"], stored["size"], "{job}");
    assert_eq!(job["result"]["entries"], 4);
    // Worked out by the worker, with the failed sources left out.
    assert_eq!(job["expected_size"], stored["size"], "{job}");

    // Every source stored by its name and given with its size: the size is known at once, in
    // the answer to the request, before any worker has the job.
    let sized = vec![
        json!({"url": url("photo.jpg"), "filename": "a.jpg", "size": 1_500_000}),
        json!({"url": url("chunked.bin"), "filename": "b.zip", "size": 300_000}),
    ];
    let planned = dry_run(&sized, "auto", "fail").await;
    assert_eq!(planned["size_exact"], true, "{planned}");
    let body = json!({"urls": sized, "bucket_name": tenant.bucket, "key": "sized.zip"});
    let created = post_job(&stack.api_url(""), &tenant.token, &body).await;
    assert_eq!(
        created["data"]["expected_size"], planned["size"],
        "{created}"
    );
    let id = created["data"]["id"].as_str().expect("id");
    let job = stack
        .wait_for_job(&tenant.token, id, Duration::from_secs(60))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", stack.logs());
    assert_eq!(job["result"]["size"], planned["size"], "{job}");
    assert_eq!(job["expected_size"], planned["size"], "{job}");

    // `auto` deflates the notes: a bound, which the built archive stays under.
    let auto = dry_run(&good, "auto", "fail").await;
    assert_eq!(auto["size_exact"], false, "{auto}");
    let body = json!({"urls": good, "bucket_name": tenant.bucket, "key": "auto.zip", "compression": "auto"});
    let job = stack.run_job(&tenant.token, &body, &[]).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", stack.logs());
    // Once every entry was compressed, the worker knew the size exactly.
    assert_eq!(job["expected_size"], job["result"]["size"], "{job}");
    let (built, bound) = (
        job["result"]["size"].as_u64().unwrap_or(u64::MAX),
        auto["size"].as_u64().unwrap_or(0),
    );
    assert!(built <= bound, "built {built} bytes, bound {bound}");
    // Deflate's bound is the stored size plus its blocks' headers: never far above storing.
    let stored_size = stored["size"].as_u64().unwrap_or(0);
    assert!(
        bound <= stored_size + stored_size / 1000 + 100,
        "bound {bound}, stored {stored_size}"
    );
}

/// A finished archive comes with a link that downloads it under its own name, signed with the
/// bucket's keys, over TLS as in production; the `zip.completed` webhook carries one too; and a
/// link asked to live one second stops working after it.
#[tokio::test]
async fn a_finished_archive_has_a_download_link_that_fetches_it_by_name_and_expires() {
    use zipkit_test_support::receiver::WebhookReceiver;
    use zipkit_test_support::sources::{Behaviour, SourceServer};

    let sources = SourceServer::start(vec![(
        "report.txt",
        Behaviour::Serve(b"quarterly figures\n".repeat(1_000)),
    )])
    .await;
    let receiver = WebhookReceiver::start(0).await;
    let tls = TlsStack::start(&[]).await;
    let TlsStack {
        bucket,
        ca,
        store,
        stack,
        tenant,
        ..
    } = &tls;
    let source_front = ca.front_for(&sources.url("report.txt")).await;
    let p = tenant.project_id.as_str();
    stack.cli(
        &["webhook", "add", "--project", p, "--url", receiver.url()],
        "",
    );
    let job = |key: &str, extra: Value| {
        let mut body = json!({
            "urls": [{"url": source_front.https(&sources.url("report.txt")), "filename": "report.txt"}],
            "bucket_name": tenant.bucket,
            "key": key,
        });
        body.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        body
    };
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("PEM"))
        .build()
        .expect("a client");

    let before = chrono::Utc::now();
    let asked = json!({"expires_in_days": 30});
    let done = stack
        .run_job(&tenant.token, &job("exports/Q4 report.zip", asked), &[])
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let at = |field: &str| -> chrono::DateTime<chrono::Utc> {
        done[field]
            .as_str()
            .or(done["result"][field].as_str())
            .expect(field)
            .parse()
            .expect("RFC 3339")
    };
    assert_eq!(
        at("expires_at") - at("finished_at"),
        chrono::Duration::days(30)
    );
    assert_eq!(done["result"]["deleted_at"], Value::Null);
    let link = done["result"]["download_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no link: {done}"));
    assert!(link.starts_with(&store.origin()), "{link}");
    let expires: chrono::DateTime<chrono::Utc> = done["result"]["download_url_expires_at"]
        .as_str()
        .expect("an expiry")
        .parse()
        .expect("RFC 3339");
    let lifetime = (expires - before).num_seconds();
    assert!(
        (3590..=3700).contains(&lifetime),
        "an hour by default: {lifetime}"
    );
    let fetched = https.get(link).send().await.expect("GET the link");
    assert_eq!(fetched.status(), 200);
    assert_eq!(
        fetched.headers()["content-disposition"],
        "attachment; filename=\"Q4 report.zip\""
    );
    let archive = fetched.bytes().await.expect("the archive");
    assert_eq!(&archive[..], &bucket.get("exports/Q4 report.zip").await[..]);

    // The webhook's event carries a link of its own that works as well.
    let delivered = receiver.wait_for(1, Duration::from_secs(30)).await;
    let event: Value = serde_json::from_slice(&delivered[0].body).expect("JSON");
    let hooked = event["data"]["object"]["result"]["download_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no link in the event: {event}"));
    let fetched = https.get(hooked).send().await.expect("GET the link");
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.expect("bytes"), archive);

    // A link asked to live one second no longer opens after it.
    let done = stack
        .run_job(
            &tenant.token,
            &job("short.zip", json!({"download_url_ttl_secs": 1})),
            &[],
        )
        .await;
    let link = done["result"]["download_url"].as_str().expect("a link");
    let fresh = https.get(link).send().await.expect("GET the link");
    assert_eq!(fresh.status(), 200, "it opens while it lives");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expired = https.get(link).send().await.expect("GET the link");
    assert_eq!(expired.status(), 403, "an expired link is refused");
}

/// Sources in the project's bucket, read by the binaries over TLS as in production: a bucket
/// switched to let jobs read it with the CLI, a prefix and one object fetched with its keys
/// from the store behind the test's CA.
#[tokio::test]
async fn the_binaries_read_a_prefix_and_an_object_of_the_projects_bucket_over_tls() {
    let tls = TlsStack::start(&[]).await;
    let TlsStack {
        bucket,
        stack,
        tenant,
        ..
    } = &tls;
    for (key, bytes) in [
        ("docs/2026/a.txt", b"alpha".to_vec()),
        ("docs/2026/b/c.txt", b"gamma".to_vec()),
        ("docs/skip.tmp", b"not taken".to_vec()),
        ("cover.png", vec![0x89, b'P', b'N', b'G']),
    ] {
        bucket.put(key, bytes).await;
    }
    let p = tenant.project_id.as_str();
    stack.cli(
        &[
            "bucket",
            "sources",
            "--project",
            p,
            "--bucket",
            &tenant.bucket_id,
            "--allow",
        ],
        "",
    );
    let body = json!({
        "urls": [
            {"url": format!("s3://{}/docs/", tenant.bucket), "exclude": ["*.tmp"], "path": "documents"},
            {"url": format!("s3://{}/cover.png", tenant.bucket)},
        ],
        "bucket_name": tenant.bucket,
        "key": "out/bundle.zip",
    });
    let done = stack.run_job(&tenant.token, &body, &[]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["progress"]["files_total"], 3,
        "the prefix listed: {done}"
    );
    // As every reader opens it, the JDK's ZipInputStream among them.
    use zipkit_test_support::readers::{Seen, assert_every_reader_sees};
    assert_every_reader_sees(
        &bucket.get("out/bundle.zip").await,
        &[
            Seen::of("documents/2026/a.txt", b"alpha"),
            Seen::of("documents/2026/b/c.txt", b"gamma"),
            Seen::of("cover.png", &[0x89, b'P', b'N', b'G']),
        ],
    );
}

/// Tags and encryption reach a store that was found to accept them; elsewhere the request is
/// refused at once, naming the field and what the bucket lacks, instead of failing the job at its
/// first upload.
#[tokio::test]
async fn tags_and_encryption_are_accepted_only_for_a_bucket_found_to_accept_them() {
    use zipkit_domain::models::{Bucket, BucketCapabilities, BucketTestResult, Encryption};

    let (db, _broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    let bucket = app
        .bucket(&db, project, Service::R2, "my-zipkit-archives")
        .await;
    let mut body = zip_body("my-zipkit-archives", 1);
    body["service"] = json!("r2");
    body["tags"] = json!({"project": "Q4"});
    body["server_side_encryption"] = json!("aws:kms");
    body["sse_kms_key_id"] = json!("alias/archives");
    body["cache_control"] = json!("no-store");

    // Saved without a test: nobody knows what it accepts.
    let (status, answer) = app.send(app.post_zip(&token, &body)).await;
    assert_error(
        status,
        &answer,
        409,
        "invalid_request_error",
        "bucket_capability_unknown",
        Some("tags"),
    );
    // Found to refuse tags and KMS, as R2 does.
    let r2 = BucketCapabilities {
        write: true,
        read: true,
        sse_s3: true,
        ..BucketCapabilities::default()
    };
    let mut conn = db.connect().await;
    Bucket::record_test(&mut conn, bucket.id, &BucketTestResult::passed(r2))
        .await
        .unwrap();
    let (status, answer) = app.send(app.post_zip(&token, &body)).await;
    assert_error(
        status,
        &answer,
        409,
        "invalid_request_error",
        "bucket_capability_missing",
        Some("tags"),
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("s3:PutObjectTagging")),
        "{answer}"
    );
    body.as_object_mut().unwrap().remove("tags");
    let (status, answer) = app.send(app.post_zip(&token, &body)).await;
    assert_error(
        status,
        &answer,
        409,
        "invalid_request_error",
        "bucket_capability_missing",
        Some("server_side_encryption"),
    );
    // A store found to take no storage class besides STANDARD (and encryption it takes).
    body["server_side_encryption"] = json!("AES256");
    body.as_object_mut().unwrap().remove("sse_kms_key_id");
    body["storage_class"] = json!("STANDARD_IA");
    let (status, answer) = app.send(app.post_zip(&token, &body)).await;
    assert_error(
        status,
        &answer,
        409,
        "invalid_request_error",
        "bucket_capability_missing",
        Some("storage_class"),
    );
    let said = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        said.contains("STANDARD_IA: the store took none besides STANDARD"),
        "{said}"
    );
    body["storage_class"] = json!("STANDARD");
    // Keys that may not delete cannot expire an archive.
    body["expires_in_days"] = json!(7);
    let (status, answer) = app.send(app.post_zip(&token, &body)).await;
    assert_error(
        status,
        &answer,
        409,
        "invalid_request_error",
        "bucket_capability_missing",
        Some("expires_in_days"),
    );
    // Encryption with the store's keys it accepts: the job keeps what it asked.
    body.as_object_mut().unwrap().remove("expires_in_days");
    let (status, answer) = app.send(app.post_zip(&token, &body)).await;
    assert_eq!(status, 202, "{answer}");
    let id: ZipId = answer["data"]["id"].as_str().unwrap().parse().unwrap();
    let settings = Zip::result_settings(&mut conn, id).await.unwrap();
    assert_eq!(settings.encryption, Some(Encryption::StoreKeys));
    assert_eq!(settings.cache_control.as_deref(), Some("no-store"));
    assert_eq!(settings.storage_class.as_deref(), Some("STANDARD"));
    assert_eq!(settings.download_url_ttl_secs, Some(3600));
    app.stop().await;
}

#[tokio::test]
async fn bucket_sources_are_accepted_only_from_the_projects_buckets_that_let_jobs_read_them() {
    use zipkit_domain::models::{Bucket, Zip};

    let (db, _broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;
    let photos = app.bucket(&db, project, Service::S3, "acme-photos").await;
    let (other, _) = app.project(&db, "Other").await;
    app.bucket(&db, other, Service::S3, "their-photos").await;
    let mut body = zip_body("my-zipkit-archives", 1);
    body["urls"] = json!([
        {"url": "https://example.com/a.pdf", "filename": "a.pdf"},
        {"url": "s3://acme-photos/2026/", "include": ["*.jpg"], "path": "photos/"},
        {"url": "s3://acme-photos/cover.png"},
    ]);

    // A bucket of the project that has not been opened to jobs: refused, nothing stored.
    let (status, answer) = app.send(app.post_zip(&token, &body)).await;
    assert_error(
        status,
        &answer,
        409,
        "invalid_request_error",
        "bucket_sources_not_allowed",
        Some("urls[1].url"),
    );
    // Another project's bucket is no bucket at all.
    let mut theirs = body.clone();
    theirs["urls"][1]["url"] = json!("s3://their-photos/");
    let (status, answer) = app.send(app.post_zip(&token, &theirs)).await;
    assert_error(
        status,
        &answer,
        404,
        "invalid_request_error",
        "source_bucket_not_found",
        Some("urls[1].url"),
    );

    let mut conn = db.connect().await;
    Bucket::set_read_sources(&mut conn, project, photos.id, true)
        .await
        .unwrap();
    let mut dry = body.clone();
    dry["dry_run"] = json!(true);
    let (status, answer) = app.send(app.post_zip(&token, &dry)).await;
    assert_error(
        status,
        &answer,
        400,
        "invalid_request_error",
        "dry_run_unsupported",
        Some("dry_run"),
    );
    let (status, answer) = app.send(app.post_zip(&token, &body)).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["data"]["progress"]["files_total"], 3,
        "a prefix counts as one until listed"
    );
    assert!(
        answer["data"]["expected_size"].is_null(),
        "unknown until the prefix is listed"
    );
    let id = answer["data"]["id"].as_str().unwrap().parse().unwrap();
    let entries = Zip::entries(&mut conn, id).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.entry_index, e.url.as_str(), e.filename.as_str()))
            .collect::<Vec<_>>(),
        [
            (0, "https://example.com/a.pdf", "a.pdf"),
            (2, "s3://acme-photos/cover.png", "cover.png"),
        ],
        "each entry waits at its item's place while the prefix is listed"
    );
    let listings = Zip::listings(&mut conn, id).await.unwrap();
    assert_eq!(listings.len(), 1);
    assert_eq!(
        (
            listings[0].item_index,
            listings[0].prefix.as_str(),
            listings[0].path.as_str()
        ),
        (1, "2026/", "photos/")
    );
}

#[tokio::test]
async fn a_manifest_is_accepted_at_once_and_left_for_the_worker_to_read() {
    use zipkit_domain::models::{Bucket, Zip};

    let (db, _broker, app) = start().await;
    let (project, token) = app.project(&db, "Acme").await;
    app.bucket(&db, project, Service::S3, "my-zipkit-archives")
        .await;
    let lists = app.bucket(&db, project, Service::S3, "acme-lists").await;
    let body = |manifest: Value| json!({"manifest": manifest, "bucket_name": "my-zipkit-archives", "key": "big.zip"});

    let mut both = body(json!("https://lists.example.com/all.jsonl"));
    both["urls"] = json!([{"url": "https://example.com/a.pdf", "filename": "a.pdf"}]);
    let refused = [
        (both, 400, "parameter_invalid", "manifest"),
        (
            json!({"bucket_name": "my-zipkit-archives", "key": "k.zip"}),
            400,
            "parameter_missing",
            "urls",
        ),
        (
            body(json!("s3://acme-lists/lists/")),
            400,
            "manifest_invalid",
            "manifest",
        ),
        (
            body(json!("ftp://lists.example.com/all.csv")),
            400,
            "manifest_invalid",
            "manifest",
        ),
        (
            json!({"manifest": "https://l.example.com/a", "manifest_format": "xml", "bucket_name": "my-zipkit-archives", "key": "k.zip"}),
            400,
            "manifest_format_invalid",
            "manifest_format",
        ),
        (
            body(json!("s3://acme-lists/all.csv")),
            409,
            "bucket_sources_not_allowed",
            "manifest",
        ),
    ];
    for (request, status, code, param) in refused {
        let (got, answer) = app.send(app.post_zip(&token, &request)).await;
        assert_error(
            got,
            &answer,
            status,
            "invalid_request_error",
            code,
            Some(param),
        );
    }

    let mut conn = db.connect().await;
    Bucket::set_read_sources(&mut conn, project, lists.id, true)
        .await
        .unwrap();
    for (manifest, format) in [
        ("s3://acme-lists/exports/all.CSV", "csv"),
        ("https://lists.example.com/all.jsonl?sig=1", "jsonl"),
    ] {
        let (status, answer) = app.send(app.post_zip(&token, &body(json!(manifest)))).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["data"]["progress"]["files_total"], 1);
        let id = answer["data"]["id"].as_str().unwrap().parse().unwrap();
        assert!(Zip::entries(&mut conn, id).await.unwrap().is_empty());
        let listings = Zip::listings(&mut conn, id).await.unwrap();
        let (url, found, max) = listings[0].manifest().expect("a manifest");
        assert_eq!(
            (url.as_str(), found.as_str(), max),
            (manifest, format, 1_000_000),
            "the format from the extension, the deployment's limit"
        );
    }
}
