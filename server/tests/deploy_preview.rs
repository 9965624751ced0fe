//! Merge & Deploy with a preview first, end to end: the real server, `fake-github` (crate
//! `testkit`) over a real bare repository, and agent links played by the test that answer
//! every order at once (a preview with its closure diff), so what each agent was asked for
//! is exactly known.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use testkit::client::Session;
use testkit::fake_github::FakeGithub;
use testkit::git::{git, Origin};
use tokio::time::{sleep, Instant};

const LOCK_V1: &str = "{\"nodes\":{\"nixpkgs\":{\"rev\":\"v1\"}},\"version\":7}\n";
const LOCK_V2: &str = "{\"nodes\":{\"nixpkgs\":{\"rev\":\"v2\"}},\"version\":7}\n";
const LOCK_V3: &str = "{\"nodes\":{\"nixpkgs\":{\"rev\":\"v3\"}},\"version\":7}\n";
const GH_TOKEN: &str = "gh-test-token";
struct Deck {
    // Dropped in this order: fake GitHub before the directory with its repository.
    gh: FakeGithub,
    _scratch: tempfile::TempDir,
    origin: Origin,
    server: Server,
    admin: Session,
    orders: Orders,
    agents: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Deck {
    fn drop(&mut self) {
        for a in &self.agents {
            a.abort();
        }
    }
}

impl Deck {
    /// flake.lock v1 on main, v2 on branch `update-flake-lock`; fake GitHub over it; the
    /// dashboard reading it; a fake agent for each host.
    async fn start(hosts: &[&str]) -> Deck {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path();
        let origin = Origin::new(root, &[("flake.lock", LOCK_V1), ("hosts.nix", "{ }\n")]);
        origin.push_branch(
            "update-flake-lock",
            &[("flake.lock", LOCK_V2)],
            "flake.lock: update nixpkgs",
        );
        let gh = FakeGithub::start(
            &fake_github_bin(),
            &origin.bare,
            "acme",
            "nixcfg",
            &["--token", GH_TOKEN],
            Stdio::from(std::fs::File::create(root.join("fake-github.log")).unwrap()),
        );
        let env = [
            ("NIXDECK_GITHUB_REPO", "acme/nixcfg"),
            ("NIXDECK_GITHUB_API_URL", gh.base.as_str()),
            ("NIXDECK_GITHUB_TOKEN", GH_TOKEN),
            ("NIXDECK_DESIRED_POLL_S", "1"),
            ("NIXDECK_PR_POLL_S", "1"),
            ("NIXDECK_MERGE_WAIT_S", "20"),
        ];
        let server = Server::start_with(root, free_port(), &env).await;
        let admin = login(&server).await;
        let orders = Orders::default();
        let mut agents = Vec::new();
        for host in hosts {
            let token = create_host(&server, &admin, host).await;
            let ws = registered_agent(&server, &token, host).await;
            agents.push(fake_agent(ws, host, orders.clone()));
        }
        Deck {
            gh,
            _scratch: scratch,
            origin,
            server,
            admin,
            orders,
            agents,
        }
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

    async fn open_pr(&self, number: u64, head: &str) {
        self.control(
            reqwest::Method::POST,
            "/_control/pr",
            json!({"number": number, "title": "flake.lock: update nixpkgs",
                   "labels": ["automated"], "head": head, "mergeable": true}),
        )
        .await;
    }

    async fn merge_requests(&self) -> u64 {
        let state = self
            .control(reqwest::Method::GET, "/_control/state", Value::Null)
            .await;
        state["requests"]["PUT /repos/acme/nixcfg/pulls/{number}/merge"]
            .as_u64()
            .unwrap_or(0)
    }

    fn main_head(&self) -> String {
        git(&self.origin.bare, &["rev-parse", "main"])
    }

    async fn get(&self, path: &str) -> Value {
        self.admin.get_json(&self.server, path).await
    }

    /// Poll `path` until `pred` holds (30 s at most); the last value.
    async fn wait_value(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get(path).await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {what} not reached: {v:#}"
            );
            sleep(Duration::from_millis(200)).await;
        }
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.admin.post(&self.server, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Start a deploy that previews first; its job id.
    async fn preview_deploy(&self, pr: u64) -> String {
        let (code, reply) = self
            .post(
                "/api/deploy",
                Some(json!({"pr_number": pr, "preview": true})),
            )
            .await;
        assert_eq!(code, 202, "{reply}");
        reply["job_id"].as_str().unwrap().to_owned()
    }

    async fn awaiting(&self, job: &str) -> Value {
        self.wait_value(&format!("/api/deploy/{job}"), "awaiting", |j| {
            j["phase"] == "awaiting_confirmation" || j["active"] != true
        })
        .await
    }

    /// The orders so far of `kind`, as `(host, order)`.
    fn orders(&self, kind: &str) -> Vec<(String, Value)> {
        let mut v: Vec<_> = self
            .orders
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, o)| o["command"] == kind)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[tokio::test]
async fn a_previewed_deploy_merges_only_once_confirmed() {
    let deck = Deck::start(&["p1", "p2"]).await;
    let before = deck.main_head();
    let head = git(&deck.origin.bare, &["rev-parse", "update-flake-lock"]);
    deck.open_pr(7, "update-flake-lock").await;
    deck.wait_value("/api/pending-pr", "PR #7", |p| {
        p["number"] == 7 && p["head_sha"] == head.as_str()
    })
    .await;

    // Previewing: every target gets a preview of the PR's head, not of its checkout.
    let job = deck.preview_deploy(7).await;
    let path = format!("/api/deploy/{job}");
    let confirm = format!("/api/deploy/{job}/confirm");
    let waiting = deck.awaiting(&job).await;
    assert_eq!(waiting["phase"], "awaiting_confirmation", "{waiting:#}");
    assert_eq!(waiting["active"], true);
    let previews = deck.orders("preview");
    assert_eq!(
        previews.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["p1", "p2"]
    );
    for (host, order) in &previews {
        assert_eq!(order["rev"], head.as_str(), "{host}: {order}");
        assert_eq!(
            waiting["previews"][host], order["command_id"],
            "{waiting:#}"
        );
        assert_eq!(waiting["hosts"][host], "ok");
        let detail = deck
            .get(&format!(
                "/api/commands/{}",
                order["command_id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(detail["command"], "preview", "{detail:#}");
        assert_eq!(detail["status"], "ok");
        assert_eq!(detail["result"]["store_path"], STORE_PATH);
        assert_eq!(
            detail["result"]["diff"]["changes"][0]["name"], "openssl",
            "{detail:#}"
        );
    }
    assert_eq!(
        waiting["message"],
        format!(
            "Previewed PR #7 at {} on 2 of 2 hosts; confirm to merge and deploy.",
            &head[..7]
        )
    );
    // Nothing is merged while it waits, and it holds the slot.
    sleep(Duration::from_secs(2)).await;
    assert_eq!(deck.merge_requests().await, 0);
    assert_eq!(deck.main_head(), before);
    assert_eq!(deck.orders("pull"), []);
    let (code, reply) = deck
        .post("/api/deploy", Some(json!({"pr_number": 7})))
        .await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(reply["code"], "deploy_running");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("waits for its confirmation"),
        "{reply}"
    );

    // Confirmed: the previewed head is merged, then every host pulls and switches.
    let (code, reply) = deck.post(&confirm, None).await;
    assert_eq!(code, 202, "{reply}");
    assert_eq!(reply["job_id"], job.as_str());
    assert_eq!(deck.merge_requests().await, 1);
    assert_eq!(git(&deck.origin.bare, &["rev-parse", "main^2"]), head);
    let done = deck
        .wait_value(&path, "done", |j| j["active"] != true)
        .await;
    assert_eq!(done["phase"], "done", "{done:#}");
    assert_eq!(done["hosts"], json!({"p1": "ok", "p2": "ok"}));
    assert_eq!(done["previews"], waiting["previews"], "kept for the record");
    for kind in ["pull", "switch"] {
        let hosts: Vec<String> = deck.orders(kind).into_iter().map(|(h, _)| h).collect();
        assert_eq!(hosts, ["p1", "p2"], "{kind}");
    }
    // Once it is over (and for a job that does not exist) there is nothing to confirm.
    let (code, reply) = deck.post(&confirm, None).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(reply["code"], "not_awaiting");
    let (code, _) = deck.post("/api/deploy/nope/confirm", None).await;
    assert_eq!(code, 404);
    let audit = deck.get("/api/audit?action=deploy.confirm").await;
    let results: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["not_found", "not_awaiting", "ok"]);
}

#[tokio::test]
async fn a_previewed_deploy_that_is_cancelled_or_whose_head_moved_merges_nothing() {
    let deck = Deck::start(&["q1"]).await;
    let before = deck.main_head();
    let first = deck.origin.push_branch(
        "lock-next",
        &[("flake.lock", LOCK_V3)],
        "flake.lock: update nixpkgs",
    );
    deck.open_pr(8, "lock-next").await;
    deck.wait_value("/api/pending-pr", "PR #8", |p| {
        p["number"] == 8 && p["head_sha"] == first.as_str()
    })
    .await;

    // Cancelled while it waits: it ends failed, nothing merged, nothing pulled.
    let job = deck.preview_deploy(8).await;
    let waiting = deck.awaiting(&job).await;
    assert_eq!(waiting["phase"], "awaiting_confirmation", "{waiting:#}");
    let (code, reply) = deck.post(&format!("/api/deploy/{job}/cancel"), None).await;
    assert_eq!(code, 202, "{reply}");
    let end = deck
        .wait_value(&format!("/api/deploy/{job}"), "ended", |j| {
            j["active"] != true
        })
        .await;
    assert_eq!(end["phase"], "failed", "{end:#}");
    assert_eq!(
        end["message"],
        "Cancelled by admin before the merge; nothing was merged."
    );
    let (code, reply) = deck.post(&format!("/api/deploy/{job}/confirm"), None).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(reply["code"], "not_awaiting");
    assert_eq!(deck.merge_requests().await, 0);
    assert_eq!(deck.main_head(), before);

    // Previewed again, then the PR's branch moves: the confirmation is refused, saying
    // so, and nothing is merged.
    let job = deck.preview_deploy(8).await;
    deck.awaiting(&job).await;
    let previews = deck.orders("preview");
    assert_eq!(previews.len(), 2, "{previews:?}");
    assert_eq!(previews[1].1["rev"], first.as_str());
    deck.origin.push_branch(
        "lock-next",
        &[("flake.lock", LOCK_V2)],
        "flake.lock: update again",
    );
    let (code, reply) = deck.post(&format!("/api/deploy/{job}/confirm"), None).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(reply["code"], "head_moved", "{reply}");
    let text = reply["error"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "PR #8 changed since it was previewed at {}; nothing was merged.",
            &first[..7]
        )),
        "{text}"
    );
    let end = deck
        .wait_value(&format!("/api/deploy/{job}"), "ended", |j| {
            j["active"] != true
        })
        .await;
    assert_eq!(end["phase"], "failed", "{end:#}");
    assert_eq!(end["message"], text);
    assert_eq!(deck.main_head(), before);
    assert_eq!(deck.orders("pull"), []);
    assert_eq!(deck.orders("switch"), []);
}

#[tokio::test]
async fn ctl_deploy_preview_prints_what_would_change_and_confirm_rolls_it_out() {
    let deck = Deck::start(&["q1", "q2"]).await;
    let token = api_token(&deck.server, "operator");
    deck.open_pr(7, "update-flake-lock").await;
    deck.wait_value("/api/pending-pr", "PR #7", |p| p["number"] == 7)
        .await;

    // Previews, then stops and says how to go on; nothing merged.
    let (code, out, err) = ctl(&deck.server, &token, &["deploy", "--pr", "7", "--preview"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let job = out.lines().last().unwrap().trim().to_owned();
    for host in ["q1", "q2"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("  {host}: preview ok")))
            .unwrap_or_else(|| panic!("no preview line for {host}: {out}"));
        assert!(
            line.contains("1 package changed, closure +0.0 MiB"),
            "{line}"
        );
    }
    assert!(
        out.contains(&format!("nixdeck ctl deploy confirm {job}")),
        "{out}"
    );
    assert_eq!(deck.merge_requests().await, 0);
    let waiting = deck.get(&format!("/api/deploy/{job}")).await;
    assert_eq!(waiting["phase"], "awaiting_confirmation", "{waiting:#}");

    let (code, out, err) = ctl(
        &deck.server,
        &token,
        &["deploy", "confirm", &job, "--follow"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("phase done"), "{out}");
    assert_eq!(deck.merge_requests().await, 1);
    assert_eq!(deck.orders("switch").len(), 2);
}
