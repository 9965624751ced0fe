//! The nixdeck server binary.

mod cli;
mod ctl;
mod http;
mod listen;
mod state;

use anyhow::Context;
use clap::Parser;
use cli::Cli;
use leptos::config::LeptosOptions;
use nixdeck_core::config::Config;
use nixdeck_core::hub::Hub;
use nixdeck_core::storage::{self, Db};
use nixdeck_core::{desired, service, Core};
use state::AppState;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Heartbeats are written to the database in batches this often.
const SEEN_FLUSH: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `ctl` is a client: it prints its own errors, exits with its own codes, logs nothing.
    if !matches!(cli.command, Some(cli::Command::Ctl(_))) {
        init_logs(cli.log_format);
    }
    let result = match cli.command {
        None | Some(cli::Command::Serve) => serve(cli.config).await,
        Some(cli::Command::User(action)) => user_command(&cli.config, action).await,
        Some(cli::Command::Openapi { markdown }) => {
            if markdown {
                print!("{}", http::openapi::markdown());
            } else {
                print!("{}", http::openapi::document_json());
            }
            Ok(())
        }
        Some(cli::Command::Token(action)) => token_command(&cli.config, action).await,
        Some(cli::Command::Ctl(args)) => return ctl::run(args).await,
        Some(cli::Command::Db(action)) => db_command(action).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("nixdeck: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (colour only on a terminal); stdout says where the first admin's
/// password was written, never the password itself.
fn init_logs(format: cli::LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields at the top level, beside timestamp, level and target.
        cli::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Settings first: a missing one stops the start before the database is touched.
    let secret_key_path = config.secret_key_path()?;
    let db = Db::connect(&config.database_url).await.with_context(|| {
        format!(
            "opening the database {}",
            storage::shown_url(&config.database_url)
        )
    })?;
    let admin_password = config.admin_password()?;
    // Read before anything starts, so a missing or empty token file stops the start.
    let metrics = http::metrics::Guard::from_config(&config)?;
    // Before anyone is served: the key that seals TOTP secrets, checked against the database.
    let secret_key = service::totp::prepare_key(&db, &secret_key_path).await?;
    match service::auth::ensure_admin(&db, &admin_password)
        .await
        .map_err(|e| anyhow::anyhow!("creating the admin user: {e}"))?
    {
        Some(service::auth::AdminCreated::Generated(path)) => println!(
            "Created user 'admin'; its password is in {} (readable by this user only).",
            path.display()
        ),
        Some(service::auth::AdminCreated::FromFile(path)) => println!(
            "Created user 'admin' with the password in {}.",
            path.display()
        ),
        Some(service::auth::AdminCreated::Given) | None => {}
    }
    let hosts = db.hosts().await.context("loading hosts")?;
    let hub = Hub::new(
        hosts.into_iter().map(|rec| (rec.host, rec.lock_hash)),
        config.heartbeat_interval_s,
        desired::initial(&config.github),
    );
    let desired = Arc::new(
        desired::Desired::new(&config.github, hub.clone()).context("desired state source")?,
    );
    // Commands survive a dashboard restart: their hosts stay busy until the agents report.
    for cmd in db
        .holding_commands()
        .await
        .context("loading running commands")?
    {
        hub.restore_pending(
            &cmd.host_id,
            protocol::PendingCommand {
                command_id: cmd.id,
                command: cmd.command,
                started_at: cmd.started_at.unwrap_or(cmd.queued_at),
            },
        );
    }

    let build = web_build(&config.site_root);
    let _ = app::request::WEB_BUILD.set(build.clone());
    hub.set_build(build);
    let leptos_options = LeptosOptions::builder()
        .output_name("nixdeck")
        .site_root(config.site_root.to_string_lossy().to_string())
        .site_pkg_dir("pkg")
        .site_addr(config.listen)
        .build();
    let enroll_until = service::hosts::enrollment_deadline(&db, &config)
        .await
        .map_err(|e| anyhow::anyhow!("enrollment token: {e}"))?;
    if let Some(until) = enroll_until {
        tracing::info!("the enrollment token works until {until}");
    }
    let core = Core {
        enroll_until,
        db: db.clone(),
        hub: hub.clone(),
        config: Arc::new(config.clone()),
        limits: Arc::new(service::limits::Limits::for_database(
            &db,
            config.login_failures_per_min,
        )),
        desired: desired.clone(),
        deploys: Arc::default(),
        unsaved: Arc::default(),
        refusals: Arc::default(),
        secret_key: Arc::new(secret_key),
        replica: nixdeck_core::replica_name(),
        leader: service::lease::Leader::new(false),
        peers: Default::default(),
    };
    service::lease::start(&core)
        .await
        .context("taking this server's leases")?;
    // Several servers on one PostgreSQL database share their fleet through it (before any
    // agent or browser is served, so every event here reaches the others).
    if db.backend() == storage::Backend::Postgres {
        nixdeck_core::replica::start(&core).await?;
    }
    service::deploy::recover(&core)
        .await
        .context("recovering deploy jobs")?;
    desired.spawn(core.leader.clone());
    spawn_background(core.clone());
    service::notify::watch::spawn(core.clone());
    service::notify::deliver::spawn(core.clone());
    let state = AppState {
        core: core.clone(),
        leptos_options,
        metrics,
    };

    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    // One path for plain HTTP and TLS: the same cap, timeouts and TCP_NODELAY.
    let header_timeout = Duration::from_secs(config.header_timeout_s);
    let mut server = axum_server::bind(config.listen)
        .handle(handle)
        .first_request_timeout(header_timeout);
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let capped =
        listen::CappedAcceptor::new(listen::connection_cap(config.max_connections) as usize);
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
            .await
            .with_context(|| {
                format!(
                    "loading TLS certificate {} and key {}",
                    cert.display(),
                    key.display()
                )
            })?;
        tracing::info!(
            "nixdeck {} listening on https://{}",
            protocol::VERSION,
            config.listen
        );
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
            .handshake_timeout(header_timeout)
            .acceptor(capped);
        server
            .acceptor(acceptor)
            .serve(app)
            .await
            .with_context(|| format!("serving HTTPS on {}", config.listen))?;
    } else {
        tracing::info!(
            "nixdeck {} listening on http://{}",
            protocol::VERSION,
            config.listen
        );
        server
            .acceptor(capped)
            .serve(app)
            .await
            .with_context(|| format!("serving HTTP on {}", config.listen))?;
    }
    // Another server takes over the once-per-database jobs at once, and the others mark
    // this server's hosts offline at their next look (or their agents move first).
    service::lease::release(&core).await;
    // Nothing accepted is lost: the last registrations and heartbeats go to the database
    // before exit.
    service::audit::flush_refusals(&core).await;
    service::hosts::save_unsaved(&core)
        .await
        .map_err(anyhow::Error::msg)?;
    tracing::info!("stopped");
    Ok(())
}

/// `nixdeck user …`: account management from the command line.
async fn user_command(config: &Config, action: cli::UserCommand) -> anyhow::Result<()> {
    use cli::UserCommand::*;
    use service::users;
    let db = Db::connect(&config.database_url).await.with_context(|| {
        format!(
            "opening the database {}",
            storage::shown_url(&config.database_url)
        )
    })?;
    let fail = |e: common::AppError| anyhow::anyhow!("{e}");
    let read_password = |from_stdin: bool| -> anyhow::Result<Option<String>> {
        if !from_stdin {
            return Ok(None);
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
    };
    match action {
        Add {
            username,
            role,
            password_stdin,
        } => {
            let (password, generated) =
                users::password_or_generated(read_password(password_stdin)?).map_err(fail)?;
            users::add(&db, "cli", &username, &role, &password)
                .await
                .map_err(fail)?;
            println!("Added {role} {username}.");
            if generated {
                println!("Password: {password}");
            }
        }
        Passwd {
            username,
            password_stdin,
        } => {
            let (password, generated) =
                users::password_or_generated(read_password(password_stdin)?).map_err(fail)?;
            users::set_password(&db, "cli", &username, &password)
                .await
                .map_err(fail)?;
            println!("New password set for {username}; their sessions ended.");
            if generated {
                println!("Password: {password}");
            }
        }
        Disable { username } => {
            users::set_disabled(&db, "cli", &username, true)
                .await
                .map_err(fail)?;
            println!("Disabled {username}; their sessions ended.");
        }
        Enable { username } => {
            users::set_disabled(&db, "cli", &username, false)
                .await
                .map_err(fail)?;
            println!("Enabled {username}.");
        }
        List => {
            println!("{:<24} {:<9} {:<8} created", "user", "role", "state");
            for (u, created) in users::list(&db).await.map_err(fail)? {
                let state = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{:<24} {:<9} {:<8} {}",
                    u.username,
                    u.role,
                    state,
                    protocol::Timestamp(created)
                );
            }
        }
    }
    Ok(())
}

/// `nixdeck token …`: personal API tokens from the command line, audited as `cli`.
async fn token_command(config: &Config, action: cli::TokenCommand) -> anyhow::Result<()> {
    use cli::TokenCommand::*;
    use service::tokens;
    let db = Db::connect(&config.database_url).await.with_context(|| {
        format!(
            "opening the database {}",
            storage::shown_url(&config.database_url)
        )
    })?;
    let fail = |e: common::AppError| anyhow::anyhow!("{e}");
    let when = |t: Option<protocol::Timestamp>, none: &str| {
        t.map_or_else(|| none.to_owned(), |t| t.to_string())
    };
    match action {
        Create {
            user,
            role,
            expires,
            name,
        } => {
            let role = service::users::parse_role(&role).map_err(fail)?;
            let days = cli::parse_expires(&expires).map_err(anyhow::Error::msg)?;
            let now = protocol::Timestamp::now().secs();
            let expires_at = tokens::expiry(now, days).map_err(fail)?;
            let name = name.unwrap_or_else(|| format!("cli-{now}"));
            let made = tokens::mint(&db, "cli", None, &user, &name, role, expires_at)
                .await
                .map_err(fail)?;
            let until = when(expires_at.map(protocol::Timestamp), "never");
            eprintln!(
                "Created token {} ({name:?}, {role}) for {user}, expires {until}. It is shown this once:",
                made.id
            );
            println!("{}", made.token);
        }
        List { user } => {
            println!(
                "{:<16} {:<16} {:<24} {:<8} {:<20} {:<20} last used",
                "id", "user", "name", "role", "created", "expires"
            );
            for t in tokens::list_of(&db, user.as_deref()).await.map_err(fail)? {
                let expires = if t.expired {
                    format!("expired {}", when(t.expires_at, ""))
                } else {
                    when(t.expires_at, "never")
                };
                println!(
                    "{:<16} {:<16} {:<24} {:<8} {:<20} {:<20} {}",
                    t.id,
                    t.username,
                    t.name,
                    t.role,
                    t.created_at,
                    expires,
                    when(t.last_used_at, "never")
                );
            }
        }
        Revoke { id } => {
            tokens::revoke_cli(&db, &id).await.map_err(fail)?;
            println!("Revoked token {id}; requests with it now get 401.");
        }
    }
    Ok(())
}

/// `nixdeck db …`: moving the database (`storage::copy`). Progress on stderr, the summary
/// on stdout.
async fn db_command(action: cli::DbCommand) -> anyhow::Result<()> {
    use storage::copy::{self, Progress};
    match action {
        cli::DbCommand::Copy { from, to } => {
            let source = copy::source_url(&from)?;
            let target = copy::target_url(&to)?;
            eprintln!("Copying {source} into {} …", storage::shown_url(&target));
            let started = std::time::Instant::now();
            let mut progress = |p: Progress| match p {
                Progress::Rows { table, rows, of } if rows == of => {
                    eprintln!(
                        "  {table}: {rows} {}",
                        if rows == 1 { "row" } else { "rows" }
                    )
                }
                Progress::Rows { table, rows, of } => eprintln!("  {table}: {rows} of {of} rows …"),
                Progress::Sequence { name, next } => {
                    eprintln!("  sequence {name}: next {next}")
                }
            };
            let summary = copy::sqlite_to_postgres(&source, &target, &mut progress).await?;
            let rows: u64 = summary.tables.iter().map(|(_, n)| n).sum();
            println!(
                "Copied {rows} rows in {} tables into {} in {:.1} s; the row counts of every \
                 table match.",
                summary.tables.len(),
                storage::shown_url(&target),
                started.elapsed().as_secs_f64()
            );
            if summary.nul_replaced > 0 {
                println!(
                    "{} text values held a NUL character, which PostgreSQL cannot store: \
                     each became U+FFFD.",
                    summary.nul_replaced
                );
            }
            if let Some(key) = storage::database_file(&source)
                .and_then(|db| db.parent().map(|dir| dir.join("secret.key")))
                .filter(|key| key.is_file())
            {
                println!(
                    "Give every server on PostgreSQL the dashboard's key: \
                     NIXDECK_SECRET_KEY_FILE={} (or the file it used instead, if it was set).",
                    key.display()
                );
            }
        }
    }
    Ok(())
}

/// Batched heartbeat writes, hard timeouts, session clean-up and retention. Heartbeats
/// and timeouts are this server's own (its agents, its commands); the clean-up and
/// retention run on the leader only (`service::lease`), once per database.
fn spawn_background(core: Core) {
    let timeouts = core.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            service::commands::enforce_timeouts(&timeouts).await;
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SEEN_FLUSH);
        let mut rounds = 0u64;
        loop {
            tick.tick().await;
            service::hosts::flush_reports(&core).await;
            service::audit::flush_refusals(&core).await;
            rounds += 1;
            if rounds.is_multiple_of(60) {
                core.limits.forget_old();
            }
            if rounds.is_multiple_of(60) && core.leader.is_leader() {
                let now = protocol::Timestamp::now().secs();
                let idle = now - (core.config.session_idle_min * 60) as i64;
                let created = now - (core.config.session_max_h * 3600) as i64;
                if let Err(e) = core.db.purge_sessions(idle, created).await {
                    tracing::warn!("purging sessions: {e}");
                }
                service::commands::purge_old(&core).await;
                service::limits::purge_shared(&core).await;
                service::audit::purge_old(&core).await;
                service::history::prune(&core).await;
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Which web build the site holds: a hash of its wasm (empty without one, as in tests that
/// run no browser). Pages compare it with their own to notice an upgrade.
fn web_build(site_root: &std::path::Path) -> String {
    use std::hash::{DefaultHasher, Hasher};
    match std::fs::read(site_root.join("pkg/nixdeck.wasm")) {
        Ok(bytes) => {
            let mut h = DefaultHasher::new();
            h.write(&bytes);
            format!("{:016x}", h.finish())
        }
        Err(_) => String::new(),
    }
}
