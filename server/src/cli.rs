//! The binary's command line: `nixdeck [serve]`, `nixdeck user …`, `nixdeck token …`,
//! `nixdeck db copy`, `nixdeck ctl …` and `nixdeck openapi`, around the server's configuration
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
    /// Move the database: copy a SQLite database into a new PostgreSQL one.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Subcommand, Debug, Clone)]
pub enum DbCommand {
    /// Copy every row of a SQLite database into an empty PostgreSQL database, to move a
    /// dashboard from SQLite to PostgreSQL (docs/SCALING.md, "Moving from SQLite").
    #[command(
        long_about = "Copy every row of a SQLite database into an empty PostgreSQL \
        database, to move a dashboard from SQLite to PostgreSQL (docs/SCALING.md, \
        \"Moving from SQLite\").\n\n\
        Stop the dashboard first: the copy refuses a SQLite file on which a server holds \
        a lease (a running server renews its lease every few seconds; one that was killed \
        lets go when the lease runs out). Start no server on the PostgreSQL database \
        before the copy either.\n\n\
        Both databases are migrated first: the PostgreSQL one to this version's schema, \
        and the SQLite one too, so an older SQLite database is brought up to date (the \
        file is changed as a server of this version would change it at its start). Then \
        users, sessions, API tokens, hosts, commands and their output, deploys, the audit \
        log, settings, metrics history and notifications (targets, rules, queued \
        messages, delivery log) are copied in one PostgreSQL transaction; the leases, \
        login-failure counters and bus events between servers are not (they are about the \
        servers running, and the new ones make their own). Progress goes to stderr.\n\n\
        Refused, with nothing written: a target that already holds any row (or tables \
        that are not nixdeck's), a source that is not SQLite or a target that is not \
        PostgreSQL. The row counts of every \
        table are compared before the commit; any failure leaves the target empty.\n\n\
        TOTP secrets and notification URLs stay sealed with the dashboard's key: give the \
        PostgreSQL servers the same key file (NIXDECK_SECRET_KEY_FILE; with SQLite it is \
        secret.key next to the database file unless it was set)."
    )]
    Copy {
        /// The SQLite database to copy from: sqlite://PATH or a file path. It must exist.
        #[arg(long, value_name = "SQLITE")]
        from: String,
        /// The PostgreSQL database to copy into: postgres://USER@HOST/DATABASE. It must
        /// exist and be empty (CREATE DATABASE …); its schema is made here.
        #[arg(long, value_name = "POSTGRES_URL")]
        to: String,
    },
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
