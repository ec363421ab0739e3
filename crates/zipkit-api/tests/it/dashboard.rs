//! The dashboard at the HTTP level: sign-in, sessions, CSRF on every form, the throttle, that a
//! member of one project can reach nothing of another by changing ids, and that no page ever
//! shows a stored secret. (The browser walk-through is `tests/browser.rs`.)

use crate::common;

use common::{TestApp, settings};
use zipkit_domain::models::{AccessToken, Bucket, User, WebhookDelivery, WebhookEndpoint, Zip};
use zipkit_domain::{ProjectId, Service};
use zipkit_test_support::internal::InternalService;
use zipkit_test_support::services::{s3_access_key, s3_endpoint, s3_secret_key};
use zipkit_test_support::store_proxy::StoreProxy;
use zipkit_test_support::{TestBroker, TestBucket, TestDatabase};

const PASSWORD: &str = "a long enough password";

struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
}

struct Page {
    status: u16,
    location: String,
    retry_after: Option<String>,
    body: String,
    set_cookies: Vec<String>,
}

impl Browser {
    fn new(base: &str) -> Self {
        Self::from_address(base, "127.0.0.1")
    }

    /// A browser whose connections come from `address` (any of 127.0.0.0/8 is this machine), so
    /// the server tells it apart from other clients.
    fn from_address(base: &str, address: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(address.parse::<std::net::IpAddr>().expect("an address"))
                .build()
                .expect("client"),
            cookies: Default::default(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let response = request
            .header("cookie", cookie)
            .send()
            .await
            .expect("request");
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().expect("pair");
            let (name, value) = pair.split_once('=').expect("name=value");
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page {
            status: response.status().as_u16(),
            location: response
                .headers()
                .get("location")
                .map(|v| v.to_str().expect("ascii").to_owned())
                .unwrap_or_default(),
            retry_after: response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned()),
            set_cookies,
            body: response.text().await.expect("body"),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }
}

/// The value of the hidden `csrf` field of a page.
fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..at + body[at..].find('"').expect("end")].to_owned()
}

async fn sign_in(browser: &mut Browser, email: &str, password: &str) -> Page {
    let form = browser.get("/dashboard/login").await;
    let csrf = csrf_of(&form.body);
    browser
        .post(
            "/dashboard/login",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
}

/// A job of one file in `bucket`'s project, stored as the API would store it.
fn one_file_job(
    bucket: &Bucket,
    key: &str,
    result_settings: zipkit_domain::models::ResultSettings,
) -> zipkit_domain::models::NewZip {
    use zipkit_domain::values::{EntryName, ObjectKey, SourceUrl};
    zipkit_domain::models::NewZip {
        listings: Vec::new(),
        manifest: None,
        traceparent: None,
        expected_size: None,
        result_settings,
        project_id: bucket.project_id,
        bucket_id: bucket.id,
        key: ObjectKey::parse(key).expect("key"),
        metadata: Default::default(),
        compression: Default::default(),
        on_error: Default::default(),
        idempotency: None,
        entries: vec![zipkit_domain::models::NewZipEntry {
            url: SourceUrl::parse("https://example.com/a.pdf").expect("url"),
            filename: EntryName::parse("a.pdf").expect("name"),
            given_filename: None,
            modified_at: None,
            declared_size: None,
        }],
    }
}

async fn user_in(db: &TestDatabase, email: &str, project: &str) -> User {
    user_with_project(db, email, project).await.0
}

async fn user_with_project(db: &TestDatabase, email: &str, project: &str) -> (User, ProjectId) {
    common::owner_of_new_project(db, email, PASSWORD, project).await
}

#[tokio::test]
async fn signing_in_shows_only_my_projects_and_signing_out_ends_the_session() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    let app = TestApp::start(settings(db.url(), &broker.url())).await;
    user_in(&db, "ann@example.com", "Ann's project").await;
    user_in(&db, "bob@example.com", "Bob's project").await;
    let mut browser = Browser::new(&app.base);

    let away = browser.get("/dashboard").await;
    assert_eq!(
        (away.status, away.location.as_str()),
        (303, "/dashboard/login")
    );

    // Wrong password: the form comes back with the address kept and a plain message.
    let wrong = sign_in(&mut browser, "Ann@Example.com", "not the password").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong email or password."));
    assert!(wrong.body.contains("value=\"ann@example.com\""));
    assert!(!wrong.body.contains("not the password"));

    let signed_in = sign_in(&mut browser, "ann@example.com", PASSWORD).await;
    assert_eq!(
        (signed_in.status, signed_in.location.as_str()),
        (303, "/dashboard")
    );
    let session_cookie = signed_in
        .set_cookies
        .iter()
        .find(|c| c.starts_with("zipkit_session="))
        .expect("a session cookie");
    assert!(session_cookie.contains("HttpOnly"), "{session_cookie}");
    assert!(session_cookie.contains("SameSite=Lax"), "{session_cookie}");

    let home = browser.get("/dashboard").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Ann&#39;s project") || home.body.contains("Ann's project"));
    assert!(
        !home.body.contains("Bob"),
        "another user's project is never shown"
    );

    // Signing out needs the session's CSRF token; without it nothing happens.
    let refused = browser
        .post("/dashboard/logout", &[("csrf", "forged")])
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(browser.get("/dashboard").await.status, 200);
    let stolen = browser.cookies.clone();
    let out = browser
        .post("/dashboard/logout", &[("csrf", &csrf_of(&home.body))])
        .await;
    assert_eq!(
        (out.status, out.location.as_str()),
        (303, "/dashboard/login")
    );
    // The session ends on the server: even a copied cookie no longer works.
    browser.cookies = stolen;
    let after = browser.get("/dashboard").await;
    assert_eq!(
        (after.status, after.location.as_str()),
        (303, "/dashboard/login")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_sign_in_without_the_forms_csrf_value_is_refused() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    let app = TestApp::start(settings(db.url(), &broker.url())).await;
    user_in(&db, "ann@example.com", "Ann's project").await;
    let mut browser = Browser::new(&app.base);
    browser.get("/dashboard/login").await;
    let forged = browser
        .post(
            "/dashboard/login",
            &[
                ("csrf", "made-up"),
                ("email", "ann@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(
        !forged
            .set_cookies
            .iter()
            .any(|c| c.starts_with("zipkit_session="))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_strangers_failed_sign_ins_lock_out_the_stranger_not_the_owner() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    let app = TestApp::start(settings(db.url(), &broker.url())).await;
    user_in(&db, "ann@example.com", "Ann's project").await;

    // Five wrong passwords from one address: that address waits, even with the right one.
    let mut stranger = Browser::from_address(&app.base, "127.0.0.2");
    for _ in 0..5 {
        assert_eq!(
            sign_in(&mut stranger, "ann@example.com", "guess")
                .await
                .status,
            401
        );
    }
    let throttled = sign_in(&mut stranger, "ann@example.com", PASSWORD).await;
    assert_eq!(throttled.status, 429);
    assert!(
        throttled.body.contains("Too many failed sign-ins"),
        "{}",
        throttled.body
    );
    assert!(
        !throttled
            .set_cookies
            .iter()
            .any(|c| c.starts_with("zipkit_session="))
    );

    // The owner, from their own address, signs in at once.
    let mut owner = Browser::from_address(&app.base, "127.0.0.3");
    let signed_in = sign_in(&mut owner, "ann@example.com", PASSWORD).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    // And the stranger's lock-out survives the owner's success.
    assert_eq!(
        sign_in(&mut stranger, "ann@example.com", PASSWORD)
            .await
            .status,
        429
    );
    app.stop().await;
}

#[tokio::test]
async fn spraying_one_password_across_accounts_from_one_address_is_slowed() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    let app = TestApp::start(settings(db.url(), &broker.url())).await;
    user_in(&db, "ann@example.com", "Ann's project").await;
    let mut sprayer = Browser::from_address(&app.base, "127.0.0.4");
    // One guess per account stays under the per-account limit; the per-address one stops it.
    for n in 0..20 {
        let page = sign_in(&mut sprayer, &format!("user{n}@example.com"), "Summer2026!").await;
        assert_eq!(page.status, 401, "attempt {n}");
    }
    let page = sign_in(&mut sprayer, "ann@example.com", "Summer2026!").await;
    assert_eq!(page.status, 429);
    let wait: i64 = page
        .retry_after
        .as_deref()
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert_eq!(wait, 15 * 60);
    // Someone else signs in normally.
    let mut owner = Browser::from_address(&app.base, "127.0.0.5");
    assert_eq!(
        sign_in(&mut owner, "ann@example.com", PASSWORD)
            .await
            .status,
        303
    );
    app.stop().await;
}

/// A signed-in browser and the CSRF token of its session.
async fn signed_in(app: &TestApp, email: &str) -> (Browser, String) {
    let mut browser = Browser::new(&app.base);
    let page = sign_in(&mut browser, email, PASSWORD).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let home = browser.get("/dashboard").await;
    let csrf = csrf_of(&home.body);
    (browser, csrf)
}

#[tokio::test]
async fn a_member_of_one_project_reaches_nothing_of_another_by_changing_ids() {
    let (db, _broker, app) = common::start().await;
    let (_, mine) = user_with_project(&db, "ann@example.com", "Ann's project").await;
    let (_, theirs) = user_with_project(&db, "bob@example.com", "Bob's project").await;
    // Bob's project has one of everything.
    let bucket = app.bucket(&db, theirs, Service::S3, "bobs-archives").await;
    let mut conn = db.connect().await;
    let token = zipkit_api::admin::tokens::create(&mut conn, theirs, "bob's job")
        .await
        .expect("token");
    let endpoint = zipkit_api::admin::webhooks::create(
        &mut conn,
        &app.keyring,
        theirs,
        "https://hooks.example.com/bob",
        "bob's hook",
        false,
        &zipkit_egress::EgressPolicy::public_only(),
    )
    .await
    .expect("endpoint")
    .endpoint;
    let zip = {
        let new = one_file_job(&bucket, "bob/secret-plans.zip", Default::default());
        Zip::create(&mut conn, new).await.expect("zip")
    };

    let (mut ann, csrf) = signed_in(&app, "ann@example.com").await;
    let b = format!("/dashboard/projects/{theirs}");
    let a = format!("/dashboard/projects/{mine}");
    // Bob's project under its own id, and Bob's things under Ann's project id.
    for path in [
        format!("{b}/zips"),
        format!("{b}/buckets"),
        format!("{b}/buckets/new"),
        format!("{b}/tokens"),
        format!("{b}/webhooks"),
        format!("{b}/zips/{}", zip.id),
        format!("{a}/zips/{}", zip.id),
        format!("{a}/buckets/{}/edit", bucket.id),
        format!("{a}/buckets/{}/delete", bucket.id),
        format!("{a}/webhooks/{}", endpoint.id),
        "/dashboard/projects/not-a-uuid/zips".to_owned(),
    ] {
        let page = ann.get(&path).await;
        assert_eq!(page.status, 404, "GET {path}");
        for secretive in ["Bob", "bobs-archives", "secret-plans", "hooks.example.com"] {
            assert!(
                !page.body.contains(secretive),
                "GET {path} shows {secretive}"
            );
        }
    }
    // Forms posted with Ann's valid CSRF token at Bob's things change nothing.
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("{a}/buckets/{}/delete", bucket.id), vec![]),
        (format!("{b}/buckets/{}/delete", bucket.id), vec![]),
        (
            format!("{a}/buckets/{}", bucket.id),
            vec![
                ("region", "us-east-1"),
                ("access_key_id", "x"),
                ("secret_access_key", "y"),
            ],
        ),
        (
            format!("{b}/buckets"),
            vec![
                ("service", "s3"),
                ("name", "planted"),
                ("region", "us-east-1"),
                ("access_key_id", "x"),
                ("secret_access_key", "y"),
            ],
        ),
        (format!("{a}/tokens/{}/revoke", token.stored.id), vec![]),
        (format!("{b}/tokens"), vec![("name", "planted")]),
        (format!("{a}/webhooks/{}/test", endpoint.id), vec![]),
        (format!("{a}/webhooks/{}/delete", endpoint.id), vec![]),
        (
            format!("{b}/webhooks"),
            vec![("url", "https://evil.example.com/")],
        ),
    ];
    for (path, fields) in &posts {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields.iter().copied());
        let page = ann.post(path, &form).await;
        assert_eq!(page.status, 404, "POST {path}");
    }
    assert!(
        Bucket::find(&mut conn, theirs, bucket.id)
            .await
            .expect("q")
            .is_some()
    );
    assert_eq!(Bucket::list(&mut conn, theirs).await.expect("q").len(), 1);
    let tokens = AccessToken::list(&mut conn, theirs).await.expect("q");
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].revoked_at.is_none(), "Bob's token is still live");
    assert_eq!(
        WebhookEndpoint::list(&mut conn, theirs)
            .await
            .expect("q")
            .len(),
        1
    );
    assert!(
        WebhookDelivery::recent(&mut conn, endpoint.id, 5)
            .await
            .expect("q")
            .is_empty()
    );
    // Ann's own pages work, and list nothing of Bob's.
    for section in ["zips", "buckets", "tokens", "webhooks"] {
        let page = ann.get(&format!("{a}/{section}")).await;
        assert_eq!(page.status, 200, "{section}");
        assert!(!page.body.contains("bobs-archives") && !page.body.contains("bob&#39;s"));
    }
    app.stop().await;
}

#[tokio::test]
async fn every_form_posted_without_the_csrf_token_is_refused_and_changes_nothing() {
    let (db, _broker, app) = common::start().await;
    let (_, project) = user_with_project(&db, "ann@example.com", "Ann's project").await;
    let bucket = app.bucket(&db, project, Service::S3, "anns-archives").await;
    let mut conn = db.connect().await;
    let token = zipkit_api::admin::tokens::create(&mut conn, project, "job")
        .await
        .expect("token");
    let endpoint = zipkit_api::admin::webhooks::create(
        &mut conn,
        &app.keyring,
        project,
        "https://hooks.example.com/ann",
        "",
        false,
        &zipkit_egress::EgressPolicy::public_only(),
    )
    .await
    .expect("endpoint")
    .endpoint;
    let (mut ann, _) = signed_in(&app, "ann@example.com").await;
    let p = format!("/dashboard/projects/{project}");
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("{p}/buckets"),
            vec![
                ("service", "s3"),
                ("name", "another"),
                ("region", "us-east-1"),
                ("access_key_id", "x"),
                ("secret_access_key", "y"),
            ],
        ),
        (
            format!("{p}/buckets/{}", bucket.id),
            vec![
                ("region", "eu-west-1"),
                ("access_key_id", "x"),
                ("secret_access_key", "y"),
            ],
        ),
        (format!("{p}/buckets/{}/delete", bucket.id), vec![]),
        (format!("{p}/tokens"), vec![("name", "planted")]),
        (format!("{p}/tokens/{}/revoke", token.stored.id), vec![]),
        (
            format!("{p}/webhooks"),
            vec![("url", "https://evil.example.com/")],
        ),
        (format!("{p}/webhooks/{}/test", endpoint.id), vec![]),
        (format!("{p}/webhooks/{}/delete", endpoint.id), vec![]),
    ];
    for (path, fields) in &posts {
        for csrf in [None, Some("forged")] {
            let mut form: Vec<(&str, &str)> = fields.clone();
            if let Some(csrf) = csrf {
                form.push(("csrf", csrf));
            }
            let page = ann.post(path, &form).await;
            assert_eq!(page.status, 403, "POST {path} with csrf {csrf:?}");
            assert!(page.body.contains("This form expired"), "{}", page.body);
        }
    }
    let buckets = Bucket::list(&mut conn, project).await.expect("q");
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].region, "us-east-1");
    let tokens = AccessToken::list(&mut conn, project).await.expect("q");
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].revoked_at.is_none());
    assert_eq!(
        WebhookEndpoint::list(&mut conn, project)
            .await
            .expect("q")
            .len(),
        1
    );
    assert!(
        WebhookDelivery::recent(&mut conn, endpoint.id, 5)
            .await
            .expect("q")
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn internal_bucket_endpoints_and_webhook_urls_are_refused_in_plain_words_without_a_connection()
 {
    // Production's policy: nothing beyond public addresses.
    let (db, _broker, app) =
        common::start_adjusted(|s| s.egress = zipkit_egress::EgressSettings::default()).await;
    let (_, project) = user_with_project(&db, "ann@example.com", "Ann's project").await;
    let internal = InternalService::start().await;
    let port = internal.port();
    let (mut ann, csrf) = signed_in(&app, "ann@example.com").await;
    let p = format!("/dashboard/projects/{project}");

    for endpoint in [
        format!("http://127.0.0.2:{port}"),
        format!("http://2130706434:{port}"),
        format!("http://localhost:{port}"),
    ] {
        let form = [
            ("csrf", csrf.as_str()),
            ("service", "s3"),
            ("name", "internal-archives"),
            ("region", "us-east-1"),
            ("access_key_id", "AKIAEXAMPLE"),
            ("secret_access_key", "secret"),
            ("endpoint_url", endpoint.as_str()),
            ("path_style", "on"),
        ];
        let refused = ann.post(&format!("{p}/buckets"), &form).await;
        assert_eq!(refused.status, 422, "{endpoint}: {}", refused.body);
        assert!(
            refused
                .body
                .contains("which this deployment does not connect to"),
            "{endpoint}: {}",
            refused.body
        );
        assert!(
            !refused.body.contains("refused the test upload"),
            "no answer of an internal service is shown"
        );
    }
    for url in [
        format!("https://127.0.0.2:{port}/x"),
        format!("https://2130706434:{port}/x"),
        format!("https://[::ffff:127.0.0.2]:{port}/x"),
        format!("https://localhost:{port}/x"),
    ] {
        let refused = ann
            .post(
                &format!("{p}/webhooks"),
                &[
                    ("csrf", csrf.as_str()),
                    ("url", url.as_str()),
                    ("description", ""),
                ],
            )
            .await;
        assert_eq!(refused.status, 422, "{url}: {}", refused.body);
        assert!(
            refused.body.contains("does not send webhooks to"),
            "{url}: {}",
            refused.body
        );
    }
    let mut conn = db.connect().await;
    assert!(Bucket::list(&mut conn, project).await.unwrap().is_empty());
    assert!(
        zipkit_domain::models::WebhookEndpoint::list(&mut conn, project)
            .await
            .unwrap()
            .is_empty()
    );
    internal.assert_untouched().await;
}

/// Keys whose policy lacks s3:GetObject: the bucket is saved (it may be written), and its page says
/// what the keys may not do and what would grant it.
#[tokio::test]
async fn the_bucket_page_shows_what_the_keys_may_do_and_what_a_missing_capability_needs() {
    let (db, _broker, app) = common::start().await;
    let (_, project) = user_with_project(&db, "ann@example.com", "Ann's project").await;
    let store = TestBucket::new().await;
    let no_get = StoreProxy::start().await;
    no_get.refuse("GetObject", 403, "AccessDenied", None);
    no_get.refuse("HeadObject", 403, "AccessDenied", None);
    let (mut ann, csrf) = signed_in(&app, "ann@example.com").await;
    let p = format!("/dashboard/projects/{project}");
    let (access_key, secret_key) = (s3_access_key(), s3_secret_key());
    let saved = ann
        .post(
            &format!("{p}/buckets"),
            &[
                ("csrf", &csrf),
                ("service", "s3"),
                ("name", store.name()),
                ("region", "us-east-1"),
                ("access_key_id", &access_key),
                ("secret_access_key", &secret_key),
                ("endpoint_url", no_get.url()),
                ("path_style", "on"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let bucket = Bucket::list(&mut db.connect().await, project)
        .await
        .expect("q")
        .remove(0);
    let found = bucket.capabilities.expect("checked by Save and Test");
    assert!(!found.read && found.write && found.list, "{found:?}");
    let page = ann.get(&format!("{p}/buckets/{}/edit", bucket.id)).await;
    assert_eq!(page.status, 200);
    for line in [
        "<dt>Read</dt><dd><span class=\"bad\">no</span> <span class=\"muted\">needs s3:GetObject</span></dd>",
        "<dt>List</dt><dd><span class=\"ok\">yes</span></dd>",
        "<dt>Abort multipart uploads</dt><dd><span class=\"ok\">yes</span></dd>",
    ] {
        assert!(page.body.contains(line), "{line}\n{}", page.body);
    }

    // Reading sources is off until switched on; on, the page says what the keys lack for it.
    assert!(
        page.body
            .contains("jobs naming this bucket as a source are refused")
    );
    let switch = |value: &'static str| [("csrf", csrf.clone()), ("read_sources", value.to_owned())];
    let on = switch("on");
    let on: Vec<(&str, &str)> = on.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let forged = ann
        .post(
            &format!("{p}/buckets/{}/sources", bucket.id),
            &[("csrf", "forged"), ("read_sources", "on")],
        )
        .await;
    assert_eq!(forged.status, 403);
    let switched = ann
        .post(&format!("{p}/buckets/{}/sources", bucket.id), &on)
        .await;
    assert_eq!(switched.status, 303, "{}", switched.body);
    let mut conn = db.connect().await;
    assert!(
        Bucket::find(&mut conn, project, bucket.id)
            .await
            .unwrap()
            .unwrap()
            .read_sources
    );
    let page = ann.get(&format!("{p}/buckets/{}/edit", bucket.id)).await;
    assert!(
        page.body
            .contains("its last test found its keys may not s3:GetObject"),
        "{}",
        page.body
    );
    let off = switch("off");
    let off: Vec<(&str, &str)> = off.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ann.post(&format!("{p}/buckets/{}/sources", bucket.id), &off)
        .await;
    assert!(
        !Bucket::find(&mut conn, project, bucket.id)
            .await
            .unwrap()
            .unwrap()
            .read_sources
    );
}

#[tokio::test]
async fn buckets_tokens_and_webhooks_are_managed_without_any_page_showing_a_stored_secret() {
    let (db, _broker, app) = common::start().await;
    let (_, project) = user_with_project(&db, "ann@example.com", "Ann's project").await;
    let store = TestBucket::new().await;
    let (mut ann, csrf) = signed_in(&app, "ann@example.com").await;
    let p = format!("/dashboard/projects/{project}");
    let (access_key, secret_key) = (s3_access_key(), s3_secret_key());
    let endpoint_url = s3_endpoint();

    // Wrong secret: the provider's refusal in plain words, what was typed kept, the secret not.
    let form = |secret: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("csrf", csrf.clone()),
            ("service", "s3".into()),
            ("name", store.name().to_owned()),
            ("region", "us-east-1".into()),
            ("access_key_id", access_key.clone()),
            ("secret_access_key", secret.into()),
            ("endpoint_url", endpoint_url.clone()),
            ("path_style", "on".into()),
        ]
    };
    let wrong = form("definitely-not-the-secret");
    let wrong: Vec<(&str, &str)> = wrong.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = ann.post(&format!("{p}/buckets"), &wrong).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("The secret access key does not match the access key ID"),
        "{}",
        refused.body
    );
    assert!(
        refused
            .body
            .contains(&format!("value=\"{}\"", store.name()))
    );
    assert!(refused.body.contains("value=\"us-east-1\""));
    assert!(!refused.body.contains("definitely-not-the-secret"));
    assert!(
        Bucket::list(&mut db.connect().await, project)
            .await
            .expect("q")
            .is_empty()
    );

    // A field error names its field and keeps the rest.
    let mut bad_region = wrong.clone();
    bad_region.retain(|(k, _)| *k != "region");
    bad_region.push(("region", "Not A Region"));
    let invalid = ann.post(&format!("{p}/buckets"), &bad_region).await;
    assert_eq!(invalid.status, 422);
    assert!(
        invalid.body.contains("The region looks like"),
        "{}",
        invalid.body
    );

    // Right secret: saved, listed with name, service, region and date; only a hint of the key.
    let secret: &'static str = Box::leak(secret_key.clone().into_boxed_str());
    let right = form(secret);
    let right: Vec<(&str, &str)> = right.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let saved = ann.post(&format!("{p}/buckets"), &right).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let list = ann.get(&saved.location).await;
    assert!(list.body.contains("passed the write test"));
    assert!(list.body.contains(store.name()));
    assert!(list.body.contains("S3-compatible (127.0.0.1)"));
    assert!(list.body.contains("us-east-1"));
    // Where customers configure buckets, they learn about the lifecycle rule (and on the form).
    for page in [&list.body, &refused.body] {
        assert!(
            page.contains("lifecycle rule that aborts incomplete multipart uploads"),
            "{page}"
        );
    }
    let bucket = Bucket::list(&mut db.connect().await, project)
        .await
        .expect("q")
        .remove(0);
    assert!(
        list.body
            .contains(&bucket.created_at.format("%Y-%m-%d").to_string())
    );

    // Edit: new credentials are tested first; wrong ones are refused and nothing changes.
    let edit_path = format!("{p}/buckets/{}", bucket.id);
    let edit_wrong = ann
        .post(
            &edit_path,
            &[
                ("csrf", &csrf),
                ("region", "us-east-1"),
                ("access_key_id", &access_key),
                ("secret_access_key", "still-wrong"),
            ],
        )
        .await;
    assert_eq!(edit_wrong.status, 422);
    assert!(edit_wrong.body.contains("does not match"));
    let edited = ann
        .post(
            &edit_path,
            &[
                ("csrf", &csrf),
                ("region", "us-east-1"),
                ("access_key_id", &access_key),
                ("secret_access_key", secret),
            ],
        )
        .await;
    assert_eq!(edited.status, 303, "{}", edited.body);

    // A token, shown once.
    let created = ann
        .post(
            &format!("{p}/tokens"),
            &[("csrf", &csrf), ("name", "exporter")],
        )
        .await;
    assert_eq!(created.status, 201);
    let at = created
        .body
        .find("value=\"zk_")
        .expect("the token is shown")
        + 7;
    let token = created.body[at..at + created.body[at..].find('"').expect("end")].to_owned();
    // The token works against the API.
    let (status, _) = app
        .send(app.post_zip(&token, &common::zip_body(store.name(), 1)))
        .await;
    assert_eq!(
        status, 202,
        "a token created in the dashboard authenticates"
    );
    // A job whose names were rewritten for Windows shows what was given and the rule.
    let mut renamed = common::zip_body(store.name(), 2);
    renamed["urls"][0]["filename"] = "reports/Q1: summary?.pdf".into();
    renamed["urls"][1]["filename"] = "CON.txt".into();
    renamed["windows_safe_names"] = true.into();
    let (status, renamed) = app.send(app.post_zip(&token, &renamed)).await;
    assert_eq!(status, 202, "{renamed}");
    let renamed_page = ann
        .get(&format!(
            "{p}/zips/{}",
            renamed["data"]["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(renamed_page.status, 200);
    for shown in [
        "reports/Q1_ summary_.pdf",
        "given as <code>reports/Q1: summary?.pdf</code>",
        "CON_.txt",
        "given as <code>CON.txt</code>",
        "Names Windows cannot create were rewritten",
        "a device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9, with any extension) gets _ after it",
    ] {
        assert!(
            renamed_page.body.contains(shown),
            "{shown}: {}",
            renamed_page.body
        );
    }

    // A webhook endpoint and its secret, shown once.
    let hook = ann
        .post(
            &format!("{p}/webhooks"),
            &[
                ("csrf", &csrf),
                ("url", "https://hooks.example.com/in"),
                ("description", "orders"),
            ],
        )
        .await;
    assert_eq!(hook.status, 201);
    let at = hook
        .body
        .find("value=\"whsec_")
        .expect("the secret is shown")
        + 7;
    let signing_secret = hook.body[at..at + hook.body[at..].find('"').expect("end")].to_owned();
    let bad_hook = ann
        .post(
            &format!("{p}/webhooks"),
            &[
                ("csrf", &csrf),
                ("url", "not a url"),
                ("description", "kept"),
            ],
        )
        .await;
    assert_eq!(bad_hook.status, 422);
    assert!(bad_hook.body.contains("Not a URL") && bad_hook.body.contains("value=\"kept\""));

    // Every page, afterwards: none shows a stored secret (nor the access key id in full).
    let mut conn = db.connect().await;
    let zip = Zip::list(
        &mut conn,
        project,
        zipkit_domain::models::ZipPage {
            status: None,
            starting_after: None,
            limit: 1,
        },
    )
    .await
    .expect("q")
    .expect("page")
    .remove(0)
    .zip;
    let endpoint = WebhookEndpoint::list(&mut conn, project)
        .await
        .expect("q")
        .remove(0);
    let pages = [
        "/dashboard".to_owned(),
        format!("{p}/zips"),
        format!("{p}/zips/{}", zip.id),
        format!("{p}/buckets"),
        format!("{p}/buckets/new"),
        format!("{p}/buckets/new?service=r2"),
        format!("{p}/buckets/{}/edit", bucket.id),
        format!("{p}/buckets/{}/delete", bucket.id),
        format!("{p}/tokens"),
        format!("{p}/webhooks"),
        format!("{p}/webhooks/{}", endpoint.id),
    ];
    for path in &pages {
        let page = ann.get(path).await;
        assert_eq!(page.status, 200, "GET {path}");
        for secret in [
            secret,
            access_key.as_str(),
            token.as_str(),
            signing_secret.as_str(),
        ] {
            assert!(!page.body.contains(secret), "GET {path} shows a secret");
        }
    }
    // The delete is refused while the zips refer to the bucket, saying how many.
    let refused = ann
        .post(
            &format!("{p}/buckets/{}/delete", bucket.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(refused.status, 409);
    assert!(
        refused.body.contains("2 zip jobs still refer to it"),
        "{}",
        refused.body
    );
    assert_eq!(Bucket::list(&mut conn, project).await.expect("q").len(), 1);
    // Revoking the token makes the API refuse it.
    let token_id = AccessToken::list(&mut conn, project)
        .await
        .expect("q")
        .remove(0)
        .id;
    let revoked = ann
        .post(&format!("{p}/tokens/{token_id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(revoked.status, 303);
    let (status, _) = app
        .send(app.post_zip(&token, &common::zip_body(store.name(), 1)))
        .await;
    assert_eq!(status, 401);
    app.stop().await;
}

/// A finished job that asked its archive to expire says when on its page, and once a worker
/// deleted it, that it was deleted.
#[tokio::test]
async fn a_zips_page_says_when_its_archive_expires_and_that_it_was_deleted() {
    use zipkit_domain::models::{ResultSettings, ZipOutcome};

    let (db, _broker, app) = common::start().await;
    let (_, project) = user_with_project(&db, "ann@example.com", "Ann's project").await;
    let bucket = app.bucket(&db, project, Service::S3, "ann-archives").await;
    let mut conn = db.connect().await;
    let expiring = ResultSettings {
        expires_in_days: Some(7),
        ..ResultSettings::default()
    };
    let new = one_file_job(&bucket, "weekly.zip", expiring);
    let zip = Zip::create(&mut conn, new).await.expect("zip");
    let lease = chrono::Duration::seconds(30);
    Zip::claim(&mut conn, zip.id, "w1", lease).await.unwrap();
    let done = ZipOutcome::Succeeded {
        size: 10,
        etag: "\"e\"".into(),
        entries: 1,
    };
    let finished = Zip::finish(&mut conn, zip.id, "w1", &done)
        .await
        .unwrap()
        .expect("finished");
    let (mut ann, _) = signed_in(&app, "ann@example.com").await;
    let path = format!("/dashboard/projects/{project}/zips/{}", zip.id);
    let page = ann.get(&path).await;
    let expires = finished.finished_at.expect("finished") + chrono::Duration::days(7);
    let day = expires.format("%Y-%m-%d").to_string();
    assert!(
        page.body.contains("<dt>Expires</dt>") && page.body.contains(&day),
        "{}",
        page.body
    );
    // Seven days later a worker's sweeper takes it.
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE zips SET finished_at = now() - interval '8 days'"),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(
        Zip::take_expired_archives(&mut conn, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let page = ann.get(&path).await;
    assert!(
        page.body.contains("<dt>Archive</dt><dd>deleted "),
        "{}",
        page.body
    );
}

/// A job of many entries shows its first 500, says how many it has, and loads no more of them.
#[tokio::test]
async fn a_zips_page_shows_the_first_entries_of_a_large_job_and_counts_the_rest() {
    use zipkit_domain::models::{NewZipEntry, ResultSettings};
    use zipkit_domain::values::{EntryName, SourceUrl};

    let (db, _broker, app) = common::start().await;
    let (_, project) = user_with_project(&db, "ann@example.com", "Ann's project").await;
    let bucket = app.bucket(&db, project, Service::S3, "ann-archives").await;
    let mut conn = db.connect().await;
    let mut new = one_file_job(&bucket, "large.zip", ResultSettings::default());
    new.entries = (0..1_200)
        .map(|i| NewZipEntry {
            url: SourceUrl::parse(&format!("https://example.com/{i}.pdf")).expect("url"),
            filename: EntryName::parse(&format!("scan-{i:04}.pdf")).expect("name"),
            given_filename: None,
            modified_at: None,
            declared_size: None,
        })
        .collect();
    let zip = Zip::create(&mut conn, new).await.expect("zip");
    let (mut ann, _) = signed_in(&app, "ann@example.com").await;
    let page = ann
        .get(&format!("/dashboard/projects/{project}/zips/{}", zip.id))
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("The first 500 of 1200 entries."),
        "{}",
        page.body
    );
    assert_eq!(page.body.matches("data-label=\"#\"").count(), 500);
    assert!(page.body.contains("scan-0499.pdf") && !page.body.contains("scan-0500.pdf"));
}
