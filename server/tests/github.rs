//! Desired state, flake.lock PRs and Merge & Deploy end to end: the real server and agents,
//! a real bare git repository as the config repo, and `fake-github` (crate `testkit`)
//! serving GitHub's REST API over that same repository. Merging a PR there moves the
//! repository's branch, so the agents' real `git fetch` sees exactly what the API says.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::{Child, Stdio};
use std::time::Duration;
use testkit::client::Session;
use testkit::fake_github::FakeGithub;
use testkit::git::{git, git_env, Origin};
use tokio::time::{sleep, Instant};

const LOCK_V1: &str = "{\"nodes\":{\"nixpkgs\":{\"rev\":\"v1\"}},\"version\":7}\n";
const LOCK_V2: &str = "{\"nodes\":{\"nixpkgs\":{\"rev\":\"v2\"}},\"version\":7}\n";
const LOCK_V3: &str = "{\"nodes\":{\"nixpkgs\":{\"rev\":\"v3\"}},\"version\":7}\n";
const GH_TOKEN: &str = "gh-test-token";

struct Deck {
    // Dropped in this order: fake GitHub before the directory with its repository.
    gh: FakeGithub,
    scratch: tempfile::TempDir,
    origin: Origin,
    server: Server,
    admin: Session,
    agents: Vec<Child>,
    env: Vec<(String, String)>,
}

impl Drop for Deck {
    fn drop(&mut self) {
        for a in &mut self.agents {
            kill_child(a, "-TERM");
        }
    }
}

/// A switch that works, and one that fails.
const SWITCH_OK: &str = "echo switching; sleep 1; echo activated";
const SWITCH_FAILS: &str = "echo 'error: building the system failed' >&2; exit 3";

impl Deck {
    /// A config repo with flake.lock v1 on main and a branch `update-flake-lock` with v2;
    /// fake GitHub over it; the dashboard reading it; one agent per `(host, switch script)`.
    async fn start(hosts: &[(&str, &str)], extra_env: &[(&str, &str)]) -> Deck {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path();
        let origin = Origin::new(root, &[("flake.lock", LOCK_V1), ("hosts.nix", "{ }\n")]);
        let work = &origin.work;
        git(work, &["checkout", "-b", "update-flake-lock"]);
        std::fs::write(work.join("flake.lock"), LOCK_V2).unwrap();
        git(work, &["commit", "-am", "flake.lock: update nixpkgs"]);
        git(work, &["push", "origin", "update-flake-lock"]);
        git(work, &["checkout", "main"]);

        let gh = FakeGithub::start(
            &fake_github_bin(),
            &origin.bare,
            "acme",
            "nixcfg",
            &["--token", GH_TOKEN],
            Stdio::from(std::fs::File::create(root.join("fake-github.log")).unwrap()),
        );

        let mut env: Vec<(String, String)> = [
            ("NIXDECK_GITHUB_REPO", "acme/nixcfg"),
            ("NIXDECK_GITHUB_API_URL", gh.base.as_str()),
            ("NIXDECK_GITHUB_TOKEN", GH_TOKEN),
            ("NIXDECK_DESIRED_POLL_S", "1"),
            ("NIXDECK_PR_POLL_S", "1"),
            ("NIXDECK_MERGE_WAIT_S", "20"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server = Server::start_with(root, free_port(), &env_refs).await;
        let admin = login(&server).await;
        let mut deck = Deck {
            origin,
            gh,
            admin,
            agents: Vec::new(),
            env,
            server,
            scratch,
        };
        for (host, switch) in hosts {
            deck.add_agent(host, switch).await;
        }
        for (host, _) in hosts {
            deck.wait_host(host, "online", |h| h["online"] == true)
                .await;
        }
        deck
    }

    async fn add_agent(&mut self, host: &str, switch: &str) {
        let token = create_host(&self.server, &self.admin, host).await;
        let root = self.scratch.path();
        let checkout = root.join(format!("{host}-checkout"));
        self.origin.clone_to(&checkout);
        let config = root.join(format!("{host}.toml"));
        let script = switch.replace('\\', "\\\\").replace('"', "\\\"");
        std::fs::write(
            &config,
            format!("[commands]\nswitch = [\"sh\", \"-c\", \"{script}\"]\n"),
        )
        .unwrap();
        let state = root.join(format!("{host}-state"));
        self.agents.push(spawn_agent_with(
            &self.server,
            host,
            &token,
            &state,
            &[
                "--config",
                config.to_str().unwrap(),
                "--repo-dir",
                checkout.to_str().unwrap(),
                "--branch",
                "main",
            ],
        ));
    }

    fn head(&self) -> String {
        self.origin.head()
    }

    /// A new commit on main (through the work clone); its sha.
    fn push_commit(&self, file: &str, content: &str) -> String {
        self.origin.push(file, content, &format!("edit {file}"))
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = reqwest::Client::new()
            .request(method, self.gh.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn pr(&self, number: u64, title: &str, labels: &[&str], mergeable: bool) {
        self.control(
            reqwest::Method::POST,
            "/_control/pr",
            json!({"number": number, "title": title, "labels": labels,
                   "head": "update-flake-lock", "mergeable": mergeable}),
        )
        .await;
    }

    /// A PR as `/_control/pr` takes it (author, fork, base and files as its fields say).
    async fn open_pr(&self, body: Value) {
        self.control(reqwest::Method::POST, "/_control/pr", body)
            .await;
    }

    /// "Check for PR now": what the dashboard detects.
    async fn check_now(&self) -> Value {
        let r = self
            .admin
            .post(&self.server, "/api/pending-pr/check")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Wait until the dashboard shows PR `number` as the update PR.
    async fn detected(&self, number: u64) -> Value {
        self.wait_value("/api/pending-pr", "PR detected", |p| p["number"] == number)
            .await
    }

    /// How many merges GitHub was asked for.
    async fn merge_requests(&self) -> u64 {
        let state = self
            .control(reqwest::Method::GET, "/_control/state", Value::Null)
            .await;
        state["requests"]["PUT /repos/acme/nixcfg/pulls/{number}/merge"]
            .as_u64()
            .unwrap_or(0)
    }

    /// `(target, result)` of the audit log's deploy starts, newest first.
    async fn deploy_audit(&self) -> Vec<(String, String)> {
        let audit = self.get("/api/audit?action=deploy.start").await;
        audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["target"].as_str().unwrap().to_owned(),
                    e["result"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn get(&self, path: &str) -> Value {
        self.admin.get_json(&self.server, path).await
    }

    async fn host(&self, id: &str) -> Value {
        let hosts = self.get("/api/hosts").await;
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Wait until the host satisfies `pred`; the host's JSON.
    async fn wait_host(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(&format!("{id}: {what}"), || self.host(id), pred).await
    }

    async fn wait_value(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(&format!("{path}: {what}"), || self.get(path), pred).await
    }

    async fn deploy(&self, body: Value) -> (u16, Value) {
        let r = self
            .admin
            .post(&self.server, "/api/deploy")
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn deploy_ok(&self, body: Value) -> String {
        let (status, reply) = self.deploy(body).await;
        assert_eq!(status, 202, "{reply}");
        reply["job_id"].as_str().unwrap().to_owned()
    }

    async fn wait_job(&self, job: &str) -> Value {
        self.wait_value(&format!("/api/deploy/{job}"), "job end", |j| {
            j["active"] != true
        })
        .await
    }
}

/// Poll `fetch` until `pred` holds (30 s at most); the last value.
async fn wait_until<F, Fut>(what: &str, fetch: F, pred: impl Fn(&Value) -> bool) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = fetch().await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} not reached; it is {v:#}");
        sleep(Duration::from_millis(200)).await;
    }
}

fn status<'a>(h: &'a Value, compartment: &str) -> &'a str {
    h["update_status"][compartment]["status"]
        .as_str()
        .unwrap_or("")
}

fn message<'a>(h: &'a Value, compartment: &str) -> &'a str {
    h["update_status"][compartment]["message"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn compartments_follow_the_desired_state_and_an_unreachable_remote_is_an_error() {
    let deck = Deck::start(&[("alpha", SWITCH_OK)], &[]).await;
    let first = deck.head();
    // At the head, with the same flake.lock: git and lock are ok.
    let h = deck
        .wait_host("alpha", "git and lock ok", |h| {
            status(h, "git") == "ok" && status(h, "lock") == "ok"
        })
        .await;
    assert_eq!(h["generation"], first.as_str());
    let desired = deck.get("/api/desired").await;
    assert_eq!(desired["commit"], first.as_str());
    assert_eq!(desired["source"], "github:acme/nixcfg");

    // A switch reports system ok, which shows while git and lock are ok.
    let switch = deck
        .admin
        .post(&deck.server, "/api/hosts/alpha/commands")
        .json(&json!({"command": "switch"}))
        .send()
        .await
        .unwrap();
    assert_eq!(switch.status(), 202);
    deck.wait_host("alpha", "system ok", |h| status(h, "system") == "ok")
        .await;

    // main moves without touching flake.lock: git is outdated, lock stays ok, and system
    // can no longer be confirmed.
    let second = deck.push_commit("hosts.nix", "{ alpha = 1; }\n");
    let h = deck
        .wait_host("alpha", "git outdated", |h| status(h, "git") == "outdated")
        .await;
    assert_eq!(status(&h, "lock"), "ok");
    assert_eq!(status(&h, "system"), "unknown", "gated: {h:#}");
    assert!(message(&h, "git").contains(&second[..7]), "{h:#}");

    // A new flake.lock on main: lock is outdated too.
    deck.push_commit("flake.lock", LOCK_V2);
    deck.wait_host("alpha", "lock outdated", |h| {
        status(h, "lock") == "outdated"
    })
    .await;

    // GitHub unreachable: both are errors, with the reason, not unknown.
    deck.control(
        reqwest::Method::POST,
        "/_control/fail",
        json!({"mode": "down"}),
    )
    .await;
    let h = deck
        .wait_host("alpha", "git error", |h| {
            status(h, "git") == "error" && status(h, "lock") == "error"
        })
        .await;
    assert!(message(&h, "git").contains("503"), "{h:#}");
    assert_ne!(status(&h, "system"), "ok");
    deck.control(
        reqwest::Method::POST,
        "/_control/fail",
        json!({"mode": "none"}),
    )
    .await;
    deck.wait_host("alpha", "git back from error", |h| {
        status(h, "git") == "outdated"
    })
    .await;

    // Rate limited: the last reading stays in force (no error), and polling goes on after.
    deck.control(
        reqwest::Method::POST,
        "/_control/fail",
        // Both pollers share the limit; enough for the desired-state poller to meet one.
        json!({"mode": "rate_limit", "count": 4}),
    )
    .await;
    deck.wait_value("/api/desired", "rate limit seen", |d| {
        !d["rate_limited_until"].is_null()
    })
    .await;
    let h = deck.host("alpha").await;
    assert_eq!(status(&h, "git"), "outdated", "{h:#}");

    // Pull brings the host to the head: git and lock ok again, and the refresh endpoint
    // says so too. Conditional requests kept the polling cheap.
    let pull = deck
        .admin
        .post(&deck.server, "/api/hosts/alpha/commands")
        .json(&json!({"command": "pull"}))
        .send()
        .await
        .unwrap();
    assert_eq!(pull.status(), 202);
    deck.wait_host("alpha", "git and lock ok after pull", |h| {
        status(h, "git") == "ok" && status(h, "lock") == "ok"
    })
    .await;
    let refreshed: Value = deck
        .admin
        .post(&deck.server, "/api/hosts/alpha/refresh")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["update_status"]["git"]["status"], "ok");
    // Prometheus sees the same, without a session.
    let metrics = deck.server.metrics().await;
    assert!(
        metrics.contains("nixdeck_compartments{compartment=\"git\",status=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nixdeck_desired_state_error 0"),
        "{metrics}"
    );
    let gh_state = deck
        .control(reqwest::Method::GET, "/_control/state", Value::Null)
        .await;
    assert!(
        gh_state["conditional_hits"].as_u64().unwrap() > 0,
        "ETags are used: {gh_state:#}"
    );
}

#[tokio::test]
async fn version_json_without_a_lock_hash_judges_flake_lock_by_age() {
    // A version.json server (standing in for the repo's published GitHub Pages file).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let serve = body.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 2048];
            let _ = sock.read(&mut buf).await;
            let text = serve.lock().unwrap().clone();
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let checkout = root.join("checkout");
    std::fs::create_dir(&checkout).unwrap();
    git(&checkout, &["init", "-q"]);
    std::fs::write(checkout.join("flake.lock"), LOCK_V1).unwrap();
    git(&checkout, &["add", "."]);
    // flake.lock last changed ten days ago.
    git_env(
        &checkout,
        &[
            ("GIT_COMMITTER_DATE", "2026-11-15T10:00:00Z"),
            ("GIT_AUTHOR_DATE", "2026-11-15T10:00:00Z"),
        ],
        &["commit", "-qm", "old"],
    );
    let head = git(&checkout, &["rev-parse", "HEAD"]);
    *body.lock().unwrap() = format!(r#"{{"gitCommit":"{head}","branch":"main"}}"#);

    let url = format!("http://{addr}/version.json");
    let server = Server::start_with(
        root,
        free_port(),
        &[
            ("NIXDECK_VERSION_URL", &url),
            ("NIXDECK_DESIRED_POLL_S", "1"),
        ],
    )
    .await;
    let admin = login(&server).await;
    let token = create_host(&server, &admin, "beta").await;
    let mut agent = spawn_agent_with(
        &server,
        "beta",
        &token,
        &root.join("state"),
        &["--repo-dir", checkout.to_str().unwrap()],
    );
    let first_host = || async { admin.get_json(&server, "/api/hosts").await[0].clone() };
    let host = wait_until("a verdict", first_host, |h| {
        status(h, "git") == "ok" && status(h, "lock") != "unknown"
    })
    .await;
    // Today is after 2026-11-22, so a lock from 2026-11-15 is over 7 days old. The test
    // compares with the real clock to stay true on any date.
    let age_days = (protocol::Timestamp::now().secs()
        - protocol::Timestamp::parse("2026-11-15T10:00:00Z")
            .unwrap()
            .secs())
        / 86_400;
    let want = if age_days >= 8 { "outdated" } else { "ok" };
    assert_eq!(status(&host, "lock"), want, "{host:#}");
    assert!(message(&host, "lock").contains("days old"), "{host:#}");

    // A broken version.json is an error, with the reason.
    *body.lock().unwrap() = "<html>maintenance</html>".into();
    let h = wait_until("an error", first_host, |h| status(h, "git") == "error").await;
    assert!(message(&h, "git").contains("version.json"), "{h:#}");
    kill_child(&mut agent, "-TERM");
}

#[tokio::test]
async fn flake_lock_prs_are_found_by_label_and_by_title() {
    let deck = Deck::start(&[], &[("NIXDECK_PR_MATCH_TITLE", "true")]).await;
    assert_eq!(deck.get("/api/pending-pr").await, Value::Null);
    // An unrelated PR is not it.
    deck.pr(1, "Add a host", &["enhancement"], true).await;
    // By label.
    deck.pr(2, "chore: bump inputs", &["dependencies"], true)
        .await;
    let pr = deck
        .wait_value("/api/pending-pr", "PR by label", |p| p["number"] == 2)
        .await;
    assert_eq!(pr["mergeable"], true);
    assert_eq!(pr["title"], "chore: bump inputs");
    assert!(pr["url"].as_str().unwrap().ends_with("/pull/2"), "{pr}");
    // Not mergeable any more: "check now" sees it at once.
    deck.control(
        reqwest::Method::PATCH,
        "/_control/pr/2",
        json!({"mergeable": false}),
    )
    .await;
    let checked: Value = deck
        .admin
        .post(&deck.server, "/api/pending-pr/check")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(checked["number"], 2);
    assert_eq!(checked["mergeable"], false);
    // Closed; a PR whose title names flake.lock is found instead.
    deck.control(
        reqwest::Method::PATCH,
        "/_control/pr/2",
        json!({"state": "closed"}),
    )
    .await;
    deck.pr(3, "Update flake.lock", &[], true).await;
    deck.wait_value("/api/pending-pr", "PR by title", |p| p["number"] == 3)
        .await;
}

#[tokio::test]
async fn merge_and_deploy_rolls_out_and_reports_the_host_that_failed() {
    let deck = Deck::start(
        &[("a1", SWITCH_OK), ("a2", SWITCH_OK), ("a3", SWITCH_FAILS)],
        &[],
    )
    .await;
    let before = deck.head();
    deck.pr(7, "flake.lock: update nixpkgs", &["automated"], true)
        .await;
    deck.wait_value("/api/pending-pr", "PR", |p| p["number"] == 7)
        .await;
    let mut ws = browser_socket(&deck.server, &deck.admin).await;
    let job = deck.deploy_ok(json!({"pr_number": 7})).await;
    // One deploy at a time.
    let (status_code, reply) = deck.deploy(json!({"pr_number": 7})).await;
    assert_eq!(status_code, 409, "{reply}");
    assert_eq!(reply["code"], "deploy_running");

    let done = deck.wait_job(&job).await;
    assert_eq!(done["phase"], "failed", "{done:#}");
    assert_eq!(done["hosts"]["a1"], "ok");
    assert_eq!(done["hosts"]["a2"], "ok");
    assert_eq!(done["hosts"]["a3"], "error");
    assert!(done["message"].as_str().unwrap().contains("a3"), "{done:#}");
    // The merge moved main; every host pulled it (a3's switch failed after its pull).
    let merged = deck.head();
    assert_ne!(merged, before);
    for id in ["a1", "a2", "a3"] {
        let h = deck
            .wait_host(id, "at the merge commit", |h| {
                status(h, "git") == "ok" && status(h, "lock") == "ok"
            })
            .await;
        assert_eq!(h["generation"], merged.as_str());
    }
    let a1 = deck
        .wait_host("a1", "system ok", |h| status(h, "system") == "ok")
        .await;
    assert_eq!(status(&a1, "system"), "ok");
    // Every line of the deploy's commands was kept, the last one after a pause included.
    let history = deck.get("/api/hosts/a1/commands?limit=2").await;
    assert_eq!(history[0]["command"], "switch", "{history:#}");
    let log = deck
        .admin
        .get_text(
            &deck.server,
            &format!(
                "/api/commands/{}/log",
                history[0]["command_id"].as_str().unwrap()
            ),
        )
        .await;
    assert!(
        log.contains("switching") && log.contains("activated"),
        "{log}"
    );
    let a3 = deck.host("a3").await;
    assert_ne!(status(&a3, "system"), "ok");
    // Browsers saw the phases in order, ending with the stored result.
    let mut phases = Vec::new();
    let mut lines: std::collections::HashMap<String, Vec<String>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let v = next_json(&mut ws, Duration::from_secs(5)).await;
        let p = &v["payload"];
        let id = p["command_id"].as_str().unwrap_or_default().to_owned();
        if v["type"] == "command_output" {
            lines
                .entry(id.clone())
                .or_default()
                .push(p["line"].as_str().unwrap().to_owned());
        }
        if v["type"] == "command_complete"
            && p["status"] == "ok"
            && lines.get(&id).is_some_and(|l| l[0] == "switching")
        {
            // A command's lines all come before its completion.
            assert_eq!(lines[&id], ["switching", "activated"], "{}", p["host_id"]);
        }
        if v["type"] == "deploy_progress" {
            let p = v["payload"]["phase"].as_str().unwrap().to_owned();
            if phases.last() != Some(&p) {
                phases.push(p.clone());
            }
            if v["payload"]["active"] != true {
                break;
            }
        }
    }
    assert_eq!(phases, ["merging", "pulling", "switching", "failed"]);
    // The PR is gone once merged; the deploy is in the audit log.
    deck.wait_value("/api/pending-pr", "PR gone", Value::is_null)
        .await;
    let audit = deck.get("/api/audit?action=deploy.start").await;
    let results: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["target"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(results, [("PR #7", "deploy_running"), ("PR #7", "ok")]);
}

#[tokio::test]
async fn a_staged_rollout_halts_after_the_canary_fails_and_a_refused_merge_says_why() {
    let deck = Deck::start(
        &[
            ("b1", SWITCH_OK),
            ("b2", SWITCH_OK),
            ("canary", SWITCH_FAILS),
        ],
        &[("NIXDECK_PR_MATCH_TITLE", "true")],
    )
    .await;
    let before = deck.head();
    // Refused: GitHub says the PR cannot be merged; nothing runs, the reason shows.
    deck.pr(4, "Update flake.lock", &[], false).await;
    deck.detected(4).await;
    let (code, refused) = deck.deploy(json!({"pr_number": 4})).await;
    assert_eq!(code, 409, "{refused}");
    assert_eq!(refused["code"], "not_mergeable");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("cannot be merged"),
        "{refused:#}"
    );
    assert_eq!(deck.merge_requests().await, 0);
    assert_eq!(deck.head(), before);

    // Staged: the canary goes first and fails; nobody else is touched.
    deck.control(
        reqwest::Method::PATCH,
        "/_control/pr/4",
        json!({"mergeable": true}),
    )
    .await;
    // The canary wave named by a tag (`canary_tags`); a tag nobody carries is refused.
    let tagged = deck
        .admin
        .http
        .patch(deck.server.url("/api/hosts/canary"))
        .header("X-CSRF-Token", &deck.admin.csrf)
        .json(&json!({"tags": ["canary"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.status(), 200);
    let (code, refused) = deck
        .deploy(json!({"pr_number": 4, "canary_tags": ["nobody"]}))
        .await;
    assert_eq!((code, refused["code"].as_str()), (409, Some("no_hosts")));
    let job = deck
        .deploy_ok(
            json!({"pr_number": 4, "canary_tags": ["canary"], "batch_size": 1, "max_failures": 0}),
        )
        .await;
    let halted = deck.wait_job(&job).await;
    assert_eq!(halted["phase"], "failed", "{halted:#}");
    assert_eq!(halted["hosts"]["canary"], "error");
    assert_eq!(halted["hosts"]["b1"], "skipped");
    assert_eq!(halted["hosts"]["b2"], "skipped");
    assert!(halted["message"].as_str().unwrap().starts_with("Stopped"));
    for id in ["b1", "b2"] {
        let h = deck.host(id).await;
        assert_eq!(h["generation"], before.as_str(), "{id} was not pulled");
        assert_eq!(status(&h, "git"), "outdated");
    }
    // Unknown hosts are refused before anything happens.
    let (code, _) = deck
        .deploy(json!({"pr_number": 4, "host_ids": ["ghost"]}))
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_dashboard_restart_in_the_middle_of_a_deploy_marks_it_interrupted() {
    let mut deck = Deck::start(&[("slow", "sleep 4; true")], &[]).await;
    deck.pr(9, "Update flake.lock", &["dependencies"], true)
        .await;
    deck.detected(9).await;
    let job = deck.deploy_ok(json!({"pr_number": 9})).await;
    deck.wait_value(&format!("/api/deploy/{job}"), "switching", |j| {
        j["phase"] == "switching"
    })
    .await;
    // Restart the dashboard on the same database and port.
    let port = deck.server.port;
    deck.server.stop();
    let env_refs: Vec<(&str, &str)> = deck
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    deck.server = Server::start_with(deck.scratch.path(), port, &env_refs).await;
    deck.admin = login(&deck.server).await;
    let j = deck.get(&format!("/api/deploy/{job}")).await;
    assert_ne!(j["active"], true, "{j:#}");
    assert_eq!(j["phase"], "failed");
    assert!(
        j["message"].as_str().unwrap().contains("Interrupted"),
        "{j:#}"
    );
    assert_eq!(j["hosts"]["slow"], "error", "it was mid-switch: {j:#}");
    // The slot is free again, and the switch that was running still completes.
    deck.wait_host("slow", "switch finished", |h| {
        h["pending_command"].is_null()
    })
    .await;
    // (Not `deploy_running`: the slot is checked first. PR #9 is merged, so it is refused.)
    let (code, reply) = deck.deploy(json!({"pr_number": 9})).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(reply["code"], "not_pending_pr", "{reply}");
}

#[tokio::test]
async fn cancel_stops_launching_new_steps() {
    let deck = Deck::start(
        &[("c1", "sleep 2; true"), ("c2", SWITCH_OK)],
        &[("NIXDECK_PR_MATCH_TITLE", "true")],
    )
    .await;
    deck.pr(11, "Update flake.lock", &[], true).await;
    deck.detected(11).await;
    // Waves of one: c1 first, then c2.
    let job = deck
        .deploy_ok(json!({"pr_number": 11, "batch_size": 1}))
        .await;
    deck.wait_value(&format!("/api/deploy/{job}"), "c1 switching", |j| {
        j["phase"] == "switching" && j["hosts"]["c1"] == "running"
    })
    .await;
    let r = deck
        .admin
        .post(&deck.server, &format!("/api/deploy/{job}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let end = deck.wait_job(&job).await;
    assert_eq!(end["phase"], "failed", "{end:#}");
    assert!(
        end["message"]
            .as_str()
            .unwrap()
            .starts_with("Cancelled by admin"),
        "{end:#}"
    );
    // The running switch finished; the next wave never started.
    assert_eq!(end["hosts"]["c1"], "ok", "{end:#}");
    assert_eq!(end["hosts"]["c2"], "skipped");
    let history = deck.get("/api/hosts/c2/commands?limit=5").await;
    assert_eq!(history, json!([]), "nothing ran on c2");
    // Cancelling an ended job is a conflict; an unknown one is not found.
    let again = deck
        .admin
        .post(&deck.server, &format!("/api/deploy/{job}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let unknown = deck
        .admin
        .post(&deck.server, "/api/deploy/nope/cancel")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// A flake.lock update PR by the default author (a bot), from a branch of the repository.
fn lock_pr(number: u64, head: &str) -> Value {
    json!({"number": number, "title": "flake.lock: update nixpkgs", "labels": ["dependencies"],
           "head": head, "mergeable": true})
}

/// `base` with the fields of `extra` set.
fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[tokio::test]
async fn merge_and_deploy_refuses_every_pr_but_the_detected_update_pr() {
    let deck = Deck::start(&[("d1", SWITCH_OK)], &[]).await;
    let before = deck.head();
    let origin = &deck.origin;
    origin.push_branch("add-host", &[("hosts.nix", "{ d2 = 1; }\n")], "add a host");
    origin.push_branch(
        "lock-and-more",
        &[("flake.lock", LOCK_V2), ("hosts.nix", "{ evil = 1; }\n")],
        "flake.lock: update nixpkgs",
    );
    origin.push_branch("staging", &[("hosts.nix", "{ staging = 1; }\n")], "staging");
    let lock = || lock_pr(0, "update-flake-lock");
    // Wrong number: an ordinary PR, mergeable as far as GitHub is concerned.
    deck.open_pr(
        json!({"number": 1, "title": "Add a host", "labels": ["enhancement"],
                        "head": "add-host", "mergeable": true}),
    )
    .await;
    // The update PR.
    deck.open_pr(with(lock(), json!({"number": 2}))).await;
    // Labelled like it, and each wrong in one way: from a fork, by a person, marked by
    // its title alone, changing more than flake.lock, against another branch.
    deck.open_pr(with(
        lock(),
        json!({"number": 3, "head_repo": "mallory/nixcfg"}),
    ))
    .await;
    deck.open_pr(with(lock(), json!({"number": 4, "author": "mallory"})))
        .await;
    deck.open_pr(with(lock(), json!({"number": 5, "labels": []})))
        .await;
    deck.open_pr(with(lock(), json!({"number": 6, "head": "lock-and-more"})))
        .await;
    deck.open_pr(with(lock(), json!({"number": 7, "base": "staging"})))
        .await;
    // Newest first: each of #7 to #3 would be taken before #2 if it passed.
    let pr = deck.check_now().await;
    assert_eq!(pr["number"], 2, "{pr:#}");
    assert_eq!(
        pr["head_sha"],
        git(&origin.bare, &["rev-parse", "update-flake-lock"]).as_str()
    );
    assert_eq!(deck.get("/api/pending-pr").await["number"], 2);

    for n in [1, 3, 4, 5, 6, 7] {
        let (code, reply) = deck.deploy(json!({"pr_number": n})).await;
        assert_eq!(code, 409, "PR #{n}: {reply}");
        assert_eq!(reply["code"], "not_pending_pr", "PR #{n}: {reply}");
        let text = reply["error"].as_str().unwrap();
        assert!(
            text.contains(&format!("PR #{n} is not")) && text.contains("PR #2"),
            "{text}"
        );
    }
    // Nothing ran: GitHub was asked for no merge, main did not move, the host ran nothing,
    // and each refusal is in the audit log with its reason.
    assert_eq!(deck.merge_requests().await, 0);
    assert_eq!(deck.head(), before);
    assert_eq!(deck.get("/api/hosts/d1/commands?limit=5").await, json!([]));
    let audit = deck.deploy_audit().await;
    let want: Vec<(String, String)> = [7, 6, 5, 4, 3, 1]
        .iter()
        .map(|n| (format!("PR #{n}"), "not_pending_pr".to_owned()))
        .collect();
    assert_eq!(audit, want);
}

#[tokio::test]
async fn merge_and_deploy_reads_the_pr_again_and_merges_only_the_head_it_detected() {
    // The dashboard's view of the PR changes only through "check now" here, so GitHub can
    // change between that look and the click.
    let deck = Deck::start(&[("e1", SWITCH_OK)], &[("NIXDECK_PR_POLL_S", "3600")]).await;
    let before = deck.head();
    let origin = &deck.origin;
    origin.push_branch("staging", &[("hosts.nix", "{ staging = 1; }\n")], "staging");
    let refused = |code: u16, reply: &Value, want: &str| {
        assert_eq!(code, 409, "{reply}");
        assert_eq!(reply["code"], want, "{reply}");
        reply["error"].as_str().unwrap().to_owned()
    };

    // Retargeted onto another branch after it was detected.
    origin.push_branch(
        "lock-a",
        &[("flake.lock", LOCK_V2)],
        "flake.lock: update nixpkgs",
    );
    deck.open_pr(lock_pr(2, "lock-a")).await;
    assert_eq!(deck.check_now().await["number"], 2);
    deck.control(
        reqwest::Method::PATCH,
        "/_control/pr/2",
        json!({"base": "staging"}),
    )
    .await;
    let (code, reply) = deck.deploy(json!({"pr_number": 2})).await;
    let text = refused(code, &reply, "pr_base");
    assert!(text.contains("staging") && text.contains("main"), "{text}");
    deck.control(
        reqwest::Method::PATCH,
        "/_control/pr/2",
        json!({"state": "closed"}),
    )
    .await;

    // Another file pushed onto its branch after it was detected.
    origin.push_branch(
        "lock-b",
        &[("flake.lock", LOCK_V2)],
        "flake.lock: update nixpkgs",
    );
    deck.open_pr(lock_pr(3, "lock-b")).await;
    assert_eq!(deck.check_now().await["number"], 3);
    origin.push_branch("lock-b", &[("hosts.nix", "{ evil = 1; }\n")], "and a host");
    let (code, reply) = deck.deploy(json!({"pr_number": 3})).await;
    let text = refused(code, &reply, "pr_files");
    assert!(text.contains("hosts.nix"), "{text}");
    deck.control(
        reqwest::Method::PATCH,
        "/_control/pr/3",
        json!({"state": "closed"}),
    )
    .await;
    assert_eq!(deck.merge_requests().await, 0);

    // Its head moved after it was detected (flake.lock only, so every rule still holds):
    // the merge names the detected head, GitHub refuses with 409, and its words show.
    let seen = origin.push_branch(
        "lock-c",
        &[("flake.lock", LOCK_V2)],
        "flake.lock: update nixpkgs",
    );
    deck.open_pr(lock_pr(4, "lock-c")).await;
    let pr = deck.check_now().await;
    assert_eq!(
        (pr["number"].as_u64(), pr["head_sha"].as_str()),
        (Some(4), Some(seen.as_str()))
    );
    let moved = origin.push_branch(
        "lock-c",
        &[("flake.lock", LOCK_V3)],
        "flake.lock: update again",
    );
    let (code, reply) = deck.deploy(json!({"pr_number": 4})).await;
    let text = refused(code, &reply, "head_moved");
    assert!(
        text.contains("Head branch was modified. Review and try the merge again."),
        "{text}"
    );
    assert_eq!(deck.merge_requests().await, 1);
    assert_eq!(deck.head(), before);
    assert_eq!(deck.get("/api/hosts/e1/commands?limit=5").await, json!([]));

    // Looked at again, the dashboard has the new head; an operator whose page still shows
    // the old one is refused before anything is asked of GitHub.
    assert_eq!(deck.check_now().await["head_sha"], moved.as_str());
    let (code, reply) = deck.deploy(json!({"pr_number": 4, "head_sha": seen})).await;
    let text = refused(code, &reply, "head_moved");
    assert!(text.contains(&moved[..7]), "{text}");
    assert_eq!(deck.merge_requests().await, 1);
    // The head the operator reviewed is the one merged and deployed.
    let job = deck
        .deploy_ok(json!({"pr_number": 4, "head_sha": moved}))
        .await;
    let done = deck.wait_job(&job).await;
    assert_eq!(done["phase"], "done", "{done:#}");
    assert_eq!(git(&origin.bare, &["rev-parse", "main^2"]), moved);

    let audit = deck.deploy_audit().await;
    let results: Vec<&str> = audit.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        results,
        ["ok", "head_moved", "head_moved", "pr_files", "pr_base"]
    );
    let entries = deck.get("/api/audit?action=deploy.start").await;
    assert!(
        entries[2]["detail"]
            .as_str()
            .unwrap()
            .contains("Head branch was modified"),
        "{entries:#}"
    );
}

#[tokio::test]
async fn ctl_deploy_follows_a_rollout_and_its_exit_code_says_how_it_ended() {
    let deck = Deck::start(&[("g1", SWITCH_OK), ("g2", SWITCH_FAILS)], &[]).await;
    // A script's token: no login, no re-authentication.
    let token = api_token(&deck.server, "operator");
    deck.pr(7, "flake.lock: update nixpkgs", &["automated"], true)
        .await;
    deck.detected(7).await;
    // The script tags the hosts (a bearer PATCH, no CSRF), then deploys by tag.
    let http = reqwest::Client::new();
    for (host, tags) in [("g1", json!(["web"])), ("g2", json!(["canary"]))] {
        let resp = http
            .patch(deck.server.url(&format!("/api/hosts/{host}")))
            .bearer_auth(&token)
            .json(&json!({ "tags": tags }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    // A canary tag picks among the deploy's hosts (`canary_tags`, resolved by the
    // dashboard): g2 carries it but not `web`, so it stays out of this deploy.
    let (code, out, err) = ctl(
        &deck.server,
        &token,
        &[
            "deploy",
            "--pr",
            "7",
            "--tags",
            "web",
            "--canary",
            "tag:canary",
            "--follow",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("  g1: ok") && out.contains("phase done"),
        "{out}"
    );
    assert!(!out.contains("g2"), "{out}");
    assert!(err.contains("of PR #7 done"), "{err}");
    let merged = deck.head();
    deck.wait_host("g1", "at the merge", |h| h["generation"] == merged.as_str())
        .await;

    // The next update PR, its canary failing: the deploy halts, the other host untouched.
    deck.origin.push_branch(
        "update-flake-lock",
        &[("flake.lock", LOCK_V3)],
        "flake.lock: update nixpkgs again",
    );
    deck.pr(8, "flake.lock: update nixpkgs", &["automated"], true)
        .await;
    deck.detected(8).await;
    let (code, out, err) = ctl(
        &deck.server,
        &token,
        &[
            "deploy",
            "--pr",
            "8",
            "--canary",
            "tag:canary",
            "--follow",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    // --json: the final progress alone on stdout, the commentary on stderr.
    let end: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(end["phase"], "failed", "{end:#}");
    assert_eq!(end["hosts"]["g2"], "error");
    assert_eq!(end["hosts"]["g1"], "skipped");
    assert!(err.contains("  g2: error"), "{err}");
    assert!(err.contains("of PR #8 ended failed: Stopped"), "{err}");
    assert_eq!(deck.host("g1").await["generation"], merged.as_str());
}

/// Notification rules on deploys, red compartments and outdated agents, end to end with a
/// local webhook receiver: a deploy that ends well and one that fails on one host, red
/// compartments while GitHub is down (reported only for the host in the rule's scope, once
/// it has been red for a second), and an agent of another version than the dashboard.
#[tokio::test]
async fn notifications_report_deploys_red_compartments_and_outdated_agents() {
    use common::webhook::{add_webhook, Receiver};
    let deck = Deck::start(&[("n1", SWITCH_OK), ("n2", SWITCH_FAILS)], &[]).await;
    let port = free_port();
    let rx = Receiver::start(port, 0).await;
    let target = add_webhook(&deck.server, &deck.admin, port).await;
    for rule in [
        json!({"event": "deploy_finished"}),
        json!({"event": "deploy_failed"}),
        json!({"event": "compartment_red", "after_s": 1, "scope": {"host_ids": ["n1"]}}),
        json!({"event": "agent_outdated"}),
    ] {
        let r = deck
            .admin
            .post(&deck.server, "/api/notifications/rules")
            .json(&with(rule, json!({"target_ids": [target]})))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let within = Duration::from_secs(30);

    // A deploy to n1 alone ends well.
    deck.pr(7, "flake.lock: update nixpkgs", &["automated"], true)
        .await;
    deck.detected(7).await;
    let job = deck
        .deploy_ok(json!({"pr_number": 7, "host_ids": ["n1"]}))
        .await;
    assert_eq!(deck.wait_job(&job).await["phase"], "done");
    let done = rx.wait_event("deploy_finished", within).await;
    assert_eq!(done["hosts"], json!(["n1"]), "{done}");
    assert_eq!(done["details"]["events"][0]["pr_number"], 7, "{done}");

    // The next update PR, to both: n2's switch fails.
    deck.origin.push_branch(
        "lock-v3",
        &[("flake.lock", LOCK_V3)],
        "flake.lock: update nixpkgs",
    );
    deck.open_pr(lock_pr(8, "lock-v3")).await;
    deck.detected(8).await;
    let job = deck
        .deploy_ok(json!({"pr_number": 8, "host_ids": ["n1", "n2"]}))
        .await;
    assert_eq!(deck.wait_job(&job).await["phase"], "failed");
    let failed = rx.wait_event("deploy_failed", within).await;
    assert_eq!(failed["hosts"], json!(["n1", "n2"]), "{failed}");
    assert!(
        failed["summary"].as_str().unwrap().contains("n2"),
        "{failed}"
    );

    // GitHub down: git and lock turn red on both hosts; the rule names n1 only.
    deck.control(
        reqwest::Method::POST,
        "/_control/fail",
        json!({"mode": "down"}),
    )
    .await;
    deck.wait_host("n2", "git error", |h| status(h, "git") == "error")
        .await;
    let red = rx.wait_event("compartment_red", within).await;
    assert_eq!(red["hosts"], json!(["n1"]), "scoped to n1: {red}");
    let compartments = red["details"]["events"][0]["compartments"].to_string();
    assert!(compartments.contains("git"), "{red}");
    deck.control(
        reqwest::Method::POST,
        "/_control/fail",
        json!({"mode": "none"}),
    )
    .await;

    // An agent of another version.
    let token = create_host(&deck.server, &deck.admin, "old").await;
    let mut old = agent_socket(&deck.server, &token).await.unwrap();
    {
        use futures::SinkExt;
        let register = json!({"type": "register", "payload": {"hostname": "old",
            "host_type": "nixos", "agent_version": "0.0.1", "heartbeat_interval_s": 1}});
        old.send(tokio_tungstenite::tungstenite::Message::text(
            register.to_string(),
        ))
        .await
        .unwrap();
    }
    let outdated = rx.wait_event("agent_outdated", within).await;
    assert_eq!(outdated["hosts"], json!(["old"]), "{outdated}");
    assert_eq!(
        outdated["details"]["events"][0]["agent_version"], "0.0.1",
        "{outdated}"
    );
    // n1's and n2's agents are the dashboard's version: never reported.
    assert!(
        rx.got()
            .iter()
            .filter(|m| m["event"] == "agent_outdated")
            .all(|m| m["hosts"] == json!(["old"])),
        "{:?}",
        rx.got()
    );
    // Each event once: no message repeats an idempotency key.
    let got = rx.got();
    let mut keys: Vec<&str> = got
        .iter()
        .map(|m| m["idempotency_key"].as_str().unwrap())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), got.len(), "{got:?}");
}
