//! The end-to-end benchmark figures (docs/BENCHMARKS.md) that need the real server and agent, not a simulator:
//! P4 (SSR of the dashboard with 1 000 hosts), P6 (one command printing 100 000 lines,
//! agent → database → browser) and P7 (an idle agent's memory and CPU). Benchmarks, not
//! tests: they print medians and percentiles and never fail on timing.
//!
//! `cargo bench -p nixdeck --bench figures` (release builds of both binaries).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn proc_stat(pid: u32) -> (u64, u64) {
    // utime + stime in clock ticks, and RSS in kB.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

fn clock_ticks() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(100.0)
}

/// P4: GET / (SSR, `SsrMode::Async`) with 1 000 hosts in the fleet.
async fn ssr(server: &Server, admin: &Admin) {
    for i in 0..1000 {
        create_host(server, admin, &format!("ssr-{i:04}")).await;
    }
    let mut times = Vec::new();
    let mut bytes = 0;
    for round in 0..220 {
        let t = Instant::now();
        let body = admin.get_text(server, "/").await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(body.contains("ssr-0999"), "the snapshot holds every host");
        assert!(
            body.contains(r#"data-host-id="ssr-0000""#),
            "the first rows are rendered"
        );
        bytes = body.len();
        if round >= 20 {
            times.push(ms); // the first rounds warm caches
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "P4 SSR, 1000 hosts: {} pages, {} B each; p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        bytes,
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99),
        times[times.len() - 1]
    );
    // Login → page HTML (no browser: hydration is measured by the Playwright bench).
    let mut logins = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        login(server).await.get_text(server, "/").await;
        logins.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    logins.sort_by(f64::total_cmp);
    println!(
        "P4 login (Argon2id) + SSR page: median {:.0} ms, max {:.0} ms",
        percentile(&logins, 0.5),
        logins[logins.len() - 1]
    );
}

/// P6: `seq 1 100000` on a real agent; lines counted in order at a browser socket.
async fn output(server: &Server, admin: &Admin, dir: &std::path::Path) {
    const LINES: u64 = 100_000;
    let token = create_host(server, admin, "printer").await;
    let config = dir.join("printer.toml");
    std::fs::write(
        &config,
        format!("[commands]\ntest = [\"seq\", \"1\", \"{LINES}\"]\n"),
    )
    .unwrap();
    let mut agent = spawn_agent_with(
        server,
        "printer",
        &token,
        &dir.join("printer-state"),
        &["--config", config.to_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hosts = admin.get_json(server, "/api/hosts").await;
        if hosts
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == "printer" && h["online"] == true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "agent did not come online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = browser_socket(server, admin).await;
    let t = Instant::now();
    let r = admin
        .post(server, "/api/hosts/printer/commands")
        .json(&json!({"command": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let command_id = r.json::<Value>().await.unwrap()["command_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut seen, mut in_order, mut first_at) = (0u64, true, None);
    while seen < LINES {
        let v = next_json(&mut ws, Duration::from_secs(60)).await;
        if v["type"] == "command_output" && v["payload"]["command_id"] == command_id.as_str() {
            seen += 1;
            first_at.get_or_insert_with(|| t.elapsed());
            in_order &= v["payload"]["seq"].as_u64() == Some(seen)
                && v["payload"]["line"].as_str() == Some(&seen.to_string());
        }
    }
    let total = t.elapsed();
    let log = admin
        .get_text(server, &format!("/api/commands/{command_id}/log"))
        .await;
    let stored = log.lines().count();
    let streaming = total - first_at.unwrap_or_default();
    println!(
        "P6 output: {seen} lines at the browser in {:.2} s from the click ({:.0} lines/s; {:.0} lines/s from the first line), in order: {in_order}, stored: {stored}",
        total.as_secs_f64(),
        seen as f64 / total.as_secs_f64(),
        seen as f64 / streaming.as_secs_f64()
    );
    kill_child(&mut agent, "-TERM");
}

/// P7: an idle agent at 5 s heartbeats: RSS and CPU over a minute.
async fn agent_idle(server: &Server, admin: &Admin, dir: &std::path::Path) {
    let token = create_host(server, admin, "idler").await;
    let mut agent = spawn_agent(server, "idler", &token, &dir.join("idler-state"));
    let pid = agent.id();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (t0, _) = proc_stat(pid);
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (t1, rss) = proc_stat(pid);
    let cpu = (t1 - t0) as f64 / clock_ticks() / wall.elapsed().as_secs_f64() * 100.0;
    println!("P7 agent idle (5 s heartbeats, 60 s): RSS {rss} kB, CPU {cpu:.3} % of one core");
    kill_child(&mut agent, "-TERM");
}

#[tokio::main]
async fn main() {
    if std::env::var_os("NIXDECK_AGENT_BIN").is_none() {
        // The release agent, next to this release server; built every time (a no-op when
        // current), or P7 could measure a stale agent.
        let bin =
            std::path::Path::new(env!("CARGO_BIN_EXE_nixdeck")).with_file_name("nixdeck-agent");
        let ok = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["build", "--release", "-p", "nixdeck-agent"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "building the release agent");
        std::env::set_var("NIXDECK_AGENT_BIN", &bin);
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        free_port(),
        &[("NIXDECK_HEARTBEAT_INTERVAL_S", "5"), ("RUST_LOG", "warn")],
    )
    .await;
    let admin = login(&server).await;
    println!(
        "nixdeck figures: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // FIGURES=p6,p4 runs only some of them.
    let only = std::env::var("FIGURES").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|f| f == name);
    if wanted("p6") {
        output(&server, &admin, dir.path()).await;
    }
    if wanted("p7") {
        agent_idle(&server, &admin, dir.path()).await;
    }
    if wanted("p4") {
        ssr(&server, &admin).await;
    }
    if let Some(pid) = server.pid() {
        let (_, rss) = proc_stat(pid);
        println!("server RSS after the run: {rss} kB");
    }
}
