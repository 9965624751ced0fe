//! A logged-in dashboard client: a cookie jar plus the session's CSRF token.

use serde_json::{json, Value};

/// Where a dashboard answers: turns an API path into a URL.
pub trait Site {
    fn url(&self, path: &str) -> String;
}

/// A base URL such as `http://127.0.0.1:3000`.
impl Site for str {
    fn url(&self, path: &str) -> String {
        format!("{self}{path}")
    }
}

impl Site for String {
    fn url(&self, path: &str) -> String {
        self.as_str().url(path)
    }
}

/// A logged-in user's client.
pub struct Session {
    /// Keeps the session cookie (a cookie store).
    pub http: reqwest::Client,
    pub csrf: String,
    /// `name=value` of the session cookie, for a `Cookie` header of another client.
    pub cookie: String,
}

impl Session {
    /// A state-changing request with the CSRF token.
    pub fn post(&self, site: &(impl Site + ?Sized), path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(site.url(path))
            .header("X-CSRF-Token", &self.csrf)
    }

    pub fn delete(&self, site: &(impl Site + ?Sized), path: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(site.url(path))
            .header("X-CSRF-Token", &self.csrf)
    }

    /// GET a JSON body (asserting 200).
    pub async fn get_json(&self, site: &(impl Site + ?Sized), path: &str) -> Value {
        let r = self.http.get(site.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// GET a text body (asserting 200).
    pub async fn get_text(&self, site: &(impl Site + ?Sized), path: &str) -> String {
        let r = self.http.get(site.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.unwrap()
    }
}

/// Log in with a fresh client (asserting 200 and a strict, HTTP-only session cookie).
pub async fn login(site: &(impl Site + ?Sized), username: &str, password: &str) -> Session {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    login_with(http, site, username, password).await
}

/// Log in with `http`, which may hold a session already (the server then issues a new one).
pub async fn login_with(
    http: reqwest::Client,
    site: &(impl Site + ?Sized),
    username: &str,
    password: &str,
) -> Session {
    let resp = http
        .post(site.url("/api/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "login as {username}");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    Session {
        http,
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        cookie,
    }
}
