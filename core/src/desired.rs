//! The desired state: what the config repo's branch says every host should run, and the
//! flake.lock update PR waiting to be merged. Read from GitHub's API (or a published
//! `version.json`) by two background pollers, and on demand; every reading goes to the hub,
//! which re-derives the git and lock compartments and tells browsers.
//!
//! Several servers on one database poll GitHub once, not once each: only the leader
//! (`service::lease`) runs the pollers. Its readings reach the others the way every hub
//! event does, over the replicas' bus (`replica`): `Hub::set_desired` and
//! `Hub::set_pending_pr` publish `desired_state` and `pending_pr`, which each peer applies
//! to its own hub, so their pages, `GET /api/desired` and `/api/pending-pr`, and Merge &
//! Deploy's vetting (`Hub::pending_pr`) answer as the leader's would. An operator's
//! explicit "check for PR now" and a deploy's own reads still go to GitHub from whichever
//! server was asked, and reach the others the same way.
//!
//! The bus is the only path. (A copy in `settings`, read by the others every 2 s, was a
//! second one and is gone.) It covers what that copy did: a replica that starts asks its
//! peers for a resync before it serves anyone, and one that missed events (a gap in a
//! peer's batches, a listener reconnect) asks again; the leader's answer carries the
//! desired state and the update PR, none included (`Hub::resync_out`). The leader also
//! publishes each reading again at every poll (its `checked_at` moves). And unlike the
//! copy, which only the poller wrote, the bus also carries a "check now" made on a server
//! that does not lead.

use crate::config::GithubConfig;
use crate::github::{self, Cached, Commit, GhError, GitHub, Pull, PullFile};
use crate::hub::Hub;
use crate::service::lease::Leader;
use protocol::{DesiredState, PendingPr, Timestamp};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

/// After a failed read, retry sooner than the poll interval: 5 s, doubling.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// While GitHub computes a PR's mergeable state, look again this soon.
const MERGEABLE_RECHECK: Duration = Duration::from_secs(5);

enum Source {
    GitHub(GitHub),
    VersionJson { url: String, http: reqwest::Client },
}

/// Caches for conditional requests; the mutex around it also serialises reads, so a
/// burst of refresh clicks makes one request, not many.
#[derive(Default)]
struct Polls {
    head: Option<Cached<Commit>>,
    /// The flake.lock hash of a commit, which never changes for that commit.
    lock: Option<(String, Option<String>)>,
    version: Option<Cached<DesiredState>>,
    pulls: Option<Cached<Vec<Pull>>>,
    last_read: Option<Instant>,
    failures: u32,
}

/// Which open PR is the flake.lock update PR: the same rules pick it for the page and
/// vet it again before Merge & Deploy merges it.
#[derive(Debug, Clone)]
pub struct PrRules {
    /// `owner/name`: a PR whose head is in another repository comes from a fork.
    pub repo: String,
    /// The deploy branch, which the PR must target.
    pub branch: String,
    pub labels: Vec<String>,
    pub match_title: bool,
    pub allowed_files: Vec<String>,
    /// Logins allowed to author it; empty: any bot account.
    pub authors: Vec<String>,
}

/// Why a PR is not the update PR (so it is neither shown nor merged).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// A machine code, the 409's `code`: `pr_closed`, `pr_draft`, `not_update_pr`,
    /// `pr_base`, `pr_fork`, `pr_author` or `pr_files`.
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: String) -> Result<(), Refusal> {
    Err(Refusal { code, message })
}

impl PrRules {
    pub fn new(cfg: &GithubConfig) -> PrRules {
        let list = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        PrRules {
            repo: cfg.github_repo.clone().unwrap_or_default(),
            branch: cfg.github_branch.clone(),
            labels: list(&cfg.pr_labels),
            match_title: cfg.pr_match_title,
            allowed_files: list(&cfg.pr_allowed_files)
                .into_iter()
                .map(|f| f.trim_start_matches('/').to_owned())
                .collect(),
            authors: list(&cfg.pr_authors),
        }
    }

    /// What a PR's entry in the list of open PRs shows: open and not a draft, marked as an
    /// update PR, against the deploy branch, from this repository, by an allowed author.
    pub fn check(&self, pull: &Pull) -> Result<(), Refusal> {
        let n = pull.number;
        if pull.state != "open" || pull.merged {
            let state = if pull.merged { "merged" } else { "closed" };
            return refuse("pr_closed", format!("PR #{n} is {state}."));
        }
        if pull.draft {
            return refuse("pr_draft", format!("PR #{n} is a draft."));
        }
        if !github::is_lock_update(pull, &self.labels, self.match_title) {
            return refuse(
                "not_update_pr",
                format!(
                    "PR #{n} has none of the labels that mark a flake.lock update PR ({}){}.",
                    self.labels.join(", "),
                    if self.match_title {
                        ", and its title does not name flake.lock"
                    } else {
                        ""
                    }
                ),
            );
        }
        if pull.base.branch != self.branch {
            return refuse(
                "pr_base",
                format!(
                    "PR #{n} targets the branch {:?}, not the deploy branch {:?}.",
                    pull.base.branch, self.branch
                ),
            );
        }
        // Against the base's own name (the configured one may be an old, redirected name).
        let ours = pull
            .base
            .repo
            .as_ref()
            .map_or(self.repo.as_str(), |r| r.full_name.as_str());
        match &pull.head.repo {
            Some(head) if head.full_name.eq_ignore_ascii_case(ours) => {}
            head => {
                let from = head.as_ref().map_or("a deleted fork", |r| &r.full_name);
                return refuse(
                    "pr_fork",
                    format!("PR #{n} comes from {from}, not from a branch of {ours}."),
                );
            }
        }
        let user = pull.user.clone().unwrap_or_default();
        let allowed = if self.authors.is_empty() {
            user.is_bot()
        } else {
            self.authors
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&user.login))
        };
        if !allowed {
            let who = if self.authors.is_empty() {
                "a bot account".to_owned()
            } else {
                self.authors.join(", ")
            };
            return refuse(
                "pr_author",
                format!(
                    "PR #{n} is by {}, and only PRs by {who} are deployed (NIXDECK_PR_AUTHORS).",
                    if user.login.is_empty() {
                        "an unknown user"
                    } else {
                        &user.login
                    }
                ),
            );
        }
        Ok(())
    }

    /// The files it changes: allowed ones only (a rename counts both names).
    pub fn check_files(&self, pull: &Pull, files: &[PullFile]) -> Result<(), Refusal> {
        let n = pull.number;
        let listed = files.len() as u64;
        if files.len() >= github::FILES_PAGE || pull.changed_files.is_some_and(|c| c > listed) {
            return refuse(
                "pr_files",
                format!("PR #{n} changes too many files to be a flake.lock update."),
            );
        }
        let mut other: Vec<&str> = files
            .iter()
            .flat_map(|f| std::iter::once(&f.filename).chain(f.previous_filename.as_ref()))
            .map(String::as_str)
            .filter(|f| !self.allowed_files.iter().any(|a| a == f))
            .collect();
        other.sort_unstable();
        other.dedup();
        if other.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = other.iter().take(5).copied().collect();
        refuse(
            "pr_files",
            format!(
                "PR #{n} changes {}{}, and an update PR may only change {} (NIXDECK_PR_ALLOWED_FILES).",
                shown.join(", "),
                if other.len() > shown.len() { ", …" } else { "" },
                self.allowed_files.join(", ")
            ),
        )
    }
}

/// The head and base a PR's files were checked at, and the verdict.
type FilesVerdict = (String, String, Result<(), Refusal>);

pub struct Desired {
    source: Option<Source>,
    branch: String,
    rules: PrRules,
    /// PR number → the head and base its files were checked at, and the verdict; a
    /// commit's files do not change, so each head costs one request.
    pr_files: std::sync::Mutex<HashMap<u64, FilesVerdict>>,
    poll: Duration,
    pr_poll: Duration,
    polls: Mutex<Polls>,
    wake_prs: Notify,
    hub: Hub,
    /// The leader lease, from `spawn` on: only the leader polls.
    leader: OnceLock<Leader>,
}

/// What the hub starts with: the configured source before its first read.
pub fn initial(cfg: &GithubConfig) -> Option<DesiredState> {
    let source = if let Some(repo) = &cfg.github_repo {
        format!("github:{repo}")
    } else {
        cfg.version_url.clone()?
    };
    Some(DesiredState {
        source,
        branch: cfg.github_branch.clone(),
        ..DesiredState::default()
    })
}

impl Desired {
    pub fn new(cfg: &GithubConfig, hub: Hub) -> anyhow::Result<Desired> {
        let source = match (&cfg.github_repo, &cfg.version_url) {
            (Some(repo), _) => Some(Source::GitHub(GitHub::new(
                &cfg.github_api_url,
                repo,
                cfg.token()?,
            )?)),
            (None, Some(url)) => Some(Source::VersionJson {
                url: url.clone(),
                http: github::client()?,
            }),
            (None, None) => None,
        };
        Ok(Desired {
            source,
            branch: cfg.github_branch.clone(),
            rules: PrRules::new(cfg),
            pr_files: Default::default(),
            poll: Duration::from_secs(cfg.desired_poll_s),
            pr_poll: Duration::from_secs(cfg.pr_poll_s),
            polls: Mutex::new(Polls::default()),
            wake_prs: Notify::new(),
            hub,
            leader: OnceLock::new(),
        })
    }

    /// The GitHub client, when the source is GitHub (PRs and merging need it).
    pub fn github(&self) -> Option<&GitHub> {
        match &self.source {
            Some(Source::GitHub(gh)) => Some(gh),
            _ => None,
        }
    }

    /// Start the pollers (nothing to do without a source). They poll while this server
    /// leads; otherwise they wait for it to lead (the leader's readings come over the bus).
    pub fn spawn(self: &Arc<Self>, leader: Leader) {
        let _ = self.leader.set(leader.clone());
        if self.source.is_none() {
            return;
        }
        let me = self.clone();
        let lead = leader.clone();
        tokio::spawn(async move {
            loop {
                lead.wait().await;
                let next = me.read().await.1;
                tokio::time::sleep(next).await;
            }
        });
        if self.github().is_some() {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    leader.wait().await;
                    let next = match me.check_prs().await {
                        Ok((_, next)) => next,
                        Err(GhError::RateLimited { until }) => {
                            let wait = until.secs() - Timestamp::now().secs();
                            Duration::from_secs(wait.max(1) as u64)
                        }
                        Err(e) => {
                            tracing::warn!("looking for a flake.lock PR: {e}");
                            me.pr_poll.min(Duration::from_secs(60))
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(next) => {}
                        _ = me.wake_prs.notified() => {}
                    }
                }
            });
        }
    }

    /// Whether another server polls, and this one has its readings (from the bus).
    fn following(&self) -> bool {
        self.leader.get().is_some_and(|leader| !leader.is_leader())
    }

    /// Read now unless a reading is younger than `max_age` (the refresh button). A server
    /// that follows the leader answers with the leader's latest reading.
    pub async fn read_if_older(&self, max_age: Duration) -> Option<DesiredState> {
        self.source.as_ref()?;
        if self.following() {
            return self.hub.desired();
        }
        {
            let polls = self.polls.lock().await;
            if polls.last_read.is_some_and(|t| t.elapsed() < max_age) {
                return self.hub.desired();
            }
        }
        Some(self.read().await.0)
    }

    /// Read the desired state once and hand it to the hub; also returns when to read next.
    pub async fn read(&self) -> (DesiredState, Duration) {
        let Some(source) = &self.source else {
            return (DesiredState::default(), self.poll);
        };
        let mut polls = self.polls.lock().await;
        let mut state = self.hub.desired().unwrap_or_default();
        let result = match source {
            Source::GitHub(gh) => read_github(gh, &self.branch, &mut polls).await,
            Source::VersionJson { url, http } => read_version_json(http, url, &mut polls).await,
        };
        let now = Timestamp::now();
        polls.last_read = Some(Instant::now());
        let next = match result {
            Ok(read) => {
                polls.failures = 0;
                state.commit = Some(read.commit);
                state.commit_url = read.commit_url;
                state.message = read.message;
                state.committed_at = read.committed_at;
                state.lock_hash = read.lock_hash;
                if let Some(branch) = read.branch {
                    state.branch = branch;
                }
                state.checked_at = Some(now);
                state.error = None;
                state.rate_limited_until = None;
                self.poll
            }
            // Rate limited: the last reading stays in force; only without one is it an error.
            Err(GhError::RateLimited { until }) => {
                tracing::warn!("GitHub rate limit: next read at {until}");
                state.rate_limited_until = Some(until);
                if state.commit.is_none() {
                    state.error = Some(format!("GitHub rate limit reached until {until}"));
                }
                Duration::from_secs((until.secs() - now.secs()).max(1) as u64)
            }
            Err(e) => {
                tracing::warn!("reading the desired state: {e}");
                state.error = Some(e.to_string());
                state.checked_at = Some(now);
                polls.failures += 1;
                let backoff = RETRY_FIRST * 2u32.saturating_pow(polls.failures.min(8) - 1);
                backoff.min(self.poll)
            }
        };
        self.hub.set_desired(state.clone());
        (state, next)
    }

    /// Read until the branch head is `sha` (after a merge), or give up after `wait`.
    pub async fn wait_for_head(&self, sha: &str, wait: Duration) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        loop {
            let (state, _) = self.read().await;
            if state
                .commit
                .as_deref()
                .is_some_and(|c| crate::hub::compartments::same_commit(c, sha))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not move to the merge commit {} within {} s (it is at {}).",
                    state.branch,
                    &sha[..sha.len().min(7)],
                    wait.as_secs(),
                    state
                        .commit
                        .as_deref()
                        .map_or("?", |c| &c[..c.len().min(7)])
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Ask the PR poller to look now (after a merge, or "check now").
    pub fn wake_prs(&self) {
        self.wake_prs.notify_one();
    }

    /// Look for the flake.lock update PR and tell the hub; also returns when to look next.
    /// The newest open PR that passes every rule (`PrRules`) is it.
    pub async fn check_prs(&self) -> Result<(Option<PendingPr>, Duration), GhError> {
        let Some(gh) = self.github() else {
            return Ok((None, self.pr_poll));
        };
        let open = {
            let mut polls = self.polls.lock().await;
            gh.open_pulls(&mut polls.pulls).await?
        };
        self.pr_files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n, _| open.iter().any(|p| p.number == *n));
        let mut found = None;
        for entry in open.iter().filter(|p| self.rules.check(p).is_ok()) {
            if self.files_allowed(gh, entry).await?.is_err() {
                continue;
            }
            // The list does not say whether a PR is mergeable; the PR itself does. It may
            // also have moved since the list was read: check it again as it is now.
            let pull = gh.pull(entry.number).await?;
            if self.rules.check(&pull).is_ok() && self.files_allowed(gh, &pull).await?.is_ok() {
                found = Some(pull);
                break;
            }
        }
        let Some(pull) = found else {
            self.hub.set_pending_pr(None);
            return Ok((None, self.pr_poll));
        };
        let pr = PendingPr {
            number: pull.number,
            title: pull.title.clone(),
            url: pull.html_url.clone(),
            mergeable: pull.can_merge(),
            head_sha: pull.head_sha().map(str::to_owned),
        };
        self.hub.set_pending_pr(Some(pr.clone()));
        let next = if pull.mergeable.is_none() {
            MERGEABLE_RECHECK
        } else {
            self.pr_poll
        };
        Ok((Some(pr), next))
    }

    /// Whether `pull`'s files pass, asked of GitHub once per head and base.
    async fn files_allowed(
        &self,
        gh: &GitHub,
        pull: &Pull,
    ) -> Result<Result<(), Refusal>, GhError> {
        let head = pull.head_sha().unwrap_or_default().to_owned();
        let known = |cache: &HashMap<u64, FilesVerdict>| {
            cache
                .get(&pull.number)
                .filter(|(h, b, _)| *h == head && *b == pull.base.branch)
                .map(|(_, _, verdict)| verdict.clone())
        };
        if let Some(verdict) = known(&self.pr_files.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(verdict);
        }
        let files = gh.pull_files(pull.number).await?;
        let verdict = self.rules.check_files(pull, &files);
        if let Err(r) = &verdict {
            tracing::info!(
                pr = pull.number,
                "not the flake.lock update PR: {}",
                r.message
            );
        }
        self.pr_files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                pull.number,
                (head, pull.base.branch.clone(), verdict.clone()),
            );
        Ok(verdict)
    }

    /// Merge & Deploy's second look: PR `number` as GitHub has it now, its files asked
    /// afresh, against the same rules that picked it.
    pub async fn recheck_pr(&self, number: u64) -> Result<Result<Pull, Refusal>, GhError> {
        let Some(gh) = self.github() else {
            return Err(GhError::Invalid("the source is not GitHub".into()));
        };
        let pull = gh.pull(number).await?;
        if let Err(r) = self.rules.check(&pull) {
            return Ok(Err(r));
        }
        let files = gh.pull_files(number).await?;
        Ok(self.rules.check_files(&pull, &files).map(|()| pull))
    }
}

/// One reading, whatever the source.
struct Read {
    commit: String,
    commit_url: Option<String>,
    message: Option<String>,
    committed_at: Option<Timestamp>,
    lock_hash: Option<String>,
    branch: Option<String>,
}

async fn read_github(gh: &GitHub, branch: &str, polls: &mut Polls) -> Result<Read, GhError> {
    let head = gh.head(branch, &mut polls.head).await?;
    // A commit's flake.lock never changes: fetch it once per head.
    let lock_hash = match &polls.lock {
        Some((sha, hash)) if *sha == head.sha => hash.clone(),
        _ => {
            let hash = gh.file_sha256("flake.lock", &head.sha).await?;
            polls.lock = Some((head.sha.clone(), hash.clone()));
            hash
        }
    };
    Ok(Read {
        committed_at: head.committed_at(),
        message: Some(head.commit.message.lines().next().unwrap_or("").to_owned()),
        commit_url: head.html_url.clone(),
        commit: head.sha,
        lock_hash,
        branch: None,
    })
}

/// `version.json` as published by the config repo's CI:
/// `{gitCommit, lockHash?, branch?, timestamp?, message?}`.
async fn read_version_json(
    http: &reqwest::Client,
    url: &str,
    polls: &mut Polls,
) -> Result<Read, GhError> {
    let mut req = http.get(url);
    if let Some(c) = &polls.version {
        req = req.header(reqwest::header::IF_NONE_MATCH, &c.etag);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| GhError::Unreachable(e.to_string()))?;
    let parsed = if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
        match &polls.version {
            Some(c) => c.value.clone(),
            None => return Err(GhError::Invalid("304 without a cached answer".into())),
        }
    } else if !resp.status().is_success() {
        return Err(GhError::Status {
            status: resp.status().as_u16(),
            message: format!("{url} answered {}", resp.status()),
        });
    } else {
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp
            .text()
            .await
            .map_err(|e| GhError::Unreachable(e.to_string()))?;
        let parsed = parse_version_json(&text).map_err(GhError::Invalid)?;
        polls.version = etag.map(|etag| Cached {
            etag,
            value: parsed.clone(),
        });
        parsed
    };
    Ok(Read {
        commit: parsed.commit.unwrap_or_default(),
        commit_url: None,
        message: parsed.message,
        committed_at: parsed.committed_at,
        lock_hash: parsed.lock_hash,
        branch: Some(parsed.branch).filter(|b| !b.is_empty()),
    })
}

/// Parse version.json strictly enough that a broken file is an error, not a wrong answer.
fn parse_version_json(text: &str) -> Result<DesiredState, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("version.json: {e}"))?;
    let commit = v["gitCommit"]
        .as_str()
        .filter(|c| c.len() >= 7 && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("version.json: gitCommit is missing or not a commit hash")?;
    let lock_hash = match &v["lockHash"] {
        serde_json::Value::Null => None,
        serde_json::Value::String(h)
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some(h.to_ascii_lowercase())
        }
        _ => return Err("version.json: lockHash is not a SHA-256 hex string".into()),
    };
    let committed_at = match &v["timestamp"] {
        serde_json::Value::String(s) => Timestamp::parse(s).ok(),
        serde_json::Value::Number(n) => n.as_i64().map(Timestamp),
        _ => None,
    };
    let text = |key: &str| {
        v[key]
            .as_str()
            .map(|s| s.chars().take(200).collect::<String>())
    };
    Ok(DesiredState {
        commit: Some(commit.to_ascii_lowercase()),
        lock_hash,
        committed_at,
        branch: text("branch").unwrap_or_default(),
        message: text("message"),
        ..DesiredState::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::{Label, PullEnd, Repo, User};

    fn rules() -> PrRules {
        PrRules {
            repo: "acme/cfg".into(),
            branch: "main".into(),
            labels: vec!["dependencies".into()],
            match_title: false,
            allowed_files: vec!["flake.lock".into()],
            authors: vec![],
        }
    }

    fn update_pr() -> Pull {
        let end = |branch: &str| PullEnd {
            branch: branch.into(),
            sha: Some("abc".into()),
            repo: Some(Repo {
                full_name: "acme/cfg".into(),
            }),
        };
        Pull {
            number: 7,
            title: "flake.lock: update".into(),
            state: "open".into(),
            labels: vec![Label {
                name: "dependencies".into(),
            }],
            user: Some(User {
                login: "github-actions[bot]".into(),
                kind: "Bot".into(),
            }),
            head: end("update"),
            base: end("main"),
            ..Pull::default()
        }
    }

    fn file(name: &str) -> PullFile {
        PullFile {
            filename: name.into(),
            status: "modified".into(),
            previous_filename: None,
        }
    }

    fn code(r: Result<(), Refusal>) -> &'static str {
        r.err().map_or("ok", |r| r.code)
    }

    #[test]
    fn the_update_pr_is_a_bots_labelled_pr_from_this_repo_against_the_branch() {
        let r = rules();
        assert_eq!(code(r.check(&update_pr())), "ok");
        let mut fork = update_pr();
        fork.head.repo = Some(Repo {
            full_name: "mallory/cfg".into(),
        });
        assert_eq!(code(r.check(&fork)), "pr_fork");
        fork.head.repo = None;
        assert_eq!(code(r.check(&fork)), "pr_fork", "a deleted fork");
        let mut other_base = update_pr();
        other_base.base.branch = "staging".into();
        assert_eq!(code(r.check(&other_base)), "pr_base");
        let mut human = update_pr();
        human.user = Some(User {
            login: "mallory".into(),
            kind: "User".into(),
        });
        assert_eq!(code(r.check(&human)), "pr_author");
        let listed = PrRules {
            authors: vec!["Mallory".into()],
            ..rules()
        };
        assert_eq!(code(listed.check(&human)), "ok");
        assert_eq!(
            code(listed.check(&update_pr())),
            "pr_author",
            "bots are not implied"
        );
        let mut title_only = update_pr();
        title_only.labels.clear();
        assert_eq!(code(r.check(&title_only)), "not_update_pr");
        let by_title = PrRules {
            match_title: true,
            ..rules()
        };
        assert_eq!(code(by_title.check(&title_only)), "ok");
        let mut draft = update_pr();
        draft.draft = true;
        assert_eq!(code(r.check(&draft)), "pr_draft");
        let mut merged = update_pr();
        merged.state = "closed".into();
        merged.merged = true;
        assert_eq!(code(r.check(&merged)), "pr_closed");
    }

    #[test]
    fn an_update_pr_changes_only_the_allowed_files() {
        let r = rules();
        let pr = update_pr();
        assert_eq!(code(r.check_files(&pr, &[file("flake.lock")])), "ok");
        let extra = r.check_files(&pr, &[file("flake.lock"), file("hosts.nix")]);
        assert!(
            extra.as_ref().unwrap_err().message.contains("hosts.nix"),
            "{extra:?}"
        );
        assert_eq!(code(extra), "pr_files");
        let renamed = PullFile {
            previous_filename: Some("evil.nix".into()),
            ..file("flake.lock")
        };
        assert_eq!(code(r.check_files(&pr, &[renamed])), "pr_files");
        assert_eq!(
            code(r.check_files(&pr, &[file("sub/flake.lock")])),
            "pr_files"
        );
        let mut counted = update_pr();
        counted.changed_files = Some(2);
        assert_eq!(
            code(r.check_files(&counted, &[file("flake.lock")])),
            "pr_files"
        );
        let more = PrRules {
            allowed_files: vec!["flake.lock".into(), "hosts/flake.lock".into()],
            ..rules()
        };
        let both = [file("flake.lock"), file("hosts/flake.lock")];
        assert_eq!(code(more.check_files(&pr, &both)), "ok");
    }

    #[test]
    fn version_json_is_read_strictly() {
        let hash = "a".repeat(64);
        let d = parse_version_json(&format!(
            r#"{{"gitCommit":"ABCDEF1234","lockHash":"{hash}","branch":"main","timestamp":"2026-11-25T10:00:00Z"}}"#
        ))
        .unwrap();
        assert_eq!(d.commit.as_deref(), Some("abcdef1234"));
        assert_eq!(d.lock_hash.as_deref(), Some(hash.as_str()));
        assert_eq!(
            d.committed_at,
            Timestamp::parse("2026-11-25T10:00:00Z").ok()
        );
        // Without lockHash the lock compartment goes by age.
        let d = parse_version_json(r#"{"gitCommit":"abcdef1"}"#).unwrap();
        assert_eq!(d.lock_hash, None);
        assert!(parse_version_json(r#"{"gitCommit":"main"}"#).is_err());
        assert!(parse_version_json(r#"{"gitCommit":"abcdef1","lockHash":"x"}"#).is_err());
        assert!(parse_version_json("<html>").is_err());
    }
}
