//! The dashboard at the HTTP level: sign-in, sessions, CSRF, the throttle, and that a user sees
//! only their own projects. (The browser tests come with the rest of the dashboard.)

mod common;

use common::{TestApp, settings};
use zipkit_domain::enums::ProjectRole;
use zipkit_domain::models::{Project, User};
use zipkit_test_support::{TestBroker, TestDatabase};

const PASSWORD: &str = "a long enough password";

struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
}

struct Page {
    status: u16,
    location: String,
    body: String,
    set_cookies: Vec<String>,
}

impl Browser {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
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

async fn user_in(db: &TestDatabase, email: &str, project: &str) -> User {
    let mut conn = db.connect().await;
    let hash = zipkit_api::admin::passwords::hash(PASSWORD).expect("hash");
    let user = User::create(&mut conn, email, &hash).await.expect("user");
    let project = Project::create(&mut conn, project).await.expect("project");
    Project::add_member(&mut conn, project.id, user.id, ProjectRole::Owner)
        .await
        .expect("member");
    user
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
async fn repeated_failed_sign_ins_are_throttled_even_with_the_right_password() {
    let db = TestDatabase::migrated(zipkit_domain::db::MIGRATIONS).await;
    let broker = TestBroker::new().await;
    let app = TestApp::start(settings(db.url(), &broker.url())).await;
    user_in(&db, "ann@example.com", "Ann's project").await;
    let mut browser = Browser::new(&app.base);
    for _ in 0..5 {
        assert_eq!(
            sign_in(&mut browser, "ann@example.com", "guess")
                .await
                .status,
            401
        );
    }
    let throttled = sign_in(&mut browser, "ann@example.com", PASSWORD).await;
    assert_eq!(throttled.status, 429);
    assert!(throttled.body.contains("Too many failed attempts"));
    assert!(
        !throttled
            .set_cookies
            .iter()
            .any(|c| c.starts_with("zipkit_session="))
    );
    app.stop().await;
}
