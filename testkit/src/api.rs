//! The fake GitHub REST endpoints, the control API tests use to steer them, and the shared state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::git::{CommitInfo, Git, GitError};

const DOCS: &str = "https://docs.github.com/rest";

pub struct Config {
    pub owner: String,
    pub name: String,
    pub branch: String,
    pub token: Option<String>,
    /// http://127.0.0.1:<bound port>, for html_url fields.
    pub base_url: String,
}

#[derive(Clone)]
struct Pr {
    number: u64,
    title: String,
    labels: Vec<String>,
    draft: bool,
    /// The branch it merges into.
    base_ref: String,
    /// Base commit the merge went onto, for the files of a merged PR.
    merged_onto: Option<String>,
    /// `owner/name` of the head's repository when it is a fork (its branch still lives in
    /// the one repository the fake serves).
    head_repo: Option<String>,
    author: String,
    /// GitHub's `user.type`: `Bot` or `User`.
    author_type: String,
    head_ref: String,
    /// Head commit when last known: reported once merged, or if the branch is deleted.
    head_sha: String,
    mergeable: Option<bool>,
    /// Explicit override from the control API; otherwise derived from `mergeable`.
    mergeable_state: Option<String>,
    open: bool,
    merged: bool,
    merge_commit_sha: Option<String>,
    merged_at: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Inject {
    RateLimit,
    ServerError,
}

#[derive(Default)]
struct Inner {
    prs: BTreeMap<u64, Pr>,
    requests: BTreeMap<String, u64>,
    conditional_hits: u64,
    down: bool,
    inject: Option<(Inject, u64)>,
    merge_delay_ms: u64,
    merge_forbidden: bool,
}

pub struct App {
    cfg: Config,
    git: Git,
    inner: Mutex<Inner>,
    /// Serialises merges end to end, including a delayed ref move, so two merges never
    /// race on the base branch. Async because it is held across git calls.
    merge_lock: Arc<tokio::sync::Mutex<()>>,
}

impl App {
    pub fn new(cfg: Config, git: Git) -> Arc<Self> {
        Arc::new(App {
            cfg,
            git,
            inner: Mutex::default(),
            merge_lock: Arc::default(),
        })
    }

    /// Short synchronous critical sections only; never held across an await.
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not wedge the fake for the rest of a test run.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pr_json(
        &self,
        pr: &Pr,
        heads: &HashMap<String, String>,
        full: bool,
        forbidden: bool,
    ) -> Value {
        let c = &self.cfg;
        // An open PR follows its branch like GitHub does; a merged one keeps what was merged.
        let head_sha = if pr.merged {
            pr.head_sha.clone()
        } else {
            heads
                .get(&pr.head_ref)
                .cloned()
                .unwrap_or_else(|| pr.head_sha.clone())
        };
        let own = format!("{}/{}", c.owner, c.name);
        let head_repo = pr.head_repo.clone().unwrap_or_else(|| own.clone());
        let head_owner = head_repo.split('/').next().unwrap_or_default().to_owned();
        let mut v = json!({
            "number": pr.number,
            "title": pr.title,
            "html_url": format!("{}/{}/{}/pull/{}", c.base_url, c.owner, c.name, pr.number),
            "state": if pr.open { "open" } else { "closed" },
            "draft": pr.draft,
            "user": { "login": pr.author, "type": pr.author_type },
            "labels": pr.labels.iter().map(|l| json!({ "name": l })).collect::<Vec<_>>(),
            "head": { "ref": pr.head_ref, "sha": head_sha, "label": format!("{head_owner}:{}", pr.head_ref),
                      "repo": { "full_name": head_repo, "fork": pr.head_repo.is_some() } },
            "base": { "ref": pr.base_ref, "sha": heads.get(&pr.base_ref), "label": format!("{}:{}", c.owner, pr.base_ref),
                      "repo": { "full_name": own, "fork": false } },
            "merge_commit_sha": pr.merge_commit_sha,
            "merged_at": pr.merged_at,
        });
        // Like GitHub, only the single-PR view computes mergeability.
        if full {
            let (mergeable, state) = if !pr.open {
                // GitHub stops computing mergeability once a PR is closed or merged.
                (None, "unknown".to_owned())
            } else {
                let derived = match pr.mergeable {
                    Some(true) if forbidden => "blocked",
                    Some(true) => "clean",
                    Some(false) => "dirty",
                    None => "unknown",
                };
                (
                    pr.mergeable,
                    pr.mergeable_state
                        .clone()
                        .unwrap_or_else(|| derived.to_owned()),
                )
            };
            v["merged"] = json!(pr.merged);
            v["mergeable"] = json!(mergeable);
            v["mergeable_state"] = json!(state);
        }
        v
    }

    /// What a PR changes: its head against the merge base with its base branch (the
    /// commit it was merged onto, once merged), like GitHub's three-dot comparison.
    async fn pr_files(
        &self,
        pr: &Pr,
        heads: &HashMap<String, String>,
    ) -> Result<Vec<Value>, ApiError> {
        let head = if pr.merged {
            pr.head_sha.clone()
        } else {
            heads
                .get(&pr.head_ref)
                .cloned()
                .unwrap_or_else(|| pr.head_sha.clone())
        };
        let base = match (&pr.merged_onto, heads.get(&pr.base_ref)) {
            (Some(onto), _) => onto.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) => return Ok(Vec::new()),
        };
        let c = &self.cfg;
        let changes = self.git.changed_files(&base, &head).await?;
        Ok(changes
            .into_iter()
            .map(|f| {
                let blob = |kind: &str| format!("{}/{}/{}/{kind}/{head}/{}", c.base_url, c.owner, c.name, f.path);
                let mut v = json!({
                    "filename": f.path,
                    "status": f.status,
                    "additions": f.additions,
                    "deletions": f.deletions,
                    "changes": f.additions + f.deletions,
                    "blob_url": blob("blob"),
                    "raw_url": blob("raw"),
                    "contents_url": format!("{}/repos/{}/{}/contents/{}?ref={head}", c.base_url, c.owner, c.name, f.path),
                });
                if let Some(old) = f.previous_path {
                    v["previous_filename"] = json!(old);
                }
                v
            })
            .collect())
    }
}

// ---------- errors and small helpers ----------

pub struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(status, msg.into())
    }
    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found")
    }
    fn validation(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, msg)
    }
}

impl From<GitError> for ApiError {
    fn from(e: GitError) -> Self {
        eprintln!("fake-github: git error: {e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("git: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({ "message": self.1, "documentation_url": DOCS })),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Control bodies are parsed by hand so a missing Content-Type or an empty body is fine.
fn parse_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Problems parsing JSON: {e}"),
        )
    })
}

/// Distinguishes "absent" (None) from "null" (Some(None)) for fields like `mergeable`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn etag_of(sha: &str) -> String {
    format!("\"{sha}\"")
}

/// If-None-Match may hold a list and weak validators; GET uses the weak comparison.
fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn with_etag(etag: &str, resp: impl IntoResponse) -> Response {
    let mut r = resp.into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn not_modified_response(app: &App, etag: &str) -> Response {
    app.inner().conditional_hits += 1;
    with_etag(etag, StatusCode::NOT_MODIFIED)
}

// ---------- router and middleware ----------

pub fn router(app: Arc<App>) -> Router {
    let repo = format!("/repos/{}/{}", app.cfg.owner, app.cfg.name);
    Router::new()
        .route(&format!("{repo}/commits/{{*ref}}"), get(get_commit))
        .route(&format!("{repo}/contents/{{*path}}"), get(get_contents))
        .route(&format!("{repo}/pulls"), get(list_pulls))
        .route(&format!("{repo}/pulls/{{number}}"), get(get_pull))
        .route(
            &format!("{repo}/pulls/{{number}}/files"),
            get(list_pull_files),
        )
        .route(&format!("{repo}/pulls/{{number}}/merge"), put(merge_pull))
        .route("/_control/state", get(control_state))
        .route("/_control/pr", post(control_create_pr))
        .route("/_control/pr/{number}", patch(control_patch_pr))
        .route("/_control/fail", post(control_fail))
        .route("/_control/settings", post(control_settings))
        .fallback(fallback)
        // GitHub answers 404, not 405, for a wrong method on a known path.
        .method_not_allowed_fallback(fallback)
        .layer(middleware::from_fn_with_state(app.clone(), repos_gate))
        .layer(middleware::from_fn(common))
        .with_state(app)
}

async fn fallback() -> ApiError {
    ApiError::not_found()
}

/// Outermost: rate-limit headers on every response (unless the gate set its own) and a log line.
async fn common(req: Request, next: Next) -> Response {
    let line = format!("{} {}", req.method(), req.uri());
    let mut resp = next.run(req).await;
    eprintln!("fake-github: {line} -> {}", resp.status().as_u16());
    let h = resp.headers_mut();
    let defaults = [
        ("x-ratelimit-limit", "5000".to_owned()),
        ("x-ratelimit-remaining", "4999".to_owned()),
        ("x-ratelimit-used", "1".to_owned()),
        ("x-ratelimit-reset", (now_secs() + 3600).to_string()),
    ];
    for (name, value) in defaults {
        let name = HeaderName::from_static(name);
        if !h.contains_key(&name) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    resp
}

/// Everything under /repos: count it, then apply outage, auth and injected failures in
/// that order (an injected failure is only consumed by a request that would have succeeded).
async fn repos_gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/repos/") {
        return next.run(req).await;
    }
    // "{*ref}" → "{ref}" so the keys read like GitHub's documented paths.
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().replace("{*", "{"))
        .unwrap_or_else(|| path.to_owned());
    let key = format!("{} {}", req.method(), template);
    let authorized = match &app.cfg.token {
        None => true,
        Some(token) => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
            })
            .is_some_and(|t| t.trim() == token),
    };
    let injected = {
        let mut inner = app.inner();
        *inner.requests.entry(key).or_default() += 1;
        if inner.down {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                .into_response();
        }
        if !authorized {
            return ApiError::new(StatusCode::UNAUTHORIZED, "Bad credentials").into_response();
        }
        match inner.inject {
            Some((mode, left)) => {
                inner.inject = (left > 1).then_some((mode, left - 1));
                Some(mode)
            }
            None => None,
        }
    };
    match injected {
        Some(Inject::RateLimit) => {
            let mut r = ApiError::new(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for 127.0.0.1.",
            )
            .into_response();
            let h = r.headers_mut();
            h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            h.insert("x-ratelimit-used", HeaderValue::from_static("5000"));
            if let Ok(v) = HeaderValue::from_str(&(now_secs() + 60).to_string()) {
                h.insert("x-ratelimit-reset", v);
            }
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Some(Inject::ServerError) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "Server Error").into_response()
        }
        None => next.run(req).await,
    }
}

// ---------- GitHub endpoints ----------

fn commit_json(app: &App, c: &CommitInfo) -> Value {
    let cfg = &app.cfg;
    json!({
        "sha": c.sha,
        "html_url": format!("{}/{}/{}/commit/{}", cfg.base_url, cfg.owner, cfg.name, c.sha),
        "commit": {
            "message": c.message,
            "tree": { "sha": c.tree },
            "author": { "name": c.author_name, "email": c.author_email, "date": rfc3339(c.author_time) },
            "committer": { "name": c.committer_name, "email": c.committer_email, "date": rfc3339(c.committer_time) },
        },
        "parents": c.parents.iter().map(|p| json!({ "sha": p })).collect::<Vec<_>>(),
    })
}

async fn get_commit(
    State(app): State<Arc<App>>,
    Path(r): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let Some(sha) = app.git.resolve_commit(&r).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No commit found for SHA: {r}"),
        ));
    };
    let etag = etag_of(&sha);
    if not_modified(&headers, &etag) {
        return Ok(not_modified_response(&app, &etag));
    }
    let info = app.git.commit_info(&sha).await?;
    Ok(with_etag(&etag, Json(commit_json(&app, &info))))
}

#[derive(Deserialize)]
struct ContentsQuery {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

/// GitHub wraps base64 content at 60 columns, each line ending in '\n'.
fn wrap_base64(data: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(b64.len() + b64.len() / 60 + 1);
    for chunk in b64.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

async fn get_contents(
    State(app): State<Arc<App>>,
    Path(path): Path<String>,
    Query(q): Query<ContentsQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let r = q.git_ref.unwrap_or_else(|| app.cfg.branch.clone());
    let path = path.trim_matches('/').to_owned();
    let Some((sha, size)) = app.git.blob_at(&r, &path).await? else {
        return Err(ApiError::not_found());
    };
    let etag = etag_of(&sha);
    if not_modified(&headers, &etag) {
        return Ok(not_modified_response(&app, &etag));
    }
    let data = app.git.blob(&sha).await?;
    let cfg = &app.cfg;
    let name = path.rsplit('/').next().unwrap_or(&path);
    Ok(with_etag(
        &etag,
        Json(json!({
            "type": "file",
            "name": name,
            "path": path,
            "sha": sha,
            "size": size,
            "encoding": "base64",
            "content": wrap_base64(&data),
            "url": format!("{}/repos/{}/{}/contents/{}?ref={}", cfg.base_url, cfg.owner, cfg.name, path, r),
            "html_url": format!("{}/{}/{}/blob/{}/{}", cfg.base_url, cfg.owner, cfg.name, r, path),
        })),
    ))
}

#[derive(Deserialize)]
struct PullsQuery {
    state: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn list_pulls(State(app): State<Arc<App>>, Query(q): Query<PullsQuery>) -> ApiResult {
    let heads = app.git.branch_heads().await?;
    let state = q.state.unwrap_or_else(|| "open".into());
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let inner = app.inner();
    let list: Vec<Value> = inner
        .prs
        .values()
        .rev() // newest (highest number) first
        .filter(|p| match state.as_str() {
            "all" => true,
            "closed" => !p.open,
            _ => p.open,
        })
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|p| app.pr_json(p, &heads, false, inner.merge_forbidden))
        .collect();
    Ok(Json(list).into_response())
}

async fn get_pull(State(app): State<Arc<App>>, Path(number): Path<u64>) -> ApiResult {
    let heads = app.git.branch_heads().await?;
    let (pr, forbidden) = {
        let inner = app.inner();
        let pr = inner.prs.get(&number).ok_or_else(ApiError::not_found)?;
        (pr.clone(), inner.merge_forbidden)
    };
    let files = app.pr_files(&pr, &heads).await?;
    let mut v = app.pr_json(&pr, &heads, true, forbidden);
    v["changed_files"] = json!(files.len());
    Ok(Json(v).into_response())
}

/// `GET /pulls/{number}/files`: paginated like GitHub (30 a page by default, 100 at most).
async fn list_pull_files(
    State(app): State<Arc<App>>,
    Path(number): Path<u64>,
    Query(q): Query<PullsQuery>,
) -> ApiResult {
    let heads = app.git.branch_heads().await?;
    let pr = app
        .inner()
        .prs
        .get(&number)
        .cloned()
        .ok_or_else(ApiError::not_found)?;
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let files: Vec<Value> = app
        .pr_files(&pr, &heads)
        .await?
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    Ok(Json(files).into_response())
}

#[derive(Deserialize, Default)]
struct MergeBody {
    merge_method: Option<String>,
    sha: Option<String>,
    commit_title: Option<String>,
    commit_message: Option<String>,
}

fn not_mergeable() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Pull Request is not mergeable",
    )
}

async fn merge_pull(
    State(app): State<Arc<App>>,
    Path(number): Path<u64>,
    body: Bytes,
) -> ApiResult {
    let body: MergeBody = parse_body(&body)?;
    let method = body.merge_method.as_deref().unwrap_or("merge");
    if !matches!(method, "merge" | "squash" | "rebase") {
        return Err(ApiError::validation("Validation Failed"));
    }
    let guard = app.merge_lock.clone().lock_owned().await;
    let (pr, delay) = {
        let inner = app.inner();
        if inner.merge_forbidden {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            ));
        }
        let pr = inner.prs.get(&number).ok_or_else(ApiError::not_found)?;
        if !pr.open || pr.merged || pr.mergeable == Some(false) {
            return Err(not_mergeable());
        }
        (pr.clone(), inner.merge_delay_ms)
    };
    let base = pr.base_ref.clone();
    let base_sha = app.git.branch_head(&base).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("base branch {base} is missing"),
        )
    })?;
    // A deleted head branch cannot be merged.
    let head_sha = app
        .git
        .branch_head(&pr.head_ref)
        .await?
        .ok_or_else(not_mergeable)?;
    if body.sha.as_deref().is_some_and(|s| s != head_sha) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Head branch was modified. Review and try the merge again.",
        ));
    }
    // Real conflicts refuse the merge even when the PR was configured mergeable (or null).
    let tree = app
        .git
        .merge_tree(&base_sha, &head_sha)
        .await?
        .ok_or_else(not_mergeable)?;
    let custom = |default: String| match (&body.commit_title, &body.commit_message) {
        (None, None) => default,
        (t, m) => {
            let title = t
                .clone()
                .unwrap_or_else(|| default.lines().next().unwrap_or_default().to_owned());
            match m {
                Some(m) => format!("{title}\n\n{m}"),
                None => title,
            }
        }
    };
    let (parents, message) = match method {
        "merge" => (
            vec![base_sha.as_str(), head_sha.as_str()],
            custom(format!(
                "Merge pull request #{number} from {}\n\n{}",
                pr.head_ref, pr.title
            )),
        ),
        "squash" => (
            vec![base_sha.as_str()],
            custom(format!("{} (#{number})", pr.title)),
        ),
        // Rebase is approximated as one commit on top of base carrying the head's message
        // (exact for the usual single-commit update PR).
        _ => (
            vec![base_sha.as_str()],
            custom(app.git.commit_info(&head_sha).await?.message),
        ),
    };
    let merge_sha = app.git.commit_tree(&tree, &parents, &message).await?;

    if delay == 0 {
        app.git.update_branch(&base, &merge_sha, &base_sha).await?;
        drop(guard);
    } else {
        // Answer now, move the branch later: clients must wait for the head to become the
        // merge commit. The merge lock travels with the task so the next merge sees it.
        let app2 = app.clone();
        let (new, old) = (merge_sha.clone(), base_sha.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if let Err(e) = app2.git.update_branch(&base, &new, &old).await {
                eprintln!("fake-github: delayed merge of #{number} failed: {e}");
            }
            drop(guard);
        });
    }

    {
        let mut inner = app.inner();
        if let Some(p) = inner.prs.get_mut(&number) {
            p.open = false;
            p.merged = true;
            p.head_sha = head_sha;
            p.merged_onto = Some(base_sha);
            p.merge_commit_sha = Some(merge_sha.clone());
            p.merged_at = Some(rfc3339(now_secs()));
        }
    }
    Ok(Json(
        json!({ "sha": merge_sha, "merged": true, "message": "Pull Request successfully merged" }),
    )
    .into_response())
}

// ---------- control API ----------

async fn control_state(State(app): State<Arc<App>>) -> ApiResult {
    let heads = app.git.branch_heads().await?;
    let inner = app.inner();
    let prs: Vec<Value> = inner
        .prs
        .values()
        .map(|p| app.pr_json(p, &heads, true, inner.merge_forbidden))
        .collect();
    Ok(Json(json!({
        "head": heads.get(&app.cfg.branch),
        "prs": prs,
        "requests": inner.requests,
        "conditional_hits": inner.conditional_hits,
    }))
    .into_response())
}

#[derive(Deserialize, Default)]
struct NewPr {
    number: Option<u64>,
    title: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    head: String,
    /// The branch it merges into (default: the served base branch).
    base: Option<String>,
    /// `owner/name` of a fork the head comes from (default: the served repository).
    head_repo: Option<String>,
    /// Login of its author (default `github-actions[bot]`).
    author: Option<String>,
    /// `Bot` or `User` (default: `Bot` for a login ending in `[bot]`, else `User`).
    author_type: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    mergeable: Option<Option<bool>>,
    mergeable_state: Option<String>,
    #[serde(default)]
    draft: bool,
}

async fn control_create_pr(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let req: NewPr = parse_body(&body)?;
    let heads = app.git.branch_heads().await?;
    let Some(head_sha) = heads.get(&req.head).cloned() else {
        return Err(ApiError::validation(format!(
            "Validation Failed: head branch {:?} does not exist",
            req.head
        )));
    };
    let base_ref = req.base.unwrap_or_else(|| app.cfg.branch.clone());
    if !heads.contains_key(&base_ref) {
        return Err(ApiError::validation(format!(
            "Validation Failed: base branch {base_ref:?} does not exist"
        )));
    }
    let author = req
        .author
        .unwrap_or_else(|| "github-actions[bot]".to_owned());
    let author_type = req.author_type.unwrap_or_else(|| {
        if author.ends_with("[bot]") {
            "Bot"
        } else {
            "User"
        }
        .to_owned()
    });
    let mut inner = app.inner();
    let number = req
        .number
        .unwrap_or_else(|| inner.prs.keys().next_back().map_or(1, |n| n + 1));
    let pr = Pr {
        number,
        title: req.title.unwrap_or_else(|| format!("Update {}", req.head)),
        labels: req.labels,
        draft: req.draft,
        base_ref,
        merged_onto: None,
        head_repo: req.head_repo,
        author,
        author_type,
        head_ref: req.head,
        head_sha,
        mergeable: req.mergeable.unwrap_or(Some(true)),
        mergeable_state: req.mergeable_state,
        open: true,
        merged: false,
        merge_commit_sha: None,
        merged_at: None,
    };
    let v = app.pr_json(&pr, &heads, true, inner.merge_forbidden);
    inner.prs.insert(number, pr);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Deserialize, Default)]
struct PatchPr {
    #[serde(default, deserialize_with = "nullable")]
    mergeable: Option<Option<bool>>,
    #[serde(default, deserialize_with = "nullable")]
    mergeable_state: Option<Option<String>>,
    title: Option<String>,
    labels: Option<Vec<String>>,
    state: Option<String>,
    draft: Option<bool>,
    /// Retarget the PR onto another existing branch (GitHub's "Edit" of the base).
    base: Option<String>,
}

async fn control_patch_pr(
    State(app): State<Arc<App>>,
    Path(number): Path<u64>,
    body: Bytes,
) -> ApiResult {
    let req: PatchPr = parse_body(&body)?;
    let heads = app.git.branch_heads().await?;
    let mut inner = app.inner();
    let forbidden = inner.merge_forbidden;
    let pr = inner.prs.get_mut(&number).ok_or_else(ApiError::not_found)?;
    if let Some(base) = req.base {
        if !heads.contains_key(&base) {
            return Err(ApiError::validation(format!(
                "Validation Failed: base branch {base:?} does not exist"
            )));
        }
        if pr.merged {
            return Err(ApiError::validation(
                "a merged pull request cannot be retargeted",
            ));
        }
        pr.base_ref = base;
    }
    match req.state.as_deref() {
        None => {}
        Some("closed") => pr.open = false,
        Some("open") if pr.merged => {
            return Err(ApiError::validation(
                "a merged pull request cannot be reopened",
            ))
        }
        Some("open") => pr.open = true,
        Some(s) => {
            return Err(ApiError::validation(format!(
                "state must be open or closed, not {s:?}"
            )))
        }
    }
    if let Some(m) = req.mergeable {
        pr.mergeable = m;
    }
    if let Some(s) = req.mergeable_state {
        pr.mergeable_state = s;
    }
    if let Some(t) = req.title {
        pr.title = t;
    }
    if let Some(l) = req.labels {
        pr.labels = l;
    }
    if let Some(d) = req.draft {
        pr.draft = d;
    }
    let v = app.pr_json(pr, &heads, true, forbidden);
    Ok(Json(v).into_response())
}

#[derive(Deserialize, Default)]
struct Fail {
    #[serde(default)]
    mode: String,
    count: Option<u64>,
}

async fn control_fail(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let req: Fail = parse_body(&body)?;
    let count = req.count.unwrap_or(1);
    let mut inner = app.inner();
    match req.mode.as_str() {
        "rate_limit" => inner.inject = (count > 0).then_some((Inject::RateLimit, count)),
        "server_error" => inner.inject = (count > 0).then_some((Inject::ServerError, count)),
        "down" => inner.down = true,
        "none" => {
            inner.down = false;
            inner.inject = None;
        }
        m => {
            return Err(ApiError::validation(format!(
                "mode must be rate_limit, server_error, down or none, not {m:?}"
            )))
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
struct Settings {
    merge_delay_ms: Option<u64>,
    merge_forbidden: Option<bool>,
}

async fn control_settings(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let req: Settings = parse_body(&body)?;
    let mut inner = app.inner();
    if let Some(d) = req.merge_delay_ms {
        inner.merge_delay_ms = d;
    }
    if let Some(f) = req.merge_forbidden {
        inner.merge_forbidden = f;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
