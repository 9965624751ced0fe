//! A flood of parallel wrong logins against the real server: memory stays bounded, no more
//! guesses are checked than serial attempts would get, the dashboard keeps answering, and
//! the right password works again once the flood's delay has passed.

mod common;

use common::{login, Server, PASSWORD};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// Parallel wrong logins for `admin`.
const FLOOD: usize = 500;
/// Free failures per (account, source) before delays start (the server's default of
/// `NIXDECK_LOGIN_FAILURES_PER_MIN`).
const FREE_GUESSES: usize = 5;
/// The bound this test holds the server's resident memory to during the flood. Before the
/// fix, 400 parallel logins took it to 6.9 GB (each Argon2 check holds ~19 MiB, and the
/// blocking pool ran hundreds at once); now at most one check per core runs.
const RSS_BOUND_KB: u64 = 256 * 1024;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_login_flood_cannot_sink_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let pid = server.pid().unwrap();
    // An operator already logged in, watching the dashboard during the flood.
    let admin = login(&server).await;

    let flood_client = reqwest::Client::new();
    let url = server.url("/api/login");
    let started = Instant::now();
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let (client, url) = (flood_client.clone(), url.clone());
            tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .json(&json!({"username": "admin", "password": format!("wrong-guess-{i:04}")}))
                    .send()
                    .await
                    .expect("an answer");
                let retry_after = resp.headers().contains_key("retry-after");
                (resp.status().as_u16(), retry_after)
            })
        })
        .collect();

    // Meanwhile: memory, /healthz and the dashboard page.
    let mut peak_kb = rss_kb(pid);
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while !flood.iter().all(|t| t.is_finished()) {
        peak_kb = peak_kb.max(rss_kb(pid));
        for path in ["/healthz", "/"] {
            let t = Instant::now();
            let resp = admin.http.get(server.url(path)).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path} during the flood");
            resp.bytes().await.unwrap();
            slowest = slowest.max(t.elapsed());
            probes += 1;
        }
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for t in flood {
        let (status, retry_after) = t.await.unwrap();
        if status == 429 || status == 503 {
            assert!(retry_after, "a {status} says when to come back");
        }
        *statuses.entry(status).or_default() += 1;
    }
    let flood_time = started.elapsed();
    peak_kb = peak_kb.max(rss_kb(pid));
    println!(
        "{FLOOD} parallel wrong logins in {flood_time:?}: {statuses:?}; peak RSS {} MiB; \
         slowest of {probes} probes {slowest:?}",
        peak_kb / 1024
    );
    assert!(
        peak_kb < RSS_BOUND_KB,
        "peak RSS {peak_kb} kB over {RSS_BOUND_KB} kB"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz and / answered within 1 s during the flood (slowest {slowest:?})"
    );
    assert_eq!(statuses.get(&200), None, "no wrong password got in");
    let unauthorized = statuses.get(&401).copied().unwrap_or(0);
    let refused = FLOOD - unauthorized;

    // Guesses checked: the audit log has a `login` row per checked password. The first
    // FREE_GUESSES are free; after them the pair waits 2 s, 4 s, … between guesses.
    let checked = checked_guesses(&admin, &server).await;
    let windows = [2, 6, 14, 30]
        .iter()
        .filter(|s| flood_time > Duration::from_secs(**s))
        .count();
    assert!(
        checked <= FREE_GUESSES + windows,
        "{checked} guesses checked in {flood_time:?}"
    );
    assert_eq!(checked, unauthorized, "each 401 was a checked guess");

    // The refused attempts are in the audit log as a tally, not a row each.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = admin
            .get_json(&server, "/api/audit?action=login.refused&limit=1000")
            .await;
        let rows = rows.as_array().unwrap();
        let tallied: usize = rows
            .iter()
            .filter_map(|r| r["detail"].as_str())
            .filter_map(|d| d.split_whitespace().next())
            .filter_map(|n| n.parse::<usize>().ok())
            .sum();
        if tallied == refused {
            assert!(
                rows.len() <= 4,
                "{} rows for {refused} refusals",
                rows.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{tallied} of {refused} refusals tallied"
        );
        sleep(Duration::from_millis(500)).await;
    }

    // The right password works once the pair's delay has passed (the 429 says when).
    let fresh = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = fresh
            .post(server.url("/api/login"))
            .json(&json!({"username": "admin", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => break,
            429 | 503 => {
                let wait: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(Instant::now() < deadline, "still refused after 60 s");
                sleep(Duration::from_secs(wait)).await;
            }
            other => panic!("the right password got {other}"),
        }
    }
}

/// Checked wrong passwords for `admin` according to the audit log.
async fn checked_guesses(admin: &common::Admin, server: &Server) -> usize {
    let rows: Value = admin
        .get_json(server, "/api/audit?action=login&actor=admin&limit=1000")
        .await;
    rows.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"] == "unauthorized")
        .count()
}
