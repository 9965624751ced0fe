//! The GitHub REST client: the config repo's branch head and flake.lock, its open pull
//! requests and the files one changes, and merging one at a given head. Nothing else in
//! the server speaks to GitHub.
//!
//! The base URL is configurable (`NIXDECK_GITHUB_API_URL`): GitHub Enterprise, and the
//! tests' stand-in server. Reads use conditional requests (ETag), which GitHub does not
//! count against the rate limit when they answer 304.

use base64::Engine;
use protocol::Timestamp;
use reqwest::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

const API_VERSION: &str = "2022-11-28";
/// GitHub answers in well under a second; a stuck connection must not stall the poller.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Error bodies from GitHub are shown to users: keep them short.
const MESSAGE_MAX: usize = 300;

#[derive(Debug, Clone, PartialEq)]
pub enum GhError {
    /// GitHub said to slow down; retry after this time.
    RateLimited { until: Timestamp },
    /// GitHub answered, with an error status and its message.
    Status { status: u16, message: String },
    /// No answer: DNS, connection, TLS or timeout.
    Unreachable(String),
    /// An answer we could not read.
    Invalid(String),
}

impl std::fmt::Display for GhError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GhError::RateLimited { until } => write!(f, "GitHub rate limit reached until {until}"),
            GhError::Status { status, message } => write!(f, "GitHub answered {status}: {message}"),
            GhError::Unreachable(e) => write!(f, "cannot reach GitHub: {e}"),
            GhError::Invalid(e) => write!(f, "unexpected answer from GitHub: {e}"),
        }
    }
}

pub type GhResult<T> = Result<T, GhError>;

/// A response body remembered with its ETag, for conditional requests.
#[derive(Debug, Clone)]
pub struct Cached<T> {
    pub etag: String,
    pub value: T,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Commit {
    pub sha: String,
    #[serde(default)]
    pub html_url: Option<String>,
    pub commit: CommitDetail,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CommitDetail {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub committer: Option<Signature>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub date: Option<String>,
}

impl Commit {
    pub fn committed_at(&self) -> Option<Timestamp> {
        let date = self.commit.committer.as_ref()?.date.as_deref()?;
        Timestamp::parse(date).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Label {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct User {
    pub login: String,
    /// `User`, `Bot` (GitHub Apps) or `Organization`.
    #[serde(default, rename = "type")]
    pub kind: String,
}

impl User {
    /// A bot account: an app's user (`type: Bot`, logins like `github-actions[bot]`).
    pub fn is_bot(&self) -> bool {
        self.kind == "Bot" || self.login.ends_with("[bot]")
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Repo {
    pub full_name: String,
}

/// A pull request's head or base: branch, commit and repository (null when a fork is gone).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct PullEnd {
    #[serde(default, rename = "ref")]
    pub branch: String,
    #[serde(default)]
    pub sha: Option<String>,
    #[serde(default)]
    pub repo: Option<Repo>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub html_url: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub head: PullEnd,
    #[serde(default)]
    pub base: PullEnd,
    /// Only in the single-PR answer.
    #[serde(default)]
    pub changed_files: Option<u64>,
    /// Only in the single-PR answer; null while GitHub is still computing it.
    #[serde(default)]
    pub mergeable: Option<bool>,
    #[serde(default)]
    pub mergeable_state: Option<String>,
    #[serde(default)]
    pub merged: bool,
}

impl Pull {
    pub fn head_sha(&self) -> Option<&str> {
        self.head.sha.as_deref()
    }

    /// Mergeable now: open, not a draft, no conflicts and nothing blocking it.
    pub fn can_merge(&self) -> bool {
        self.state == "open"
            && !self.draft
            && !self.merged
            && self.mergeable == Some(true)
            && !matches!(
                self.mergeable_state.as_deref(),
                Some("dirty" | "blocked" | "draft")
            )
    }
}

/// One file a pull request changes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PullFile {
    pub filename: String,
    #[serde(default)]
    pub status: String,
    /// The old name of a renamed file.
    #[serde(default)]
    pub previous_filename: Option<String>,
}

/// Files of a PR asked for in one page; a PR with this many is not a lock update.
pub const FILES_PAGE: usize = 100;

#[derive(Deserialize)]
struct Contents {
    #[serde(default)]
    encoding: String,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
struct Merged {
    sha: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
}

/// What a conditional GET gave.
enum Fetched<T> {
    NotModified,
    Fresh(T, Option<String>),
}

#[derive(Clone)]
pub struct GitHub {
    http: reqwest::Client,
    base: String,
    repo: String,
    token: Option<String>,
}

impl GitHub {
    /// `repo` is `owner/name`; validated here so a typo fails at start, not at the first poll.
    pub fn new(base: &str, repo: &str, token: Option<String>) -> anyhow::Result<GitHub> {
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        match repo.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) => {}
            _ => anyhow::bail!("NIXDECK_GITHUB_REPO must look like owner/name, not {repo:?}"),
        }
        Ok(GitHub {
            http: client()?,
            base: base.trim_end_matches('/').to_owned(),
            repo: repo.to_owned(),
            token,
        })
    }

    pub fn repo(&self) -> &str {
        &self.repo
    }

    fn url(&self, path: &str) -> String {
        format!("{}/repos/{}/{}", self.base, self.repo, path)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        etag: Option<&str>,
    ) -> GhResult<Fetched<T>> {
        let mut req = self.request(reqwest::Method::GET, path);
        if let Some(etag) = etag {
            req = req.header(header::IF_NONE_MATCH, etag);
        }
        let resp = req.send().await.map_err(unreachable)?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        let resp = check(resp).await?;
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let value = resp
            .json::<T>()
            .await
            .map_err(|e| GhError::Invalid(e.to_string()))?;
        Ok(Fetched::Fresh(value, etag))
    }

    /// A GET that reuses `cache` when GitHub says nothing changed.
    async fn get_cached<T: DeserializeOwned + Clone>(
        &self,
        path: &str,
        cache: &mut Option<Cached<T>>,
    ) -> GhResult<T> {
        let etag = cache.as_ref().map(|c| c.etag.as_str());
        match self.get::<T>(path, etag).await? {
            Fetched::NotModified => match cache {
                Some(c) => Ok(c.value.clone()),
                None => Err(GhError::Invalid("304 without a cached answer".into())),
            },
            Fetched::Fresh(value, etag) => {
                *cache = etag.map(|etag| Cached {
                    etag,
                    value: value.clone(),
                });
                Ok(value)
            }
        }
    }

    /// The head commit of `branch`.
    pub async fn head(&self, branch: &str, cache: &mut Option<Cached<Commit>>) -> GhResult<Commit> {
        self.get_cached(&format!("commits/{}", encode(branch)), cache)
            .await
    }

    /// SHA-256 of a file at a commit; None when the file does not exist there.
    pub async fn file_sha256(&self, path: &str, commit: &str) -> GhResult<Option<String>> {
        let path = format!("contents/{path}?ref={}", encode(commit));
        let contents = match self.get::<Contents>(&path, None).await {
            Ok(Fetched::Fresh(c, _)) => c,
            Ok(Fetched::NotModified) => return Err(GhError::Invalid("unexpected 304".into())),
            Err(GhError::Status { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if contents.encoding != "base64" {
            return Err(GhError::Invalid(format!(
                "file content encoded as {:?}",
                contents.encoding
            )));
        }
        // GitHub wraps the base64 text every 60 characters.
        let packed: String = contents
            .content
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(packed)
            .map_err(|e| GhError::Invalid(format!("file content: {e}")))?;
        Ok(Some(hex::encode(Sha256::digest(bytes))))
    }

    /// Open pull requests, newest first (GitHub's order).
    pub async fn open_pulls(&self, cache: &mut Option<Cached<Vec<Pull>>>) -> GhResult<Vec<Pull>> {
        self.get_cached("pulls?state=open&per_page=100", cache)
            .await
    }

    /// One pull request, with its mergeable state.
    pub async fn pull(&self, number: u64) -> GhResult<Pull> {
        match self.get::<Pull>(&format!("pulls/{number}"), None).await? {
            Fetched::Fresh(pull, _) => Ok(pull),
            Fetched::NotModified => Err(GhError::Invalid("unexpected 304".into())),
        }
    }

    /// The files a pull request changes (the first [`FILES_PAGE`] of them).
    pub async fn pull_files(&self, number: u64) -> GhResult<Vec<PullFile>> {
        let path = format!("pulls/{number}/files?per_page={FILES_PAGE}");
        match self.get::<Vec<PullFile>>(&path, None).await? {
            Fetched::Fresh(files, _) => Ok(files),
            Fetched::NotModified => Err(GhError::Invalid("unexpected 304".into())),
        }
    }

    /// Merge a pull request if its head is still `sha` (GitHub answers 409 when it moved);
    /// the merge commit's sha.
    pub async fn merge(&self, number: u64, method: &str, sha: &str) -> GhResult<String> {
        let resp = self
            .request(reqwest::Method::PUT, &format!("pulls/{number}/merge"))
            .json(&serde_json::json!({ "merge_method": method, "sha": sha }))
            .send()
            .await
            .map_err(unreachable)?;
        let merged: Merged = check(resp)
            .await?
            .json()
            .await
            .map_err(|e| GhError::Invalid(e.to_string()))?;
        Ok(merged.sha)
    }
}

/// The HTTP client for GitHub and version.json: short timeouts, a user agent (GitHub
/// refuses requests without one).
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .user_agent(concat!("nixdeck/", env!("CARGO_PKG_VERSION")))
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()?)
}

fn unreachable(e: reqwest::Error) -> GhError {
    // reqwest's Display hides the cause ("error sending request"); the source says why.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    GhError::Unreachable(text)
}

/// Percent-encode a path segment (branch names may hold `/`).
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Turn an error status into a `GhError`, recognising rate limiting (403 or 429 with
/// `x-ratelimit-remaining: 0` or `retry-after`).
async fn check(resp: reqwest::Response) -> GhResult<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let headers = resp.headers().clone();
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let now = Timestamp::now().secs();
    let limited = matches!(status.as_u16(), 403 | 429)
        && (number("x-ratelimit-remaining") == Some(0) || number("retry-after").is_some());
    if limited {
        let until = number("retry-after")
            .map(|s| now + s)
            .or_else(|| number("x-ratelimit-reset"))
            .unwrap_or(now + 60)
            .clamp(now + 1, now + 3600);
        return Err(GhError::RateLimited {
            until: Timestamp(until),
        });
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.message)
        .unwrap_or(text);
    let message = if message.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        crate::service::hosts::foreign_line(&message, MESSAGE_MAX)
    };
    Err(GhError::Status {
        status: status.as_u16(),
        message,
    })
}

/// Marked as a flake.lock update PR: by label, or (with `by_title`) by a title that says so.
/// `labels` are compared case-insensitively.
pub fn is_lock_update(pull: &Pull, labels: &[String], by_title: bool) -> bool {
    let by_label = pull.labels.iter().any(|l| {
        labels
            .iter()
            .any(|want| want.trim().eq_ignore_ascii_case(&l.name))
    });
    let title = pull.title.to_ascii_lowercase();
    by_label
        || (by_title
            && ["flake.lock", "update flake", "bump flake"]
                .iter()
                .any(|t| title.contains(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(title: &str, labels: &[&str]) -> Pull {
        Pull {
            number: 1,
            title: title.into(),
            state: "open".into(),
            labels: labels.iter().map(|l| Label { name: (*l).into() }).collect(),
            mergeable: Some(true),
            mergeable_state: Some("clean".into()),
            ..Pull::default()
        }
    }

    #[test]
    fn lock_update_prs_are_found_by_label_or_title() {
        let labels = vec!["dependencies".to_owned(), "automated".to_owned()];
        let by_label = pull("chore: bump inputs", &["Dependencies"]);
        assert!(is_lock_update(&by_label, &labels, false));
        for title in ["Update flake.lock", "ci: Update Flake inputs"] {
            assert!(is_lock_update(&pull(title, &[]), &labels, true), "{title}");
            assert!(
                !is_lock_update(&pull(title, &[]), &labels, false),
                "title only when asked: {title}"
            );
        }
        let other = pull("Add host", &["enhancement"]);
        assert!(!is_lock_update(&other, &labels, true));
    }

    #[test]
    fn pulls_read_author_head_and_base() {
        let p: Pull = serde_json::from_value(serde_json::json!({
            "number": 3, "title": "t", "html_url": "u",
            "user": {"login": "renovate[bot]", "type": "Bot"},
            "head": {"ref": "lock", "sha": "abc", "repo": {"full_name": "evil/cfg"}},
            "base": {"ref": "main", "sha": null, "repo": {"full_name": "acme/cfg"}},
        }))
        .unwrap();
        assert_eq!(p.head_sha(), Some("abc"));
        assert_eq!(p.base.branch, "main");
        assert_eq!(p.head.repo.unwrap().full_name, "evil/cfg");
        assert!(p.user.unwrap().is_bot());
        let human = User {
            login: "alice".into(),
            kind: "User".into(),
        };
        assert!(!human.is_bot());
        // A deleted fork: GitHub sends `repo: null`.
        let p: Pull = serde_json::from_value(serde_json::json!({
            "number": 4, "title": "t", "html_url": "u", "head": {"ref": "x", "sha": "1", "repo": null},
        }))
        .unwrap();
        assert_eq!(p.head.repo, None);
    }

    #[test]
    fn mergeable_needs_github_to_say_so() {
        let mut p = pull("x", &[]);
        assert!(p.can_merge());
        p.mergeable = None;
        assert!(!p.can_merge(), "still computing");
        p.mergeable = Some(true);
        p.mergeable_state = Some("dirty".into());
        assert!(!p.can_merge());
        p.mergeable_state = Some("unstable".into());
        assert!(
            p.can_merge(),
            "failing optional checks do not block a merge"
        );
        p.draft = true;
        assert!(!p.can_merge());
    }

    #[test]
    fn branch_names_are_encoded() {
        assert_eq!(encode("main"), "main");
        assert_eq!(encode("release/25.05"), "release%2F25.05");
    }
}
