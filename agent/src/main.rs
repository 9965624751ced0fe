//! The `nixdeck-agent` binary; the agent itself is the library (see lib.rs).
//!
//! `nixdeck-agent supervise --dir <command dir>` is the hidden subcommand the agent starts
//! for each command (see supervisor.rs); it is told apart before the agent's own flags
//! are parsed, so it needs none of them.

use clap::Parser;
use nixdeck_agent::{config, link, supervisor};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// The supervisor's command line.
#[derive(Debug, Parser)]
#[command(name = "nixdeck-agent supervise")]
struct SuperviseCli {
    /// The command's directory under <state-dir>/commands
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "supervise") {
        let cli = SuperviseCli::parse_from(std::env::args_os().skip(1));
        return supervisor::main(&cli.dir);
    }
    let cli = config::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        config::LogFormat::Text => logs.init(),
        // The event's fields at the top level, beside timestamp, level and target.
        config::LogFormat::Json => logs.json().flatten_event(true).init(),
    }

    let cfg = match config::Config::from_cli(cli) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("nixdeck-agent: {err}");
            return ExitCode::from(2);
        }
    };

    // rustls needs a process-wide crypto provider for wss://; this fails only if one is
    // already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // One thread is plenty for one socket and a few probes, and keeps the agent light.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("nixdeck-agent: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cfg))
}

async fn run(cfg: config::Config) -> ExitCode {
    tracing::info!(
        version = protocol::VERSION,
        urls = %cfg.ws_urls.join(","),
        hostname = %cfg.hostname,
        host_type = cfg.host_type.as_str(),
        interval_s = cfg.interval_s,
        state_dir = %cfg.state_dir.display(),
        "starting nixdeck-agent"
    );

    let (stop, shutdown) = watch::channel(false);
    let signals = match shutdown_signals().await {
        Ok(signals) => signals,
        Err(err) => {
            tracing::error!("cannot install signal handlers: {err}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(async move {
        signals.await;
        let _ = stop.send(true);
    });

    match link::Link::new(cfg).run(shutdown).await {
        link::Exit::Shutdown => tracing::info!("stopped"),
        // Exit 0 all the same: systemd (Restart=always) and launchd (KeepAlive) start the
        // agent again.
        link::Exit::Restart => tracing::info!("exiting for a restart"),
    }
    ExitCode::SUCCESS
}

/// Resolves on the first SIGTERM (systemd, launchd) or SIGINT (Ctrl-C). Handlers are
/// installed before the link starts, so an early signal is not lost.
async fn shutdown_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name} received, closing the link");
    })
}
