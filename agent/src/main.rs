//! nixdeck-agent: runs on every host of the fleet and keeps one WebSocket to the dashboard.
//!
//! Layout: `config` (flags and environment), `token` (bearer token and enrollment),
//! `probes` (what is reported about the host) and `link` (the socket session).
//! Commands (`runner`) and unacked output kept on disk (`spool`) plug into `link::Link`.

mod config;
mod link;
mod probes;
mod token;

use clap::Parser;
use std::process::ExitCode;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = config::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

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
        url = %cfg.ws_url,
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

    link::Link::new(cfg).run(shutdown).await;
    tracing::info!("stopped");
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
