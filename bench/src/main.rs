//! `fleet-sim`: N agents and M browsers against a nixdeck server (or the raw relay), in
//! one process, so heartbeat-to-browser latency is measured on one clock. A benchmark:
//! it prints figures and never fails on them.

mod agents;
mod browsers;
mod clock;
mod setup;
mod stats;

use agents::{lock, Fleet};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use stats::{cpu_pct, machine_ticks, sample, Latency, ProcSample};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::time::sleep;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// The real server: login, host tokens or enrollment, session cookie and Origin.
    Nixdeck,
    /// `raw-relay`: no login, no tokens.
    Relay,
}

#[derive(Parser, Debug)]
#[command(about = "Simulate a fleet of agents and browsers against nixdeck or raw-relay")]
struct Args {
    /// The server's origin, e.g. http://127.0.0.1:3950.
    #[arg(long)]
    url: String,
    #[arg(long, value_enum, default_value = "nixdeck")]
    mode: Mode,
    #[arg(long, default_value_t = 100)]
    agents: usize,
    #[arg(long, default_value_t = 10)]
    browsers: usize,
    /// Heartbeat interval of every agent; sends are spread evenly over it.
    #[arg(long, default_value_t = 5.0)]
    interval_s: f64,
    /// The measured window, after the warm-up.
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Skipped before measuring: browsers' snapshots, first heartbeats, caches.
    #[arg(long, default_value_t = 10)]
    warmup_s: u64,
    #[arg(long, default_value = "admin")]
    username: String,
    #[arg(long, env = "NIXDECK_ADMIN_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Share of browser sockets (%) that stop reading once connected.
    #[arg(long, default_value_t = 0.0)]
    slow_browsers_pct: f64,
    /// The server process, to sample its CPU and RSS from /proc every second.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Host tokens by hostname (JSON), read and extended: reruns on the same database
    /// skip host creation and enrollment.
    #[arg(long)]
    tokens_file: Option<PathBuf>,
    /// Hosts without a stored token enroll with this token instead of being created
    /// through `POST /api/hosts` (much faster for thousands).
    #[arg(long, env = "NIXDECK_ENROLL_TOKEN", hide_env_values = true)]
    enroll_token: Option<String>,
    /// Hostnames are `<prefix>-00000` …
    #[arg(long, default_value = "sim")]
    host_prefix: String,
    /// Handshakes in flight while the fleet first connects.
    #[arg(long, default_value_t = 500)]
    ramp: usize,
    /// After the measured window, wait for the server to restart (all links drop) and
    /// time how long until every agent is registered again.
    #[arg(long)]
    storm: bool,
    /// Storm: this file is created once the fleet is steady (the harness then restarts
    /// the server).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[arg(long, default_value_t = 240)]
    storm_timeout_s: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Default)]
struct ServerFigures {
    cpu_pct: Option<f64>,
    rss_kib_start: Option<u64>,
    rss_kib_agents: Option<u64>,
    /// At the start of the measured window (browsers connected and warmed up).
    rss_kib_measure_start: Option<u64>,
    rss_kib_max: Option<u64>,
    rss_kib_end: Option<u64>,
    /// (RSS with the fleet connected - RSS before) / agents.
    kib_per_agent: Option<f64>,
}

#[derive(Serialize)]
struct Storm {
    agents_back: usize,
    /// From the first dropped link to the first and to the last new registration.
    first_back_s: Option<f64>,
    all_back_s: Option<f64>,
    p50_s: Option<f64>,
    p90_s: Option<f64>,
    p99_s: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    mode: Mode,
    agents: usize,
    browsers: usize,
    slow_browsers: usize,
    interval_s: f64,
    warmup_s: u64,
    duration_s: u64,
    ramp_s: f64,
    agents_registered: usize,
    failed_attempts: u64,
    link_drops: u64,
    heartbeats_per_s: f64,
    /// Heartbeat events read by the browsers that read (all of them together).
    events_per_s: f64,
    events_per_s_per_browser: f64,
    events_per_s_slowest_browser: f64,
    /// events read / (heartbeats sent × reading browsers): 1.0 when nothing is lost.
    delivery: f64,
    latency: Latency,
    /// Until every browser had its socket open (snapshots included).
    browsers_connected_s: f64,
    browser_connects: u64,
    browser_drops: u64,
    browser_drops_measured: u64,
    /// Closed by the server with 1013: the browser fell more than the ring behind.
    browser_lag_closes: u64,
    snapshot_bytes: usize,
    snapshot_ms_max: f64,
    server: ServerFigures,
    sim_cpu_pct: Option<f64>,
    machine_busy_pct: Option<f64>,
    storm: Option<Storm>,
}

fn raise_fd_limit() {
    // Every agent is a socket; the default soft limit (often 1024) is far too low.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur
}

fn say(msg: impl AsRef<str>) {
    eprintln!(
        "[fleet-sim {:7.1}s] {}",
        clock::now_ms() / 1000.0,
        msg.as_ref()
    );
}

#[tokio::main]
async fn main() -> Result<(), setup::Error> {
    let args = Args::parse();
    clock::now_ms(); // start the process clock
    raise_fd_limit();
    let wanted = (args.agents + args.browsers + 64) as u64;
    if fd_limit() < wanted {
        say(format!(
            "warning: open-file limit {} < {wanted}; run `ulimit -n {wanted}` first",
            fd_limit()
        ));
    }
    let base = args.url.trim_end_matches('/').to_owned();
    let ws_base = base.replacen("http", "ws", 1);
    let http = reqwest::Client::new();

    // --- tokens and session
    let names: Vec<String> = (0..args.agents)
        .map(|i| agents::hostname(&args.host_prefix, i))
        .collect();
    let mut tokens = args
        .tokens_file
        .as_deref()
        .map(setup::load_tokens)
        .unwrap_or_default();
    let mut session = None;
    if args.mode == Mode::Nixdeck {
        let password = args
            .password
            .as_deref()
            .ok_or("--password (or NIXDECK_ADMIN_PASSWORD) is needed")?;
        let s = setup::login(&http, &base, &args.username, password).await?;
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !tokens.contains_key(*n))
            .cloned()
            .collect();
        if !missing.is_empty() && args.enroll_token.is_none() {
            say(format!("creating {} hosts through the API", missing.len()));
            let t0 = Instant::now();
            let created = setup::create_hosts(&http, &base, &s, missing).await?;
            say(format!("created in {:.1}s", t0.elapsed().as_secs_f64()));
            tokens.extend(created);
            save(&args, &tokens)?;
        }
        session = Some(s);
    }

    // --- agents
    let server_start = args.server_pid.and_then(|p| sample(Some(p)));
    let fleet = Arc::new(Fleet::new(
        format!("{ws_base}/ws/agent"),
        args.agents,
        Duration::from_secs_f64(args.interval_s),
        args.ramp,
    ));
    let t_ramp = Instant::now();
    let mut agent_tasks = Vec::with_capacity(args.agents);
    for (i, name) in names.iter().enumerate() {
        let token = match (args.mode, tokens.get(name), &args.enroll_token) {
            (Mode::Relay, _, _) => "relay".to_owned(),
            (_, Some(t), _) => t.clone(),
            (_, None, Some(enroll)) => enroll.clone(),
            (_, None, None) => unreachable!("hosts without a token were created above"),
        };
        agent_tasks.push(tokio::spawn(agents::run(
            fleet.clone(),
            i,
            name.clone(),
            token,
        )));
    }
    let ramp_deadline = Instant::now() + Duration::from_secs(60 + args.agents as u64 / 20);
    let mut last_say = Instant::now();
    while fleet.registered.load(Ordering::Relaxed) < args.agents && Instant::now() < ramp_deadline {
        sleep(Duration::from_millis(100)).await;
        if last_say.elapsed() >= Duration::from_secs(5) {
            last_say = Instant::now();
            say(format!(
                "agents registered: {}/{} (failed attempts {})",
                fleet.registered.load(Ordering::Relaxed),
                args.agents,
                fleet.failed_attempts.load(Ordering::Relaxed)
            ));
        }
    }
    let ramp_s = t_ramp.elapsed().as_secs_f64();
    say(format!(
        "{}/{} agents registered in {ramp_s:.1}s",
        fleet.registered.load(Ordering::Relaxed),
        args.agents
    ));
    tokens.extend(std::mem::take(&mut *lock(&fleet.new_tokens)));
    save(&args, &tokens)?;
    // Let the connects' garbage settle before reading the fleet's memory.
    sleep(Duration::from_secs(3)).await;
    let server_agents = args.server_pid.and_then(|p| sample(Some(p)));

    // --- browsers
    let slow_browsers = ((args.browsers as f64 * args.slow_browsers_pct / 100.0).round() as usize)
        .min(args.browsers);
    let target = Arc::new(browsers::Target {
        ws_url: format!("{ws_base}/ws"),
        origin: session.as_ref().map(|_| base.clone()),
        cookie: session.as_ref().map(|s| s.cookie.clone()),
        connected: Default::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut browser_tasks = Vec::with_capacity(args.browsers);
    for b in 0..args.browsers {
        // The last ones are the slow ones.
        let slow = b >= args.browsers - slow_browsers;
        let (target, stop) = (target.clone(), stop_rx.clone());
        browser_tasks.push(tokio::spawn(async move {
            browsers::run(&target, slow, stop).await
        }));
    }
    let t_browsers = Instant::now();
    let deadline = t_browsers + Duration::from_secs(120);
    while target.connected.load(Ordering::Relaxed) < args.browsers && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    let browsers_connected_s = t_browsers.elapsed().as_secs_f64();
    say(format!(
        "{}/{} browsers connected ({slow_browsers} slow); warming up {}s",
        target.connected.load(Ordering::Relaxed),
        args.browsers,
        args.warmup_s
    ));
    sleep(Duration::from_secs(args.warmup_s)).await;

    // --- measured window
    let mut samples: Vec<(Option<ProcSample>, Option<ProcSample>)> = Vec::new();
    let machine0 = machine_ticks();
    let sent0 = fleet.sent_measured.load(Ordering::Relaxed);
    let t_measure = Instant::now();
    clock::set_measuring(true);
    say(format!("measuring {}s", args.duration_s));
    let end = t_measure + Duration::from_secs(args.duration_s);
    samples.push((args.server_pid.and_then(|p| sample(Some(p))), sample(None)));
    while Instant::now() < end {
        sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        samples.push((args.server_pid.and_then(|p| sample(Some(p))), sample(None)));
    }
    clock::set_measuring(false);
    let window = t_measure.elapsed().as_secs_f64();
    let machine1 = machine_ticks();
    let sent = fleet.sent_measured.load(Ordering::Relaxed) - sent0;

    // --- storm
    let storm = if args.storm {
        Some(storm(&args, &fleet).await?)
    } else {
        None
    };

    // --- collect
    stop_tx.send_replace(true);
    let mut outcomes = Vec::new();
    for task in browser_tasks {
        outcomes.push(task.await?);
    }
    for task in &agent_tasks {
        task.abort();
    }
    tokens.extend(std::mem::take(&mut *lock(&fleet.new_tokens)));
    save(&args, &tokens)?;

    let all_samples: Vec<f32> = outcomes
        .iter_mut()
        .flat_map(|o| std::mem::take(&mut o.samples))
        .collect();
    let reading: Vec<&browsers::Outcome> = outcomes.iter().filter(|o| !o.slow).collect();
    let events: u64 = reading.iter().map(|o| o.events).sum();
    let slowest = reading.iter().map(|o| o.events).min().unwrap_or(0);
    let snapshot_ms_max = outcomes
        .iter()
        .flat_map(|o| o.snapshot_ms.iter().copied())
        .fold(0.0, f64::max);
    let server = |i: usize| samples.get(i).and_then(|s| s.0);
    let (first, last) = (server(0), server(samples.len().saturating_sub(1)));
    let me = |i: usize| samples.get(i).and_then(|s| s.1);
    let report = Report {
        mode: args.mode,
        agents: args.agents,
        browsers: args.browsers,
        slow_browsers,
        interval_s: args.interval_s,
        warmup_s: args.warmup_s,
        duration_s: args.duration_s,
        ramp_s,
        agents_registered: fleet.registered.load(Ordering::Relaxed),
        failed_attempts: fleet.failed_attempts.load(Ordering::Relaxed),
        link_drops: fleet.drops.load(Ordering::Relaxed),
        heartbeats_per_s: sent as f64 / window,
        events_per_s: events as f64 / window,
        events_per_s_per_browser: events as f64 / window / reading.len().max(1) as f64,
        events_per_s_slowest_browser: slowest as f64 / window,
        delivery: if sent == 0 || reading.is_empty() {
            0.0
        } else {
            events as f64 / (sent as f64 * reading.len() as f64)
        },
        latency: Latency::of(all_samples),
        browsers_connected_s,
        browser_connects: outcomes.iter().map(|o| o.connects).sum(),
        browser_drops: outcomes.iter().map(|o| o.drops).sum(),
        browser_drops_measured: outcomes.iter().map(|o| o.drops_measured).sum(),
        browser_lag_closes: outcomes.iter().map(|o| o.lag_closes).sum(),
        snapshot_bytes: outcomes.iter().map(|o| o.snapshot_bytes).max().unwrap_or(0),
        snapshot_ms_max,
        server: ServerFigures {
            cpu_pct: first.zip(last).map(|(a, b)| cpu_pct(&a, &b)),
            rss_kib_start: server_start.map(|s| s.rss_kib),
            rss_kib_agents: server_agents.map(|s| s.rss_kib),
            rss_kib_measure_start: first.map(|s| s.rss_kib),
            rss_kib_max: samples.iter().filter_map(|s| s.0).map(|s| s.rss_kib).max(),
            rss_kib_end: last.map(|s| s.rss_kib),
            kib_per_agent: server_start
                .zip(server_agents)
                .map(|(a, b)| (b.rss_kib as f64 - a.rss_kib as f64) / args.agents.max(1) as f64),
        },
        sim_cpu_pct: me(0)
            .zip(me(samples.len().saturating_sub(1)))
            .map(|(a, b)| cpu_pct(&a, &b)),
        machine_busy_pct: machine0
            .zip(machine1)
            .map(|((b0, t0), (b1, t1))| (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * 100.0),
        storm,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

fn save(args: &Args, tokens: &setup::Tokens) -> Result<(), setup::Error> {
    match &args.tokens_file {
        Some(path) => setup::save_tokens(path, tokens),
        None => Ok(()),
    }
}

/// The fleet is steady: signal the harness, wait for the links to drop, then time the
/// re-registrations.
async fn storm(args: &Args, fleet: &Fleet) -> Result<Storm, setup::Error> {
    fleet.storm_armed.store(true, Ordering::Relaxed);
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"ready\n")?;
    }
    say("storm: steady; waiting for the server to restart");
    let deadline = Instant::now() + Duration::from_secs(args.storm_timeout_s);
    let drop_ms = loop {
        if let Some(t) = *lock(&fleet.first_drop_ms) {
            break t;
        }
        if Instant::now() > deadline {
            return Err("storm: no link dropped; was the server restarted?".into());
        }
        sleep(Duration::from_millis(20)).await;
    };
    say("storm: links dropping; timing re-registrations");
    let back_times = || -> Vec<f64> {
        fleet
            .registered_at
            .iter()
            .filter_map(|m| *lock(m))
            .filter(|&t| t > drop_ms)
            .map(|t| (t - drop_ms) / 1000.0)
            .collect()
    };
    let mut last_say = Instant::now();
    while back_times().len() < args.agents && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
        if last_say.elapsed() >= Duration::from_secs(5) {
            last_say = Instant::now();
            say(format!(
                "storm: {}/{} back",
                back_times().len(),
                args.agents
            ));
        }
    }
    let back = back_times();
    let lat = Latency::of(back.iter().map(|&s| s as f32).collect());
    let all = back.len() == args.agents;
    Ok(Storm {
        agents_back: back.len(),
        first_back_s: back.iter().copied().reduce(f64::min),
        all_back_s: all.then_some(lat.max_ms),
        p50_s: (!back.is_empty()).then_some(lat.p50_ms),
        p90_s: (!back.is_empty()).then_some(lat.p90_ms),
        p99_s: (!back.is_empty()).then_some(lat.p99_ms),
    })
}

fn print_human(r: &Report) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
    println!(
        "mode {:?}: {} agents (registered {}, ramp {:.1}s), {} browsers ({} slow), interval {}s, measured {}s after {}s warm-up",
        r.mode, r.agents, r.agents_registered, r.ramp_s, r.browsers, r.slow_browsers,
        r.interval_s, r.duration_s, r.warmup_s
    );
    println!(
        "heartbeats sent {:.0}/s; events read {:.0}/s ({:.0}/s per browser, slowest {:.0}/s; delivery {:.3})",
        r.heartbeats_per_s, r.events_per_s, r.events_per_s_per_browser,
        r.events_per_s_slowest_browser, r.delivery
    );
    let l = &r.latency;
    println!(
        "latency over {} events: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.samples, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    );
    println!(
        "browsers: all connected after {:.1}s, connects {}, dropped {} ({} in the window, {} for lagging), snapshot {} B (slowest {:.0} ms)",
        r.browsers_connected_s, r.browser_connects, r.browser_drops, r.browser_drops_measured,
        r.browser_lag_closes, r.snapshot_bytes, r.snapshot_ms_max
    );
    println!(
        "agents: failed attempts {}, link drops {}",
        r.failed_attempts, r.link_drops
    );
    let s = &r.server;
    println!(
        "server: CPU {} of one core; RSS start {} KiB, with agents {} KiB ({} per agent), max {} KiB, end {} KiB",
        opt(s.cpu_pct, "%"),
        s.rss_kib_start.map_or("-".into(), |v| v.to_string()),
        s.rss_kib_agents.map_or("-".into(), |v| v.to_string()),
        opt(s.kib_per_agent, " KiB"),
        s.rss_kib_max.map_or("-".into(), |v| v.to_string()),
        s.rss_kib_end.map_or("-".into(), |v| v.to_string()),
    );
    println!(
        "fleet-sim CPU {} of one core; machine busy {}",
        opt(r.sim_cpu_pct, "%"),
        opt(r.machine_busy_pct, "%")
    );
    if let Some(st) = &r.storm {
        println!(
            "storm: {}/{} back; first {} , p50 {}, p90 {}, p99 {}, all {}",
            st.agents_back,
            r.agents,
            opt(st.first_back_s, "s"),
            opt(st.p50_s, "s"),
            opt(st.p90_s, "s"),
            opt(st.p99_s, "s"),
            opt(st.all_back_s, "s")
        );
    }
}
