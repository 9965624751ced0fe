//! fake-github: a stateful stand-in for the slice of GitHub's REST API nixdeck uses, backed by
//! a real git repository so hosts that `git fetch` from it see the commits the API reports.

mod api;

// The library's, so its tests' helpers and this binary run git from one module.
use testkit::git;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "fake-github",
    about = "A fake GitHub REST API over a local git repository"
)]
struct Cli {
    /// Bare or non-bare git repository the fake serves and merges into.
    #[arg(long)]
    repo_dir: PathBuf,
    /// Repository owner in the /repos/{owner}/{name} paths.
    #[arg(long)]
    owner: String,
    /// Repository name in the /repos/{owner}/{name} paths.
    #[arg(long)]
    name: String,
    /// Base branch: PRs merge into it; the default ref for contents.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Port on 127.0.0.1; 0 picks a free one (read it from the "listening on" line).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// When set, /repos requests must send `Authorization: Bearer <token>` (or `token <token>`).
    #[arg(long)]
    token: Option<String>,
}

/// Owner and name are spliced into route patterns, so keep them to GitHub's own alphabet.
fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-github: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if !valid_slug(&cli.owner) || !valid_slug(&cli.name) {
        return Err("--owner and --name may only contain letters, digits, '-', '_' and '.'".into());
    }
    let git = git::Git::new(cli.repo_dir.clone());
    git.check_repo()
        .await
        .map_err(|e| format!("{} is not a git repository: {e}", cli.repo_dir.display()))?;
    // Fail fast rather than serve a repo whose base branch 404s on every call.
    if git
        .branch_head(&cli.branch)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err(format!(
            "branch {:?} does not exist in {}",
            cli.branch,
            cli.repo_dir.display()
        ));
    }

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cli.port))
        .await
        .map_err(|e| format!("binding 127.0.0.1:{}: {e}", cli.port))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let base_url = format!("http://127.0.0.1:{port}");

    let app = api::App::new(
        api::Config {
            owner: cli.owner,
            name: cli.name,
            branch: cli.branch,
            token: cli.token,
            base_url: base_url.clone(),
        },
        git,
    );

    // Tests block on this exact line to learn the port, so print it once and flush.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {base_url}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    drop(out);

    axum::serve(listener, api::router(app))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("server: {e}"))?;
    eprintln!("fake-github: stopped");
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, fall back to Ctrl-C only.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("fake-github: shutting down");
}
