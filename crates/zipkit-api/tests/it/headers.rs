//! Headers every response carries, and the dashboard's security headers, from the running app.

use crate::common;

use std::collections::HashSet;

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ascii")
}

#[tokio::test]
async fn every_response_has_its_own_request_id_and_nosniff_and_errors_quote_the_id() {
    let (_db, _broker, app) = common::start().await;
    let mut ids = HashSet::new();
    for path in [
        "/healthz",
        "/readyz",
        "/v1/openapi.json",
        "/v1/zips",
        "/nothing",
        "/dashboard/login",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("GET");
        assert_eq!(
            header(&response, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        let id = header(&response, "request-id").to_owned();
        assert!(id.starts_with("req_") && id.len() == 36, "{path}: {id}");
        assert!(ids.insert(id.clone()), "{path}: ids are unique");
        if response.status().is_client_error() && path != "/dashboard/login" {
            let body: serde_json::Value = response.json().await.expect("JSON");
            assert_eq!(body["error"]["request_id"], id.as_str(), "{path}: {body}");
        }
    }
}

#[tokio::test]
async fn head_is_answered_wherever_get_is_with_headers_and_no_body() {
    let (_db, _broker, app) = common::start().await;
    for path in [
        "/healthz",
        "/dashboard/login",
        "/dashboard/style.css",
        "/v1/openapi.json",
    ] {
        let get = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("GET");
        let head = app
            .http
            .head(format!("{}{path}", app.base))
            .send()
            .await
            .expect("HEAD");
        assert_eq!(head.status(), get.status(), "{path}");
        assert_eq!(head.status(), 200, "{path}");
        assert_eq!(
            header(&head, "content-type"),
            header(&get, "content-type"),
            "{path}"
        );
        assert!(head.bytes().await.expect("body").is_empty(), "{path}");
    }
}

#[tokio::test]
async fn dashboard_pages_forbid_inline_script_framing_sniffing_and_referrers() {
    let (_db, _broker, app) = common::start().await;
    for path in [
        "/dashboard/login",
        "/dashboard/copy.js",
        "/dashboard/style.css",
        "/dashboard/nothing",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("GET");
        let csp = header(&response, "content-security-policy").to_owned();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header(&response, "x-frame-options"), "DENY", "{path}");
        assert_eq!(
            header(&response, "x-content-type-options"),
            "nosniff",
            "{path}"
        );
        assert_eq!(
            header(&response, "referrer-policy"),
            "no-referrer",
            "{path}"
        );
        assert!(
            header(&response, "permissions-policy").contains("camera=()"),
            "{path}"
        );
    }
    // The page itself needs nothing the policy forbids: no inline script, style or handler.
    let page = app
        .http
        .get(format!("{}/dashboard/login", app.base))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(page.contains("<form"), "{page}");
    assert!(
        !page.contains("<script>") && !page.contains("<style"),
        "{page}"
    );
    assert!(
        !page.contains(" style=") && !page.contains(" onclick="),
        "{page}"
    );
}
