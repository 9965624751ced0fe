//! `fleet-sim`: N agents and M browsers against a nixdeck server (or the raw relay), or
//! against several replicas of one dashboard (`--url` repeated: agents and browsers spread
//! round-robin). Heartbeat-to-browser latency is measured on the machine's monotonic
//! clock, so a fleet too big for one process's open files runs as several processes
//! (`--shard P/N`, their windows aligned through `--sync-dir`), whose reports
//! `fleet-sim merge` combines. A benchmark: it prints figures and never fails on them.

mod agents;
mod browsers;
mod clock;
mod setup;
mod stats;

use agents::{lock, Fleet};
use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use stats::{cpu_pct, machine_ticks, sample, sample_all, sample_tree, Latency, ProcSample};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::time::sleep;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
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
    /// The server's origin, e.g. http://127.0.0.1:3950. Several replicas of one dashboard:
    /// repeat --url or separate them with commas; agent i and browser i use the (i mod n)th,
    /// each browser with a session of its own replica.
    #[arg(long, required = true, value_delimiter = ',')]
    url: Vec<String>,
    /// The agents' URLs, when they differ from `--url` (which then serves the browsers):
    /// like the real agent's `--url` list, every agent starts at the first and moves to the
    /// next whenever its link is lost (a failover: agents on replica A, browsers on B, kill
    /// A). Without it the agents use `--url`, agent i starting at the (i mod n)th and
    /// moving on likewise
    #[arg(long, value_delimiter = ',')]
    agent_url: Vec<String>,
    /// This process's part of the fleet, `P/N`: of `--agents` and `--browsers` (the whole
    /// fleet's), it runs those whose index is P modulo N. Hostnames are the fleet's, so
    /// the N processes together are one fleet
    #[arg(long, default_value = "0/1", value_parser = parse_shard)]
    shard: Shard,
    /// With `--shard P/N`: a directory the N processes share. Each writes when its agents
    /// are registered and its browsers connected, and all start the measured window at
    /// once, a warm-up after the last of them is ready, so that their counts add up
    #[arg(long)]
    sync_dir: Option<PathBuf>,
    /// Write the latency samples (f32, little-endian) here, for `fleet-sim merge`.
    #[arg(long)]
    samples_file: Option<PathBuf>,
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
    /// The server process, to sample its CPU and RSS from /proc every second; several
    /// (repeated or comma-separated): their sums
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// The database server's main process (PostgreSQL's postmaster), to sample the CPU of
    /// it and its children (one per connection) every second: `db_cpu_pct`
    #[arg(long)]
    db_pid: Option<u32>,
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
    /// the server); with `--shard P/N`, N > 1, the file is `<file>.P`.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[arg(long, default_value_t = 240)]
    storm_timeout_s: u64,
    /// Storm: once every agent is back, keep the fleet connected this long (the harness
    /// is still reading the dashboards: bench/failover_watch.py)
    #[arg(long, default_value_t = 0)]
    storm_hold_s: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    fn has(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let bad = || format!("`{s}` is not P/N with 0 <= P < N");
    let (p, n) = s.split_once('/').ok_or_else(bad)?;
    let (index, count) = (
        p.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if count == 0 || index >= count {
        return Err(bad());
    }
    Ok(Shard { index, count })
}

#[derive(Serialize, Deserialize, Default, Clone)]
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

#[derive(Serialize, Deserialize)]
struct Storm {
    agents_back: usize,
    /// The agents whose link dropped: the ones timed.
    #[serde(default)]
    agents_dropped: usize,
    /// The first dropped link (ms of the monotonic clock), and when each agent was back
    /// after it (s): what `fleet-sim merge` needs to time the whole fleet.
    #[serde(default)]
    first_drop_ms: f64,
    #[serde(default)]
    back_s: Vec<f64>,
    /// From the first dropped link to the first and to the last new registration.
    first_back_s: Option<f64>,
    all_back_s: Option<f64>,
    p50_s: Option<f64>,
    p90_s: Option<f64>,
    p99_s: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct Report {
    mode: Mode,
    /// `P/N` of `--shard`, or how many reports `fleet-sim merge` combined (`merged of N`).
    #[serde(default)]
    shard: String,
    #[serde(default)]
    urls: usize,
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
    /// The counts behind the rates, for `fleet-sim merge`: heartbeats sent and events read
    /// in the window, by this process's agents and browsers.
    #[serde(default)]
    sent: u64,
    #[serde(default)]
    events: u64,
    #[serde(default)]
    reading_browsers: usize,
    #[serde(default)]
    window_s: f64,
    #[serde(default)]
    samples_file: Option<PathBuf>,
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
    /// CPU of the database server and its connections (`--db-pid`), % of one core.
    #[serde(default)]
    db_cpu_pct: Option<f64>,
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

/// `http://h:p/` → `ws://h:p` (and https → wss).
fn ws_base(url: &str) -> String {
    url.trim().trim_end_matches('/').replacen("http", "ws", 1)
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

static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn say(msg: impl AsRef<str>) {
    eprintln!(
        "[fleet-sim {:7.1}s] {}",
        STARTED.get_or_init(Instant::now).elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

#[tokio::main]
async fn main() -> Result<(), setup::Error> {
    STARTED.get_or_init(Instant::now);
    // `fleet-sim merge [--json] REPORT.json…`: one report from those of the shards.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("merge") {
        return merge_main(&argv[2..]);
    }
    let args = Args::parse();
    raise_fd_limit();
    let shard = args.shard;
    // The fleet's indices this process runs (`--shard`); hostnames and URLs follow them.
    let my_agents: Vec<usize> = (0..args.agents).filter(|&i| shard.has(i)).collect();
    let my_browsers: Vec<usize> = (0..args.browsers).filter(|&b| shard.has(b)).collect();
    let wanted = (my_agents.len() + my_browsers.len() + 64) as u64;
    if fd_limit() < wanted {
        say(format!(
            "warning: open-file limit {} < {wanted}; run `ulimit -n {wanted}` first",
            fd_limit()
        ));
    }
    let bases: Vec<String> = args
        .url
        .iter()
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if bases.is_empty() {
        return Err("--url names no URL".into());
    }
    let ws_bases: Vec<String> = bases.iter().map(|b| ws_base(b)).collect();
    // Agent i starts at `agent_start(i)` of `agent_ws_urls` (see `--agent-url`).
    let own_agent_urls = !args.agent_url.is_empty();
    let agent_ws_urls: Arc<[String]> = if own_agent_urls {
        args.agent_url.iter().map(|u| ws_base(u)).collect()
    } else {
        ws_bases.clone()
    }
    .iter()
    .filter(|u| !u.is_empty())
    .map(|u| format!("{u}/ws/agent"))
    .collect();
    if agent_ws_urls.is_empty() {
        return Err("--agent-url names no URL".into());
    }
    let agent_start = |i: usize| {
        if own_agent_urls {
            0
        } else {
            i % agent_ws_urls.len()
        }
    };
    let base = bases[0].clone();
    let http = reqwest::Client::new();

    // --- tokens and sessions
    let names: Vec<String> = my_agents
        .iter()
        .map(|&i| agents::hostname(&args.host_prefix, i))
        .collect();
    let mut tokens = args
        .tokens_file
        .as_deref()
        .map(setup::load_tokens)
        .unwrap_or_default();
    // One session per replica: each browser signs in where it connects.
    let mut sessions: Vec<Option<setup::Session>> = vec![None; bases.len()];
    if args.mode == Mode::Nixdeck {
        let password = args
            .password
            .as_deref()
            .ok_or("--password (or NIXDECK_ADMIN_PASSWORD) is needed")?;
        for (session, b) in sessions.iter_mut().zip(&bases) {
            *session = Some(setup::login(&http, b, &args.username, password).await?);
        }
        let s = sessions[0].clone().expect("signed in above");
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
    }

    // --- agents
    let server_start = sample_all(&args.server_pid);
    let agent_count = my_agents.len();
    let fleet = Arc::new(Fleet::new(
        agent_count,
        Duration::from_secs_f64(args.interval_s),
        args.ramp,
    ));
    let t_ramp = Instant::now();
    let mut agent_tasks = Vec::with_capacity(agent_count);
    for ((i, name), &global) in names.iter().enumerate().zip(&my_agents) {
        let token = match (args.mode, tokens.get(name), &args.enroll_token) {
            (Mode::Relay, _, _) => "relay".to_owned(),
            (_, Some(t), _) => t.clone(),
            (_, None, Some(enroll)) => enroll.clone(),
            (_, None, None) => unreachable!("hosts without a token were created above"),
        };
        agent_tasks.push(tokio::spawn(agents::run(
            fleet.clone(),
            i,
            agent_ws_urls.clone(),
            agent_start(global),
            name.clone(),
            token,
        )));
    }
    let ramp_deadline = Instant::now() + Duration::from_secs(60 + agent_count as u64 / 20);
    let mut last_say = Instant::now();
    while fleet.registered.load(Ordering::Relaxed) < agent_count && Instant::now() < ramp_deadline {
        sleep(Duration::from_millis(100)).await;
        if last_say.elapsed() >= Duration::from_secs(5) {
            last_say = Instant::now();
            say(format!(
                "agents registered: {}/{} (failed attempts {})",
                fleet.registered.load(Ordering::Relaxed),
                agent_count,
                fleet.failed_attempts.load(Ordering::Relaxed)
            ));
        }
    }
    let ramp_s = t_ramp.elapsed().as_secs_f64();
    say(format!(
        "{}/{} agents registered in {ramp_s:.1}s",
        fleet.registered.load(Ordering::Relaxed),
        agent_count
    ));
    tokens.extend(std::mem::take(&mut *lock(&fleet.new_tokens)));
    save(&args, &tokens)?;
    // Let the connects' garbage settle before reading the fleet's memory.
    sleep(Duration::from_secs(3)).await;
    let server_agents = sample_all(&args.server_pid);

    // --- browsers
    // The fleet's last ones are the slow ones.
    let slow_total = ((args.browsers as f64 * args.slow_browsers_pct / 100.0).round() as usize)
        .min(args.browsers);
    let is_slow = |b: usize| b >= args.browsers - slow_total;
    let slow_browsers = my_browsers.iter().filter(|&&b| is_slow(b)).count();
    let targets: Vec<Arc<browsers::Target>> = ws_bases
        .iter()
        .zip(&bases)
        .zip(&sessions)
        .map(|((ws_base, base), session)| {
            Arc::new(browsers::Target {
                ws_url: format!("{ws_base}/ws"),
                origin: session.as_ref().map(|_| base.clone()),
                cookie: session.as_ref().map(|s| s.cookie.clone()),
                connected: Default::default(),
            })
        })
        .collect();
    let connected = || -> usize {
        targets
            .iter()
            .map(|t| t.connected.load(Ordering::Relaxed))
            .sum()
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut browser_tasks = Vec::with_capacity(my_browsers.len());
    for &b in &my_browsers {
        let slow = is_slow(b);
        let (target, stop) = (targets[b % targets.len()].clone(), stop_rx.clone());
        browser_tasks.push(tokio::spawn(async move {
            browsers::run(&target, slow, stop).await
        }));
    }
    let t_browsers = Instant::now();
    let deadline = t_browsers + Duration::from_secs(120);
    while connected() < my_browsers.len() && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    let browsers_connected_s = t_browsers.elapsed().as_secs_f64();
    say(format!(
        "{}/{} browsers connected ({slow_browsers} slow); warming up {}s",
        connected(),
        my_browsers.len(),
        args.warmup_s
    ));
    let start = window_start(&args).await?;
    sleep_until_ms(start).await;

    // --- measured window
    let mut samples: Vec<(Option<ProcSample>, Option<ProcSample>)> = Vec::new();
    let db_sample = || args.db_pid.and_then(sample_tree);
    let db_first = db_sample();
    let machine0 = machine_ticks();
    let sent0 = fleet.sent_measured.load(Ordering::Relaxed);
    let t_measure = Instant::now();
    clock::set_measuring(true);
    say(format!("measuring {}s", args.duration_s));
    // The window's end on the shared clock, so that all shards stop together too.
    let end_ms = start + args.duration_s as f64 * 1000.0;
    samples.push((sample_all(&args.server_pid), sample(None)));
    while clock::now_ms() < end_ms {
        let left = Duration::from_secs_f64(((end_ms - clock::now_ms()) / 1000.0).max(0.0));
        sleep(Duration::from_secs(1).min(left)).await;
        samples.push((sample_all(&args.server_pid), sample(None)));
    }
    let db_last = db_sample();
    clock::set_measuring(false);
    let window = t_measure.elapsed().as_secs_f64();
    let machine1 = machine_ticks();
    let sent = fleet.sent_measured.load(Ordering::Relaxed) - sent0;

    // --- storm
    let storm = if args.storm {
        let figures = storm(&args, &fleet, agent_count).await?;
        sleep(Duration::from_secs(args.storm_hold_s)).await;
        Some(figures)
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
    if let Some(path) = &args.samples_file {
        stats::write_samples(path, &all_samples)?;
    }
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
        shard: format!("{}/{}", shard.index, shard.count),
        urls: bases.len(),
        agents: agent_count,
        browsers: my_browsers.len(),
        slow_browsers,
        interval_s: args.interval_s,
        warmup_s: args.warmup_s,
        duration_s: args.duration_s,
        ramp_s,
        agents_registered: fleet.registered.load(Ordering::Relaxed),
        sent,
        events,
        reading_browsers: reading.len(),
        window_s: window,
        samples_file: args.samples_file.clone(),
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
                .map(|(a, b)| (b.rss_kib as f64 - a.rss_kib as f64) / agent_count.max(1) as f64),
        },
        db_cpu_pct: db_first.zip(db_last).map(|(a, b)| cpu_pct(&a, &b)),
        sim_cpu_pct: me(0)
            .zip(me(samples.len().saturating_sub(1)))
            .map(|(a, b)| cpu_pct(&a, &b)),
        machine_busy_pct: machine0
            .zip(machine1)
            .map(|((b0, t0), (b1, t1))| (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * 100.0),
        storm,
    };
    print_report(&report, args.json)
}

fn print_report(report: &Report, json: bool) -> Result<(), setup::Error> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_human(report);
    }
    Ok(())
}

/// When the measured window starts, on the shared clock: a warm-up from now, or with
/// `--sync-dir` and several shards, a warm-up after the last shard is ready.
async fn window_start(args: &Args) -> Result<f64, setup::Error> {
    let warmup_ms = args.warmup_s as f64 * 1000.0;
    let Some(dir) = args.sync_dir.as_deref().filter(|_| args.shard.count > 1) else {
        return Ok(clock::now_ms() + warmup_ms);
    };
    std::fs::create_dir_all(dir)?;
    let mine = dir.join(format!("ready-{}", args.shard.index));
    let tmp = mine.with_extension("tmp");
    std::fs::write(&tmp, clock::now_ms().to_string())?;
    std::fs::rename(&tmp, &mine)?;
    say(format!(
        "waiting for the other {} shards",
        args.shard.count - 1
    ));
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let ready: Vec<f64> = (0..args.shard.count)
            .filter_map(|p| std::fs::read_to_string(dir.join(format!("ready-{p}"))).ok())
            .filter_map(|t| t.trim().parse().ok())
            .collect();
        if ready.len() == args.shard.count {
            return Ok(ready.into_iter().fold(0.0, f64::max) + warmup_ms);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {}/{} shards ready in {}",
                ready.len(),
                args.shard.count,
                dir.display()
            )
            .into());
        }
        sleep(Duration::from_millis(100)).await;
    }
}

async fn sleep_until_ms(at_ms: f64) {
    let left = (at_ms - clock::now_ms()) / 1000.0;
    if left > 0.0 {
        sleep(Duration::from_secs_f64(left)).await;
    }
}

/// `fleet-sim merge [--json] REPORT.json…`
fn merge_main(argv: &[String]) -> Result<(), setup::Error> {
    let json = argv.iter().any(|a| a == "--json");
    let files: Vec<&Path> = argv
        .iter()
        .filter(|a| *a != "--json")
        .map(Path::new)
        .collect();
    if files.is_empty() {
        return Err("usage: fleet-sim merge [--json] REPORT.json…".into());
    }
    let mut reports = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let report: Report =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        reports.push(report);
    }
    let mut samples = Vec::new();
    for r in &reports {
        match &r.samples_file {
            Some(path) => samples
                .extend(stats::read_samples(path).map_err(|e| format!("{}: {e}", path.display()))?),
            None if reports.len() > 1 => {
                return Err(
                    "a report without samples_file: run the shards with --samples-file".into(),
                )
            }
            None => {}
        }
    }
    let latency = if reports.len() == 1 && reports[0].samples_file.is_none() {
        reports[0].latency
    } else {
        Latency::of(samples)
    };
    print_report(&merge(reports, latency), json)
}

/// One report for the shards of one run: counts add up; delivery is the events read over
/// the heartbeats the whole fleet sent times the browsers that read (each browser sees
/// every shard's agents); latency comes from the shards' samples together (`latency`),
/// since percentiles do not add; the server figures are the first shard's that has them
/// (give `--server-pid` to one shard); sizes and times are their maximum.
fn merge(reports: Vec<Report>, latency: Latency) -> Report {
    let n = reports.len();
    let sum = |f: fn(&Report) -> f64| reports.iter().map(f).sum::<f64>();
    let max = |f: fn(&Report) -> f64| reports.iter().map(f).fold(0.0, f64::max);
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    let events: u64 = reports.iter().map(|r| r.events).sum();
    let reading: usize = reports.iter().map(|r| r.reading_browsers).sum();
    // The shards' windows are one window (`--sync-dir`); their lengths differ by a tick.
    let window = reports
        .iter()
        .map(|r| r.window_s)
        .fold(0.0, f64::max)
        .max(1e-9);
    let storms: Vec<&Storm> = reports.iter().filter_map(|r| r.storm.as_ref()).collect();
    let agents: usize = reports.iter().map(|r| r.agents).sum();
    let storm = (!storms.is_empty()).then(|| {
        let first = storms
            .iter()
            .map(|s| s.first_drop_ms)
            .fold(f64::MAX, f64::min);
        let back: Vec<f64> = storms
            .iter()
            .flat_map(|s| {
                let shift = (s.first_drop_ms - first) / 1000.0;
                s.back_s.iter().map(move |b| b + shift)
            })
            .collect();
        storm_figures(first, back, storms.iter().map(|s| s.agents_dropped).sum())
    });
    let server = reports
        .iter()
        .find(|r| r.server.cpu_pct.is_some())
        .map(|r| r.server.clone())
        .unwrap_or_default();
    let first = &reports[0];
    Report {
        mode: first.mode,
        shard: format!("merged of {n}"),
        urls: first.urls,
        agents,
        browsers: reports.iter().map(|r| r.browsers).sum(),
        slow_browsers: reports.iter().map(|r| r.slow_browsers).sum(),
        interval_s: first.interval_s,
        warmup_s: first.warmup_s,
        duration_s: first.duration_s,
        ramp_s: max(|r| r.ramp_s),
        agents_registered: reports.iter().map(|r| r.agents_registered).sum(),
        failed_attempts: reports.iter().map(|r| r.failed_attempts).sum(),
        link_drops: reports.iter().map(|r| r.link_drops).sum(),
        heartbeats_per_s: sent as f64 / window,
        events_per_s: events as f64 / window,
        events_per_s_per_browser: events as f64 / window / reading.max(1) as f64,
        events_per_s_slowest_browser: reports
            .iter()
            .filter(|r| r.reading_browsers > 0)
            .map(|r| r.events_per_s_slowest_browser)
            .reduce(f64::min)
            .unwrap_or(0.0),
        delivery: if sent == 0 || reading == 0 {
            0.0
        } else {
            events as f64 / (sent as f64 * reading as f64)
        },
        sent,
        events,
        reading_browsers: reading,
        window_s: window,
        samples_file: None,
        latency,
        browsers_connected_s: max(|r| r.browsers_connected_s),
        browser_connects: reports.iter().map(|r| r.browser_connects).sum(),
        browser_drops: reports.iter().map(|r| r.browser_drops).sum(),
        browser_drops_measured: reports.iter().map(|r| r.browser_drops_measured).sum(),
        browser_lag_closes: reports.iter().map(|r| r.browser_lag_closes).sum(),
        snapshot_bytes: reports.iter().map(|r| r.snapshot_bytes).max().unwrap_or(0),
        snapshot_ms_max: max(|r| r.snapshot_ms_max),
        server,
        db_cpu_pct: reports.iter().find_map(|r| r.db_cpu_pct),
        sim_cpu_pct: Some(sum(|r| r.sim_cpu_pct.unwrap_or(0.0))),
        machine_busy_pct: first.machine_busy_pct,
        storm,
    }
}

fn save(args: &Args, tokens: &setup::Tokens) -> Result<(), setup::Error> {
    match &args.tokens_file {
        Some(path) => setup::save_tokens(path, tokens),
        None => Ok(()),
    }
}

/// The fleet is steady: signal the harness, wait for the links to drop, then time the
/// re-registrations.
async fn storm(args: &Args, fleet: &Fleet, agents: usize) -> Result<Storm, setup::Error> {
    fleet.storm_armed.store(true, Ordering::Relaxed);
    if let Some(path) = &args.ready_file {
        // One file per shard (`<file>.P`): the harness waits for all of them.
        let path = if args.shard.count > 1 {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{}", args.shard.index));
            PathBuf::from(name)
        } else {
            path.clone()
        };
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
    let dropped = || {
        fleet
            .dropped
            .iter()
            .filter(|d| d.load(Ordering::Relaxed))
            .count()
    };
    let back_times = || -> Vec<f64> {
        fleet
            .registered_at
            .iter()
            .zip(&fleet.dropped)
            .filter(|(_, dropped)| dropped.load(Ordering::Relaxed))
            .filter_map(|(m, _)| *lock(m))
            .filter(|&t| t > drop_ms)
            .map(|t| (t - drop_ms) / 1000.0)
            .collect()
    };
    // The links a kill or restart ends all drop within moments of each other: a second
    // counts them before the wait for their return.
    sleep(Duration::from_secs(1)).await;
    let mut last_say = Instant::now();
    while back_times().len() < dropped() && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
        if last_say.elapsed() >= Duration::from_secs(5) {
            last_say = Instant::now();
            say(format!(
                "storm: {}/{} back ({agents} agents)",
                back_times().len(),
                dropped()
            ));
        }
    }
    Ok(storm_figures(drop_ms, back_times(), dropped()))
}

/// The storm's figures from when each agent was back (s after the first drop, at
/// `first_drop_ms`), `dropped` of them expected.
fn storm_figures(first_drop_ms: f64, back: Vec<f64>, dropped: usize) -> Storm {
    let lat = Latency::of(back.iter().map(|&s| s as f32).collect());
    let all = back.len() == dropped;
    Storm {
        agents_back: back.len(),
        agents_dropped: dropped,
        first_drop_ms,
        first_back_s: back.iter().copied().reduce(f64::min),
        all_back_s: all.then_some(lat.max_ms),
        p50_s: (!back.is_empty()).then_some(lat.p50_ms),
        p90_s: (!back.is_empty()).then_some(lat.p90_ms),
        p99_s: (!back.is_empty()).then_some(lat.p99_ms),
        back_s: back,
    }
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
    if r.db_cpu_pct.is_some() {
        println!("database: CPU {} of one core", opt(r.db_cpu_pct, "%"));
    }
    println!(
        "fleet-sim CPU {} of one core; machine busy {}",
        opt(r.sim_cpu_pct, "%"),
        opt(r.machine_busy_pct, "%")
    );
    if let Some(st) = &r.storm {
        println!(
            "storm: {}/{} dropped links back ({} agents); first {} , p50 {}, p90 {}, p99 {}, all {}",
            st.agents_back,
            st.agents_dropped,
            r.agents,
            opt(st.first_back_s, "s"),
            opt(st.p50_s, "s"),
            opt(st.p90_s, "s"),
            opt(st.p99_s, "s"),
            opt(st.all_back_s, "s")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_fleet_by_index() {
        let s = parse_shard("1/3").unwrap();
        assert_eq!((s.index, s.count), (1, 3));
        let mine: Vec<usize> = (0..8).filter(|&i| s.has(i)).collect();
        assert_eq!(mine, [1, 4, 7]);
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    fn shard(agents: usize, reading: usize, sent: u64, events: u64, slowest: f64) -> Report {
        Report {
            mode: Mode::Nixdeck,
            shard: String::new(),
            urls: 2,
            agents,
            browsers: reading,
            slow_browsers: 0,
            interval_s: 5.0,
            warmup_s: 1,
            duration_s: 10,
            ramp_s: agents as f64 / 100.0,
            agents_registered: agents,
            failed_attempts: 1,
            link_drops: 0,
            heartbeats_per_s: sent as f64 / 10.0,
            events_per_s: events as f64 / 10.0,
            events_per_s_per_browser: 0.0,
            events_per_s_slowest_browser: slowest,
            delivery: 0.0,
            sent,
            events,
            reading_browsers: reading,
            window_s: 10.0,
            samples_file: None,
            latency: Latency::default(),
            browsers_connected_s: 1.0,
            browser_connects: reading as u64,
            browser_drops: 0,
            browser_drops_measured: 0,
            browser_lag_closes: 0,
            snapshot_bytes: 100,
            snapshot_ms_max: 3.0,
            server: ServerFigures::default(),
            db_cpu_pct: None,
            sim_cpu_pct: Some(10.0),
            machine_busy_pct: Some(50.0),
            storm: None,
        }
    }

    /// Each shard's browsers read every shard's heartbeats: delivery is the events over
    /// the whole fleet's sends times all reading browsers, not a mean of the shards'.
    #[test]
    fn merged_counts_add_up_and_delivery_is_the_fleets() {
        // 300 + 200 heartbeats sent; 3 + 2 browsers each read all 500 but 10.
        let a = shard(60, 3, 300, 3 * 500 - 10, 49.0);
        let b = shard(40, 2, 200, 2 * 500, 50.0);
        let m = merge(vec![a, b], Latency::default());
        assert_eq!((m.agents, m.reading_browsers, m.sent), (100, 5, 500));
        assert_eq!(m.events, 2490);
        assert!(
            (m.delivery - 2490.0 / 2500.0).abs() < 1e-12,
            "{}",
            m.delivery
        );
        assert!((m.heartbeats_per_s - 50.0).abs() < 1e-9);
        assert_eq!(m.events_per_s_slowest_browser, 49.0);
        assert_eq!(m.ramp_s, 0.6);
        assert_eq!(m.failed_attempts, 2);
        assert_eq!(m.sim_cpu_pct, Some(20.0));
        assert_eq!(m.shard, "merged of 2");
    }

    /// The storm of several shards is timed from the first link that dropped anywhere.
    #[test]
    fn merged_storm_counts_from_the_first_drop() {
        let mut a = shard(2, 0, 0, 0, 0.0);
        a.storm = Some(storm_figures(1_000.0, vec![1.0, 2.0], 2));
        let mut b = shard(2, 0, 0, 0, 0.0);
        b.storm = Some(storm_figures(1_500.0, vec![0.5, 3.5], 2));
        let s = merge(vec![a, b], Latency::default()).storm.unwrap();
        assert_eq!(s.agents_back, 4);
        assert_eq!(s.first_back_s, Some(1.0));
        assert_eq!(s.all_back_s, Some(4.0));
    }
}
