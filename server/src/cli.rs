//! The binary's command line: `nixdeck [serve]`, `nixdeck user …`, `nixdeck token …`,
//! `nixdeck ctl …` and `nixdeck openapi`, around the server's configuration
//! (`nixdeck_core::config::Config`).

use clap::{Parser, Subcommand, ValueEnum};
use nixdeck_core::config::Config;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "nixdeck",
    version,
    about = "nixdeck: a real-time dashboard for a fleet of NixOS and macOS machines",
    long_about = "nixdeck serves the dashboard, the REST API and the WebSocket hub that agents \
                  and browsers connect to. Every flag can also be set through the environment \
                  variable named beside it. Logging follows RUST_LOG (default: info)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
    /// Log lines on stderr: text, or json (one object per line, for a log collector)
    #[arg(long, env = "NIXDECK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Serve the dashboard (the default when no command is given).
    Serve,
    /// Manage users in the database (works while the dashboard runs).
    #[command(subcommand)]
    User(UserCommand),
    /// Print the OpenAPI 3.1 document of the REST API (what GET /api/openapi.json serves).
    Openapi {
        /// Print the route reference of docs/API.md (Markdown) instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Manage personal API tokens in the database (works while the dashboard runs).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Drive a dashboard over its REST API, for scripts (needs an API token)
    Ctl(crate::ctl::CtlArgs),
}

#[derive(Subcommand, Debug, Clone)]
pub enum TokenCommand {
    /// Make a token for a user. The token alone goes to stdout, shown this once
    /// (`TOKEN=$(nixdeck token create …)`); what was made goes to stderr.
    Create {
        /// The token's owner; requests with it act as this user.
        #[arg(long)]
        user: String,
        /// viewer, operator or admin; not above the owner's role. A request acts with the
        /// lower of this and the owner's role at the time.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// How long it works: days as `90d` (1d to 3650d), or `never`.
        #[arg(long, default_value = "90d")]
        expires: String,
        /// A name unique among the owner's tokens, shown in the page and the audit log
        /// (default: `cli-` and the time).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never the tokens themselves).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id: the next request with it gets 401.
    Revoke { id: String },
}

/// `--expires`: `never`, or whole days as `90d`.
pub fn parse_expires(text: &str) -> Result<Option<u32>, String> {
    if text == "never" {
        return Ok(None);
    }
    text.strip_suffix('d')
        .and_then(|d| d.parse::<u32>().ok())
        .map(Some)
        .ok_or_else(|| format!("--expires takes days as 90d, or never (not {text:?})"))
}

#[derive(Subcommand, Debug, Clone)]
pub enum UserCommand {
    /// Add a user. The password is read from stdin with --password-stdin, or generated and
    /// printed once.
    Add {
        username: String,
        /// viewer (sees everything, runs nothing), operator (runs commands and deploys) or
        /// admin (also manages users, hosts and tokens).
        #[arg(long, default_value = "operator")]
        role: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (stdin or generated); the user's sessions end at once.
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user; their sessions end at once.
    Disable { username: String },
    /// Enable a disabled user.
    Enable { username: String },
    /// List users.
    List,
}
