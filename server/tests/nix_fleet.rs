//! Nix-native commands through the whole stack: the real server, the real agent binary and
//! real Nix (Debian's `nix-bin`), with the offline test flake of `testkit::nix` as the
//! host's checkout and a profile in a temp dir standing in for the system profile. Every
//! step goes through the REST API as a script would.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;
use testkit::client::Session;
use testkit::nix::{nix_env, require_nix, FlakeHost, TestFlake};
use tokio::time::{sleep, Instant};

const HOST: &str = "web-1";

/// One host: its flake checkout, profile, "booted system" link and agent.
struct Machine {
    root: PathBuf,
    flake: TestFlake,
    profile: PathBuf,
    booted: PathBuf,
    agent: Option<Child>,
}

impl Machine {
    fn new(root: &Path, hosts: &[FlakeHost]) -> Machine {
        require_nix();
        let flake = TestFlake::new(&root.join("repo"), hosts);
        std::fs::create_dir_all(root.join("profiles")).unwrap();
        Machine {
            root: root.to_owned(),
            flake,
            profile: root.join("profiles/system"),
            booted: root.join("booted-system"),
            agent: None,
        }
    }

    fn start(&mut self, server: &Server, token: &str) {
        let profile = self.profile.display().to_string();
        let booted = self.booted.display().to_string();
        let repo = self.flake.dir.display().to_string();
        // The agent passes its environment on to nix: the test's Nix settings.
        self.agent = Some(spawn_agent_env(
            server,
            HOST,
            token,
            &self.root.join("state"),
            &[
                "--repo-dir",
                &repo,
                "--system-profile",
                &profile,
                "--current-system",
                &profile,
                "--booted-system",
                &booted,
                "--confirm-timeout-s",
                "10",
            ],
            &nix_env(),
        ));
    }

    fn boot_from(&self, store_path: &str) {
        let _ = std::fs::remove_file(&self.booted);
        std::os::unix::fs::symlink(store_path, &self.booted).unwrap();
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.root.join("state.log")).unwrap_or_default()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            kill_child(&mut child, "-TERM");
        }
    }
}

async fn host(server: &Server, admin: &Session) -> Value {
    let hosts = admin.get_json(server, "/api/hosts").await;
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == HOST)
        .cloned()
        .expect("the host is listed")
}

async fn wait_online(server: &Server, admin: &Session, machine: &Machine) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while host(server, admin).await["online"] != true {
        assert!(
            Instant::now() < deadline,
            "the agent did not come online:\n{}",
            machine.agent_log()
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a command through REST and waits for its end; answers `GET /api/commands/{id}`.
async fn run(server: &Server, admin: &Session, machine: &Machine, body: Value) -> (String, Value) {
    let resp = admin
        .post(server, &format!("/api/hosts/{HOST}/commands"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let accepted: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body} → {accepted}");
    let id = accepted["command_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let detail = admin.get_json(server, &format!("/api/commands/{id}")).await;
        if !matches!(detail["status"].as_str(), Some("queued" | "running")) {
            return (id, detail);
        }
        assert!(
            Instant::now() < deadline,
            "{body} did not finish: {detail}\n{}",
            machine.agent_log()
        );
        sleep(Duration::from_millis(100)).await;
    }
}

async fn log(server: &Server, admin: &Session, id: &str) -> String {
    admin
        .get_text(server, &format!("/api/commands/{id}/log"))
        .await
}

fn current(host: &Value) -> u64 {
    let gens = host["generations"].as_array().unwrap();
    let now: Vec<&Value> = gens.iter().filter(|g| g["current"] == true).collect();
    assert_eq!(now.len(), 1, "one current generation: {gens:?}");
    now[0]["number"].as_u64().unwrap()
}

/// Waits until the host's reported current generation is `n` (a `status` frame follows the
/// command's completion).
async fn wait_current(server: &Server, admin: &Session, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = host(server, admin).await;
        if h["generations"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["current"] == true && g["number"] == n))
        {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "generation {n} never current: {h}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

fn change<'a>(diff: &'a Value, name: &str) -> &'a Value {
    diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no change for {name} in {diff}"))
}

#[tokio::test]
async fn preview_switch_from_the_preview_and_rollback_through_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    let token = create_host(&server, &admin, HOST).await;
    let v1 = FlakeHost::new(HOST, "26.05.1")
        .package("openssl", "3.0.14")
        .package("curl", "8.1")
        .kernel("6.12.9");
    let mut machine = Machine::new(&dir.path().join("web-1"), std::slice::from_ref(&v1));
    machine.start(&server, &token);
    wait_online(&server, &admin, &machine).await;

    // A first switch: build, profile, activation, confirmed by the health gate.
    let (id, done) = run(&server, &admin, &machine, json!({"command": "switch"})).await;
    assert_eq!(
        done["status"],
        "ok",
        "{done}\n{}",
        log(&server, &admin, &id).await
    );
    assert_eq!(done["result"]["generation"], 1, "{done}");
    let first_path = done["result"]["store_path"].as_str().unwrap().to_owned();
    let switch_log = log(&server, &admin, &id).await;
    assert!(
        switch_log.contains("activating web-1 26.05.1 (switch)"),
        "{switch_log}"
    );
    let h = wait_current(&server, &admin, 1).await;
    assert_eq!(h["generations"][0]["store_path"], first_path.as_str());
    assert_eq!(h["reboot_needed"], false);
    machine.boot_from(&first_path);

    // The next version: openssl upgraded, zlib added, curl removed, a new kernel.
    let v2 = FlakeHost::new(HOST, "26.05.2")
        .package("openssl", "3.0.15")
        .package("zlib", "1.3")
        .kernel("6.12.10");
    machine.flake.commit(&[v2], "v2");
    let (preview_id, preview) = run(&server, &admin, &machine, json!({"command": "preview"})).await;
    assert_eq!(preview["status"], "ok", "{preview}");
    assert_eq!(preview["command"], "preview");
    let diff = &preview["result"]["diff"];
    let openssl = change(diff, "openssl");
    assert_eq!(
        (&openssl["old"], &openssl["new"], &openssl["kind"]),
        (&json!("3.0.14"), &json!("3.0.15"), &json!("upgraded"))
    );
    assert_eq!(change(diff, "zlib")["kind"], "added");
    assert_eq!(change(diff, "curl")["kind"], "removed");
    assert_eq!(diff["reboot_needed"], true, "{diff}");
    assert!(diff["closure_bytes_before"].as_u64().unwrap() > 0, "{diff}");
    let previewed = preview["result"]["store_path"].as_str().unwrap().to_owned();
    assert_ne!(previewed, first_path);
    // A preview activates nothing.
    assert_eq!(current(&host(&server, &admin).await), 1);

    // The checkout moves on; the switch from the preview still activates what was previewed.
    let v3 = FlakeHost::new(HOST, "26.05.3").package("openssl", "3.0.16");
    machine.flake.commit(&[v3], "v3");
    let (id, done) = run(
        &server,
        &admin,
        &machine,
        json!({"command": "switch", "preview_id": preview_id}),
    )
    .await;
    assert_eq!(
        done["status"],
        "ok",
        "{done}\n{}",
        log(&server, &admin, &id).await
    );
    assert_eq!(done["result"]["store_path"], previewed.as_str());
    assert_eq!(done["result"]["generation"], 2);
    assert!(log(&server, &admin, &id)
        .await
        .contains("activating web-1 26.05.2 (switch)"));
    let h = wait_current(&server, &admin, 2).await;
    assert_eq!(
        h["reboot_needed"], true,
        "booted 6.12.9, running 6.12.10: {h}"
    );
    let booted: Vec<&Value> = h["generations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["booted"] == true)
        .collect();
    assert_eq!(booted.len(), 1);
    assert_eq!(booted[0]["number"], 1);

    // Back to a chosen generation.
    let (_, done) = run(
        &server,
        &admin,
        &machine,
        json!({"command": "rollback", "generation": 1}),
    )
    .await;
    assert_eq!(done["status"], "ok", "{done}");
    assert_eq!(done["result"]["generation"], 1);
    let h = wait_current(&server, &admin, 1).await;
    assert_eq!(h["reboot_needed"], false, "{h}");

    // The results outlive the dashboard's restart.
    let mut server = server;
    server.stop();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    let again = admin
        .get_json(&server, &format!("/api/commands/{preview_id}"))
        .await;
    assert_eq!(again["result"], preview["result"]);
}

#[tokio::test]
async fn a_switch_that_fails_its_health_check_is_rolled_back_and_never_counted_as_ok() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let admin = login(&server).await;
    let token = create_host(&server, &admin, HOST).await;
    let mut machine = Machine::new(
        &dir.path().join("web-1"),
        &[FlakeHost::new(HOST, "26.05.1").package("openssl", "3.0.14")],
    );
    machine.start(&server, &token);
    wait_online(&server, &admin, &machine).await;
    let (_, done) = run(&server, &admin, &machine, json!({"command": "switch"})).await;
    assert_eq!(done["status"], "ok", "{done}");
    wait_current(&server, &admin, 1).await;

    // The next version ships a host test that fails: the gate must put generation 1 back.
    machine.flake.commit(
        &[FlakeHost::new(HOST, "26.05.2").package("openssl", "3.0.15")],
        "v2",
    );
    machine.flake.commit_file(
        &format!("hosts/{HOST}/tests/10-nginx.sh"),
        "#!/bin/sh\necho 'nginx does not answer' >&2\nexit 3\n",
        true,
        "a failing health check",
    );
    let (id, done) = run(&server, &admin, &machine, json!({"command": "switch"})).await;
    let text = log(&server, &admin, &id).await;
    assert_eq!(done["status"], "rolled_back", "{done}\n{text}");
    assert_eq!(done["result"]["generation"], 1, "{done}");
    assert!(text.contains("activating web-1 26.05.2 (switch)"), "{text}");
    assert!(text.contains("nginx does not answer"), "{text}");
    assert!(
        text.contains("activating web-1 26.05.1 (switch)"),
        "the old one is activated again: {text}"
    );
    let h = wait_current(&server, &admin, 1).await;
    assert_eq!(h["update_status"]["system"]["status"], "error", "{h}");

    // Counted as a failure: the history says so, and so does /metrics.
    let history = admin
        .get_json(&server, &format!("/api/hosts/{HOST}/commands?limit=1"))
        .await;
    assert_eq!(history[0]["status"], "rolled_back");
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("nixdeck_commands_ended_total{status=\"rolled_back\"} 1"),
        "{metrics}"
    );
}
