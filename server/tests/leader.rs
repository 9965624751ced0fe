//! Two replicas: two real `nixdeck` processes on one PostgreSQL database, with the same
//! secret key, against `fake-github`. What must happen once per database happens once
//! (`service::lease`): GitHub is polled by the leader only, and by the other once the
//! leader is killed; the other's browsers see the leader's desired state; login failures
//! and agent authentication failures spread over both run out at one server's count; a
//! second deploy on the other replica is refused while one runs, and the job of a killed
//! replica is taken over (marked interrupted); a notification is delivered once. A deploy
//! that waits for its confirmation on one replica is cancelled, and confirmed, through the
//! other.
//!
//! Needs `NIXDECK_TEST_POSTGRES_URL` (`scripts/test.sh` sets it). It runs in the first
//! pass of the server's integration tests and is skipped in the second, whose only
//! difference (`NIXDECK_TEST_SERVER_DATABASE=postgres`) it has already.

mod common;

use common::webhook::{add_webhook, Receiver};
use common::*;
use futures::SinkExt;
use nixdeck_core::service::limits::AGENT_FAILURES_PER_MIN;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use testkit::client::Session;
use testkit::fake_github::FakeGithub;
use testkit::git::{git, Origin};
use tokio::time::{sleep, Instant};

const GH_TOKEN: &str = "gh-test-token";
/// Short, so that a takeover takes about 2.5 s (the TTL plus a renewal).
const LEASE_TTL_S: u64 = 2;
const LOGIN_FAILURES: usize = 3;

/// `GET` requests for the branch head: one per desired-state poll (`NIXDECK_DESIRED_POLL_S`).
async fn head_reads(gh: &FakeGithub) -> u64 {
    let state: Value = reqwest::get(gh.url("/_control/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    state["requests"]["GET /repos/acme/nixcfg/commits/{ref}"]
        .as_u64()
        .unwrap_or(0)
}

/// Head reads during `secs` seconds.
async fn polls_during(gh: &FakeGithub, secs: u64) -> u64 {
    let before = head_reads(gh).await;
    sleep(Duration::from_secs(secs)).await;
    head_reads(gh).await - before
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        sleep(Duration::from_millis(100)).await;
    }
}

fn leading(server: &Server) -> bool {
    server.log().contains("leading: this server runs")
}

/// An agent connection with a token no host has: 401, or 429 once the address ran out.
async fn wrong_agent_token(server: &Server) -> u16 {
    reqwest::Client::new()
        .get(server.url("/ws/agent"))
        .bearer_auth("not-an-agent-token")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wrong_login(server: &Server) -> u16 {
    reqwest::Client::new()
        .post(server.url("/api/login"))
        .json(&json!({"username": "mallory", "password": "not-the-password"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What both replicas of a test share: the fake GitHub on the test's origin, a new
/// database (the harness reads it from `database-url`) and one secret key file.
struct Shared {
    gh: FakeGithub,
    key: std::path::PathBuf,
    ttl: String,
}

impl Shared {
    async fn start(root: &std::path::Path, origin: &Origin, pg: &str) -> Shared {
        let gh = FakeGithub::start(
            &fake_github_bin(),
            &origin.bare,
            "acme",
            "nixcfg",
            &["--token", GH_TOKEN],
            Stdio::from(std::fs::File::create(root.join("fake-github.log")).unwrap()),
        );
        let url = nixdeck_core::storage::testing::fresh_postgres_database(pg)
            .await
            .unwrap();
        std::fs::write(root.join("database-url"), &url).unwrap();
        Shared {
            gh,
            key: root.join("secret.key"),
            ttl: LEASE_TTL_S.to_string(),
        }
    }

    /// The replicas' settings, `extra` after them.
    fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("NIXDECK_SECRET_KEY_FILE", self.key.to_str().unwrap()),
            ("NIXDECK_GITHUB_REPO", "acme/nixcfg"),
            ("NIXDECK_GITHUB_API_URL", self.gh.base.as_str()),
            ("NIXDECK_GITHUB_TOKEN", GH_TOKEN),
            ("NIXDECK_DESIRED_POLL_S", "1"),
            ("NIXDECK_PR_POLL_S", "1"),
            ("NIXDECK_MERGE_WAIT_S", "20"),
            ("NIXDECK_LEASE_TTL_S", &self.ttl),
        ];
        env.extend_from_slice(extra);
        env
    }
}

#[tokio::test]
async fn two_replicas_run_the_once_per_database_jobs_once() {
    if on_postgres() {
        eprintln!("note: leader.rs ran in the first pass (it is always on PostgreSQL)");
        return;
    }
    let Some(nixdeck_core::storage::testing::TestBackend::Postgres(pg)) =
        nixdeck_core::storage::testing::TestBackend::postgres()
    else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let origin = Origin::new(root, &[("flake.lock", "{\"version\":7}\n")]);
    git(&origin.work, &["checkout", "-b", "update-flake-lock"]);
    std::fs::write(origin.work.join("flake.lock"), "{\"version\":7,\"v\":2}\n").unwrap();
    git(
        &origin.work,
        &["commit", "-am", "flake.lock: update nixpkgs"],
    );
    git(&origin.work, &["push", "origin", "update-flake-lock"]);
    git(&origin.work, &["checkout", "main"]);
    let shared = Shared::start(root, &origin, &pg).await;
    let gh = &shared.gh;
    let failures = LOGIN_FAILURES.to_string();
    let env = shared.env(&[("NIXDECK_LOGIN_FAILURES_PER_MIN", &failures)]);
    let mut a = Server::start_with(root, free_port(), &env).await;
    let admin_a = login(&a).await;
    // The host exists before B starts, so B's hub knows it (the live stream between
    // replicas is the event bus's, not this test's).
    let token = create_host(&a, &admin_a, "alpha").await;
    let b = Server::start_with(root, free_port(), &env).await;
    let admin_b = login(&b).await;

    // One replica leads: A, which started first.
    assert!(leading(&a), "{}", a.log());
    assert!(!leading(&b), "{}", b.log());

    // GitHub is polled once per interval, not once per replica: at 1 s, about 7 head
    // reads in 8 s (each read takes a little time too); two pollers would make about 14.
    let polls = polls_during(gh, 8).await;
    assert!((3..=10).contains(&polls), "{polls} head reads in 8 s");
    // B, which does not poll, shows the leader's reading.
    let desired = admin_b.get_json(&b, "/api/desired").await;
    assert_eq!(desired["commit"], origin.head(), "{desired:#}");
    // So do its browsers: in the snapshot, then live, as the leader's readings reach B
    // over the bus (each poll moves `checked_at`).
    let mut browser = browser_socket(&b, &admin_b).await;
    let snapshot = next_json(&mut browser, Duration::from_secs(5)).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(
        snapshot["payload"]["desired"]["commit"],
        origin.head(),
        "{snapshot:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let live = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no desired_state on B's browser within 10 s"
        );
        let frame = next_json(&mut browser, left).await;
        if frame["type"] == "desired_state" {
            break frame;
        }
    };
    assert_eq!(
        live["payload"]["desired"]["commit"],
        origin.head(),
        "{live:#}"
    );
    drop(browser);

    // Login failures spread over both replicas run out at the configured count.
    for i in 0..LOGIN_FAILURES {
        let server = if i % 2 == 0 { &a } else { &b };
        assert_eq!(wrong_login(server).await, 401, "failure {i} is free");
    }
    assert_eq!(wrong_login(&b).await, 429);
    assert_eq!(wrong_login(&a).await, 429);
    // So do wrong agent tokens from one address (`AGENT_FAILURES_PER_MIN`; each replica
    // counting its own would allow twice as many).
    for i in 0..AGENT_FAILURES_PER_MIN {
        let server = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            wrong_agent_token(server).await,
            401,
            "agent failure {i} is free"
        );
    }
    assert_eq!(wrong_agent_token(&b).await, 429);
    assert_eq!(wrong_agent_token(&a).await, 429);

    // A notification is delivered once, with both replicas' workers running: an agent of
    // another version registers on A (whose hub sees it: the leader's watch queues it).
    let port = free_port();
    let rx = Receiver::start(port, 0).await;
    let target = add_webhook(&a, &admin_a, port).await;
    for event in ["agent_outdated", "deploy_failed"] {
        let r = admin_a
            .post(&a, "/api/notifications/rules")
            .json(&json!({"event": event, "target_ids": [target]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let old_token = create_host(&a, &admin_a, "old").await;
    let mut old = agent_socket(&a, &old_token).await.unwrap();
    let register = json!({"type": "register", "payload": {"hostname": "old",
        "host_type": "nixos", "agent_version": "0.0.1", "heartbeat_interval_s": 1}});
    old.send(tokio_tungstenite::tungstenite::Message::text(
        register.to_string(),
    ))
    .await
    .unwrap();
    rx.wait_event("agent_outdated", Duration::from_secs(20))
        .await;
    // Both delivery workers had several looks at the outbox meanwhile.
    sleep(Duration::from_secs(3)).await;
    let outdated = rx
        .got()
        .into_iter()
        .filter(|m| m["event"] == "agent_outdated")
        .count();
    assert_eq!(outdated, 1, "{:?}", rx.got());

    // A deploy runs on A (its switch takes a while); B refuses a second one.
    let checkout = root.join("alpha-checkout");
    origin.clone_to(&checkout);
    let config = root.join("alpha.toml");
    std::fs::write(
        &config,
        "[commands]\nswitch = [\"sh\", \"-c\", \"sleep 60\"]\n",
    )
    .unwrap();
    let mut agent = spawn_agent_with(
        &a,
        "alpha",
        &token,
        &root.join("alpha-state"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--repo-dir",
            checkout.to_str().unwrap(),
            "--branch",
            "main",
        ],
    );
    open_pr(gh, (&admin_a, &a), (&admin_b, &b), (&admin_a, &a, "alpha")).await;
    let (status, reply) = deploy(&admin_a, &a).await;
    assert_eq!(status, 202, "{reply}");
    let job = reply["job_id"].as_str().unwrap().to_owned();
    wait_for("switching on alpha", Duration::from_secs(30), async || {
        admin_a.get_json(&a, &format!("/api/deploy/{job}")).await["phase"] == "switching"
    })
    .await;
    let (status, reply) = deploy(&admin_b, &b).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["code"], "deploy_running", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains(&job), "{reply}");

    // kill -9 A: B leads within a lease TTL and a renewal, polls GitHub, and takes the
    // deploy over (marked interrupted: it was rolling out).
    let killed = Instant::now();
    kill_child(&mut a.take_child().unwrap(), "-KILL");
    kill_child(&mut agent, "-KILL");
    wait_for("B leads", Duration::from_secs(10), async || leading(&b)).await;
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(LEASE_TTL_S * 2 + 2), "{took:?}");
    let mut end = Value::Null;
    wait_for(
        "the deploy taken over",
        Duration::from_secs(5),
        async || {
            end = admin_b.get_json(&b, &format!("/api/deploy/{job}")).await;
            end["active"] != true
        },
    )
    .await;
    assert!(
        end["message"].as_str().unwrap().starts_with("Interrupted"),
        "{end:#}"
    );
    assert_eq!(end["hosts"]["alpha"], "error", "it was mid-switch: {end:#}");
    let polls = polls_during(gh, 4).await;
    assert!(
        (2..=6).contains(&polls),
        "{polls} head reads in 4 s after the takeover"
    );
    // B, the leader now, reports the interrupted deploy, once.
    rx.wait_event("deploy_failed", Duration::from_secs(20))
        .await;
    sleep(Duration::from_secs(2)).await;
    let failed = rx
        .got()
        .into_iter()
        .filter(|m| m["event"] == "deploy_failed")
        .count();
    assert_eq!(failed, 1, "{:?}", rx.got());
    // The slot is free again (the PR was merged, so it is refused for that, not as busy).
    let (status, reply) = deploy(&admin_b, &b).await;
    assert_eq!(status, 409, "{reply}");
    assert_ne!(reply["code"], "deploy_running", "{reply}");
    drop(b);
}

/// GitHub opens PR 5 (the lock update); returns once `host` is online (read on the replica
/// given with it) and both replicas show the PR.
async fn open_pr(
    gh: &FakeGithub,
    (admin_a, a): (&Session, &Server),
    (admin_b, b): (&Session, &Server),
    (admin, server, id): (&Session, &Server, &str),
) {
    let r = reqwest::Client::new()
        .post(gh.url("/_control/pr"))
        .json(
            &json!({"number": 5, "title": "flake.lock: update", "labels": ["dependencies"],
                      "head": "update-flake-lock", "mergeable": true}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_for(
        &format!("{id} online and the PR seen on both"),
        Duration::from_secs(30),
        async || {
            let host = host(admin, server, id).await;
            let pr_a = admin_a.get_json(a, "/api/pending-pr").await;
            let pr_b = admin_b.get_json(b, "/api/pending-pr").await;
            host["online"] == true && pr_a["number"] == 5 && pr_b["number"] == 5
        },
    )
    .await;
}

async fn host(admin: &Session, server: &Server, id: &str) -> Value {
    let hosts = admin.get_json(server, "/api/hosts").await;
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn deploy(admin: &Session, server: &Server) -> (u16, Value) {
    let r = admin
        .post(server, "/api/deploy")
        .json(&json!({"pr_number": 5, "host_ids": ["alpha"]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A deploy that previews first runs on A, where it was started; its confirmation and its
/// cancel are asked through B's REST API, sent to A over the bus, and answered as A would.
#[tokio::test]
async fn a_deploy_waiting_on_one_replica_is_cancelled_and_confirmed_through_the_other() {
    if on_postgres() {
        eprintln!("note: leader.rs ran in the first pass (it is always on PostgreSQL)");
        return;
    }
    let Some(nixdeck_core::storage::testing::TestBackend::Postgres(pg)) =
        nixdeck_core::storage::testing::TestBackend::postgres()
    else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let origin = Origin::new(root, &[("flake.lock", "{\"version\":7}\n")]);
    let head = origin.push_branch(
        "update-flake-lock",
        &[("flake.lock", "{\"version\":7,\"v\":2}\n")],
        "flake.lock: update nixpkgs",
    );
    let shared = Shared::start(root, &origin, &pg).await;
    let gh = &shared.gh;
    let env = shared.env(&[]);
    let a = Server::start_with(root, free_port(), &env).await;
    let admin_a = login(&a).await;
    let b = Server::start_with(root, free_port(), &env).await;
    let admin_b = login(&b).await;
    // The host's agent (played by the test, ending every order `ok`) is on A.
    let token = create_host(&a, &admin_a, "beta").await;
    let orders = Orders::default();
    let agent = fake_agent(registered_agent(&a, &token, "beta").await, "beta", orders);
    open_pr(gh, (&admin_a, &a), (&admin_b, &b), (&admin_b, &b, "beta")).await;
    let merges = async || {
        let state: Value = reqwest::get(gh.url("/_control/state"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state["requests"]["PUT /repos/acme/nixcfg/pulls/{number}/merge"]
            .as_u64()
            .unwrap_or(0)
    };
    let awaiting = async |job: &str| {
        let mut now = Value::Null;
        wait_for("the job awaits", Duration::from_secs(30), async || {
            now = admin_b.get_json(&b, &format!("/api/deploy/{job}")).await;
            now["phase"] == "awaiting_confirmation" || now["active"] != true
        })
        .await;
        assert_eq!(now["phase"], "awaiting_confirmation", "{now:#}");
    };
    let ended = async |job: &str| {
        let mut now = Value::Null;
        wait_for("the job ends", Duration::from_secs(30), async || {
            now = admin_b.get_json(&b, &format!("/api/deploy/{job}")).await;
            now["active"] != true
        })
        .await;
        now
    };
    let preview = async || {
        let r = admin_a
            .post(&a, "/api/deploy")
            .json(&json!({"pr_number": 5, "host_ids": ["beta"], "preview": true}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let reply: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 202, "{reply}");
        reply["job_id"].as_str().unwrap().to_owned()
    };
    let ask = async |job: &str, what: &str| {
        let r = admin_b
            .post(&b, &format!("/api/deploy/{job}/{what}"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };

    // Cancelled through B while it waits on A: it ends at once, nothing merged.
    let job = preview().await;
    awaiting(&job).await;
    let (status, reply) = ask(&job, "cancel").await;
    assert_eq!(status, 202, "{reply}");
    let end = ended(&job).await;
    assert_eq!(
        end["message"], "Cancelled by admin before the merge; nothing was merged.",
        "{end:#}"
    );
    // Asked again: it is over (B answers itself, as for any job that ended).
    let (status, reply) = ask(&job, "cancel").await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["code"], "finished", "{reply}");
    assert_eq!(merges().await, 0);

    // Confirmed through B: A merges the previewed head and rolls out, as the confirmer.
    let job = preview().await;
    awaiting(&job).await;
    let (status, reply) = ask(&job, "confirm").await;
    assert_eq!(status, 202, "{reply} (A: {})", a.log());
    assert_eq!(reply["job_id"], job.as_str());
    assert_eq!(merges().await, 1);
    assert_eq!(git(&origin.bare, &["rev-parse", "main^2"]), head);
    let end = ended(&job).await;
    assert_eq!(end["phase"], "done", "{end:#}");
    assert_eq!(end["hosts"]["beta"], "ok", "{end:#}");
    let audit = admin_b
        .get_json(&b, "/api/audit?action=deploy.confirm")
        .await;
    assert_eq!(audit[0]["result"], "ok", "{audit:#}");
    // Nothing left to confirm.
    let (status, reply) = ask(&job, "confirm").await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["code"], "not_awaiting", "{reply}");
    agent.abort();
}
