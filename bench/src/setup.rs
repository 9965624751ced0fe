//! Before the run: a browser session (login) and a token for every simulated host.

use futures::{stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, COOKIE, ORIGIN, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A logged-in session: what the browser socket and the REST calls need.
#[derive(Clone, Debug)]
pub struct Session {
    /// `name=value`, ready for a `Cookie` header.
    pub cookie: String,
    pub csrf: String,
}

pub async fn login(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> Result<Session, Error> {
    // The server hashes a bounded number of passwords at once and answers 503 to the
    // rest ("try again in 1 s"): several fleet-sim processes sign in to every replica
    // at the same time (`--shard`), so a 503 is waited out, for up to a minute.
    let mut tries = 0;
    let resp = loop {
        let resp = http
            .post(format!("{base}/api/login"))
            .header(ORIGIN, base)
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await?;
        tries += 1;
        if resp.status() != StatusCode::SERVICE_UNAVAILABLE || tries >= 60 {
            break resp;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    if resp.status() != StatusCode::OK {
        return Err(format!("login: {} {}", resp.status(), resp.text().await?).into());
    }
    let cookie = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("nixdeck_session="))
        .and_then(|v| v.split(';').next())
        .ok_or("login: no session cookie in the reply")?
        .to_owned();
    let body: serde_json::Value = resp.json().await?;
    let csrf = body["csrf_token"]
        .as_str()
        .ok_or("login: no csrf_token in the reply")?
        .to_owned();
    Ok(Session { cookie, csrf })
}

/// Host tokens by hostname. They belong to one database, so the file lives next to it.
pub type Tokens = BTreeMap<String, String>;

pub fn load_tokens(path: &Path) -> Tokens {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

pub fn save_tokens(path: &Path, tokens: &Tokens) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(tokens)?)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

/// Create the hosts that have no token yet through `POST /api/hosts`. A host that exists
/// already (409) but whose token was lost gets a new one (`POST /api/hosts/{id}/token`).
pub async fn create_hosts(
    http: &reqwest::Client,
    base: &str,
    session: &Session,
    hostnames: Vec<String>,
) -> Result<Tokens, Error> {
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(&session.cookie)?);
    headers.insert("x-csrf-token", HeaderValue::from_str(&session.csrf)?);
    headers.insert(ORIGIN, HeaderValue::from_str(base)?);
    let results: Vec<Result<(String, String), Error>> = stream::iter(hostnames)
        .map(|hostname| {
            let headers = headers.clone();
            async move {
                let resp = http
                    .post(format!("{base}/api/hosts"))
                    .headers(headers.clone())
                    .json(&json!({ "hostname": hostname, "host_type": "nixos" }))
                    .send()
                    .await?;
                let resp = match resp.status() {
                    StatusCode::CREATED => resp,
                    StatusCode::CONFLICT => {
                        http.post(format!("{base}/api/hosts/{hostname}/token"))
                            .headers(headers)
                            .send()
                            .await?
                    }
                    s => return Err(format!("create {hostname}: {s}").into()),
                };
                let body: serde_json::Value = resp.error_for_status()?.json().await?;
                let token = body["agent_token"]
                    .as_str()
                    .ok_or("no agent_token in the reply")?
                    .to_owned();
                Ok((hostname, token))
            }
        })
        // SQLite takes one writer at a time; a few in flight keep it busy without piling up.
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect()
}
