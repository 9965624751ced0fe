//! Server configuration: flags, each with an environment variable, documented in `--help`.
//! The binary's commands (`serve`, `user …`) are in `server/src/cli.rs`.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "NIXDECK_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Database URL: sqlite://PATH (sqlite:PATH and sqlite::memory: too), or
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE (postgresql:// too; `?host=/run/postgresql`
    /// for a Unix socket). The SQLite file and its folder are created when missing; a
    /// PostgreSQL database must exist (the server creates its tables). Any other scheme stops
    /// the start
    #[arg(
        long,
        env = "NIXDECK_DATABASE_URL",
        default_value = "sqlite://data/nixdeck.db",
        value_parser = parse_database_url
    )]
    pub database_url: String,

    /// The password of the `admin` user created on first start (when no user exists yet)
    /// lives in this file: read from it when the file exists, else generated and written to
    /// it (mode 0600; an existing file is never overwritten). Default: `admin-password` in the
    /// database's folder. The password can be given in the environment variable
    /// NIXDECK_ADMIN_PASSWORD instead (there is no flag for it: a command line shows in
    /// `ps`); when that is set, the file is not touched.
    #[arg(long, env = "NIXDECK_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: Option<PathBuf>,

    /// File with the server's secret key (64 hex digits, 256 bits): it encrypts TOTP
    /// secrets and keys the hashes of recovery codes in the database. Created with mode
    /// 0600 on first start when missing, and never overwritten; with secrets sealed under
    /// it, a missing or different key stops the start. Default: `secret.key` beside the
    /// SQLite database; required with PostgreSQL. Back it up, but not in the same place as
    /// the database.
    #[arg(long, env = "NIXDECK_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// Enrollment token: lets an agent register a host that does not exist yet and receive
    /// its own host token. Unset disables enrollment.
    #[arg(long, env = "NIXDECK_ENROLL_TOKEN", hide_env_values = true)]
    pub enroll_token: Option<String>,

    /// Hours the enrollment token stays valid after this server first saw it (0: no
    /// expiry). Changing the token starts a new period.
    #[arg(long, env = "NIXDECK_ENROLL_TOKEN_TTL_H", default_value_t = 24)]
    pub enroll_token_ttl_h: u64,

    /// Hosts the enrollment token may create in all (0: no limit). Each enrolled host waits
    /// for an admin's approval before it gets commands. Changing the token starts anew.
    #[arg(long, env = "NIXDECK_ENROLL_TOKEN_USES", default_value_t = 10)]
    pub enroll_token_uses: u64,

    /// Heartbeat interval agents are told to use, in seconds. A host is offline after three
    /// missed heartbeats.
    #[arg(long, env = "NIXDECK_HEARTBEAT_INTERVAL_S", default_value_t = protocol::DEFAULT_HEARTBEAT_S,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub heartbeat_interval_s: u32,

    /// Folder with the built site (`pkg/` with the wasm, JS and CSS).
    #[arg(long, env = "NIXDECK_SITE_ROOT", default_value = "target/site")]
    pub site_root: PathBuf,

    /// Sessions end after this many minutes without a request. A session can command
    /// every host as root, so the defaults are a working day.
    #[arg(long, env = "NIXDECK_SESSION_IDLE_MIN", default_value_t = 8 * 60)]
    pub session_idle_min: u64,

    /// Sessions end this many hours after login, however active.
    #[arg(long, env = "NIXDECK_SESSION_MAX_H", default_value_t = 24)]
    pub session_max_h: u64,

    /// Seconds after the login (or the latest re-authentication) during which token
    /// rotation, user management and Merge & Deploy go ahead without asking for the
    /// password again.
    #[arg(long, env = "NIXDECK_REAUTH_WINDOW_S", default_value_t = 600)]
    pub reauth_window_s: u64,

    /// Hard timeout of `pull`, in seconds. On timeout the agent is told to stop and the
    /// command is recorded as `timeout`.
    #[arg(long, env = "NIXDECK_TIMEOUT_PULL_S", default_value_t = 300)]
    pub timeout_pull_s: u64,

    /// Hard timeout of the commands that build or activate a system (`switch`,
    /// `pull-switch`, `boot`, `preview`, `rollback`), in seconds.
    #[arg(long, env = "NIXDECK_TIMEOUT_SWITCH_S", default_value_t = 1800)]
    pub timeout_switch_s: u64,

    /// Hard timeout of `test`, in seconds.
    #[arg(long, env = "NIXDECK_TIMEOUT_TEST_S", default_value_t = 600)]
    pub timeout_test_s: u64,

    /// Hard timeout of every other command, in seconds.
    #[arg(long, env = "NIXDECK_TIMEOUT_OTHER_S", default_value_t = 900)]
    pub timeout_other_s: u64,

    /// Failed logins allowed per account per minute (an address gets four times as many);
    /// past that, logins are refused with 429 and Retry-After until the window frees up.
    #[arg(long, env = "NIXDECK_LOGIN_FAILURES_PER_MIN", default_value_t = 5)]
    pub login_failures_per_min: u32,

    /// Finished commands and their output are deleted after this many days.
    #[arg(long, env = "NIXDECK_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,

    /// Audit log entries are deleted after this many days.
    #[arg(long, env = "NIXDECK_AUDIT_RETENTION_DAYS", default_value_t = 365)]
    pub audit_retention_days: u32,

    /// Keep heartbeat metrics over time (`GET /api/hosts/{id}/metrics`), downsampled to
    /// 1-minute, 10-minute, 1-hour and 1-day averages. Off: nothing new is recorded; what
    /// was stored is still shown until its retention ends.
    #[arg(long, env = "NIXDECK_HISTORY", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub history: bool,

    /// Hours the 1-minute metrics are kept.
    #[arg(long, env = "NIXDECK_HISTORY_MINUTE_H", default_value_t = 24,
          value_parser = clap::value_parser!(u64).range(1..=24 * 31))]
    pub history_minute_h: u64,

    /// Days the 10-minute metrics are kept.
    #[arg(long, env = "NIXDECK_HISTORY_10MIN_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=366))]
    pub history_10min_days: u64,

    /// Days the 1-hour metrics are kept.
    #[arg(long, env = "NIXDECK_HISTORY_HOUR_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(1..=3660))]
    pub history_hour_days: u64,

    /// Days the 1-day metrics are kept.
    #[arg(long, env = "NIXDECK_HISTORY_DAY_DAYS", default_value_t = 730,
          value_parser = clap::value_parser!(u64).range(1..=3660))]
    pub history_day_days: u64,

    /// Longest wait, in seconds, between two attempts to deliver a notification. Retries
    /// start after about a second and double up to this; a message is given up after a day.
    #[arg(long, env = "NIXDECK_NOTIFY_RETRY_MAX_S", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub notify_retry_max_s: u64,

    /// Seconds a lease in the database lasts unless renewed (renewed every quarter of it).
    /// Servers sharing one PostgreSQL database hold leases: the leader runs the jobs that
    /// must run once per database (polling GitHub, sending notifications, retention), and
    /// every server holds its own. When a server dies, another takes over its jobs within
    /// about this long plus a quarter of it (docs/SCALING.md).
    #[arg(long, env = "NIXDECK_LEASE_TTL_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_ttl_s: u64,

    /// PEM certificate chain: with --tls-key, the server speaks HTTPS itself (for setups
    /// without a reverse proxy). Then the session cookie is `__Host-` and `Secure`, and
    /// responses carry HSTS.
    #[arg(long, env = "NIXDECK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "NIXDECK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Public origin of the dashboard (e.g. `https://deck.example.org`) when it runs behind
    /// a proxy that rewrites the Host header. By default the request's Host is the origin.
    #[arg(long, env = "NIXDECK_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Seconds a client has to send a request's headers (and a new connection its first
    /// request); a slow client (slowloris) is cut off after that.
    #[arg(long, env = "NIXDECK_HEADER_TIMEOUT_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_s: u64,

    /// Seconds a request may take until its response starts (408 after that). Sockets and
    /// streamed bodies are not cut: only the wait for the answer's head.
    #[arg(long, env = "NIXDECK_REQUEST_TIMEOUT_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_s: u64,

    /// Largest request body in KiB, server functions included (413 past it).
    #[arg(long, env = "NIXDECK_MAX_BODY_KB", default_value_t = 2048,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body_kb: u64,

    /// Open connections at most (agents, browsers and API clients together); a connection
    /// past it is closed at once. Default: the process's open-file limit, raised to its hard
    /// limit at start, less 300 files kept for the database, listener and logs (19 700 under
    /// a limit of 20 000). A value above that is used, with a warning at start.
    #[arg(long, env = "NIXDECK_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Largest stored output of one command, in MiB of line text (the agent spools at most
    /// 64 MiB too). Past it, further lines are counted instead of stored, and one marker
    /// line in the log says how many were dropped.
    #[arg(long, env = "NIXDECK_MAX_OUTPUT_MB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub max_output_mb: u64,

    /// Open browser sockets (`/ws`, one per dashboard tab) per user at most; the next one
    /// is refused with 429 before the upgrade until one of the user's tabs closes.
    #[arg(long, env = "NIXDECK_MAX_SOCKETS_PER_USER", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_sockets_per_user: u64,

    /// Reverse proxies whose `X-Forwarded-For` is believed (comma-separated addresses or
    /// CIDR ranges, e.g. `127.0.0.1,10.0.0.0/8`). Behind a proxy every request comes from
    /// the proxy's address, so rate limits and the audit log need the client's address
    /// from the header; from anyone else the header is ignored, since clients can forge it.
    #[arg(long, env = "NIXDECK_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Who may read /metrics: `loopback` (only clients on this machine, and no request a
    /// proxy forwarded), `open` (anyone who reaches the port) or `off` (404).
    #[arg(long, env = "NIXDECK_METRICS", value_enum, default_value_t = MetricsAccess::Loopback)]
    pub metrics: MetricsAccess,

    /// A file holding a token that every /metrics request must send as
    /// `Authorization: Bearer <token>` (401 otherwise), whatever NIXDECK_METRICS says.
    #[arg(long, env = "NIXDECK_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,

    #[command(flatten)]
    pub github: GithubConfig,
}

/// Who may read /metrics (`Config::metrics`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAccess {
    Loopback,
    Open,
    Off,
}

/// The only way to give the first admin's password other than a file: an environment
/// variable, never a flag.
pub const ADMIN_PASSWORD_ENV: &str = "NIXDECK_ADMIN_PASSWORD";

/// Where the password of the first `admin` comes from (`Config::admin_password`).
#[derive(Clone, PartialEq, Eq)]
pub enum AdminPassword {
    /// Given in NIXDECK_ADMIN_PASSWORD.
    Given(String),
    /// Read from this file if it exists, else generated and written to it.
    File(PathBuf),
}

/// Never shows the password itself, so a `{:?}` in a log line cannot leak it.
impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminPassword::Given(_) => f.write_str("Given(..)"),
            AdminPassword::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Where the desired state comes from, and how flake.lock PRs are found and deployed.
#[derive(clap::Args, Debug, Clone)]
pub struct GithubConfig {
    /// The config repository on GitHub, `owner/name`. Its branch head and flake.lock are the
    /// desired state that the git and lock compartments compare hosts against.
    #[arg(long, env = "NIXDECK_GITHUB_REPO")]
    pub github_repo: Option<String>,

    /// The branch hosts deploy from.
    #[arg(long, env = "NIXDECK_GITHUB_BRANCH", default_value = "main")]
    pub github_branch: String,

    /// API token (needs contents:read and pull-requests:write to merge). Optional for a
    /// public repository, but unauthenticated requests are rate-limited hard.
    #[arg(long, env = "NIXDECK_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,

    /// A file holding the API token (e.g. a secret managed by sops or agenix).
    #[arg(
        long,
        env = "NIXDECK_GITHUB_TOKEN_FILE",
        conflicts_with = "github_token"
    )]
    pub github_token_file: Option<PathBuf>,

    /// Base URL of the GitHub REST API (GitHub Enterprise: `https://host/api/v3`).
    #[arg(
        long,
        env = "NIXDECK_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// Instead of the API: a URL serving `version.json` with
    /// `{gitCommit, lockHash, branch, timestamp}` (e.g. published by the repo's CI).
    #[arg(long, env = "NIXDECK_VERSION_URL", conflicts_with = "github_repo")]
    pub version_url: Option<String>,

    /// Seconds between reads of the desired state.
    #[arg(long, env = "NIXDECK_DESIRED_POLL_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub desired_poll_s: u64,

    /// Seconds between looks for a flake.lock update pull request.
    #[arg(long, env = "NIXDECK_PR_POLL_S", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub pr_poll_s: u64,

    /// Labels that mark a flake.lock update PR (comma-separated). Only an open PR from a
    /// branch of this repository, against the deploy branch, by an allowed author
    /// (NIXDECK_PR_AUTHORS) and changing only allowed files (NIXDECK_PR_ALLOWED_FILES) is
    /// the update PR, and only that one can be merged by Merge & Deploy.
    #[arg(
        long,
        env = "NIXDECK_PR_LABELS",
        value_delimiter = ',',
        default_value = "dependencies,automated"
    )]
    pub pr_labels: Vec<String>,

    /// Also take a PR whose title mentions flake.lock or "update flake" without a label.
    /// Off by default: anyone who can open a PR chooses its title.
    #[arg(long, env = "NIXDECK_PR_MATCH_TITLE", default_value_t = false,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub pr_match_title: bool,

    /// The files an update PR may change (comma-separated paths from the repository's
    /// root); a PR that changes any other file is not deployed.
    #[arg(
        long,
        env = "NIXDECK_PR_ALLOWED_FILES",
        value_delimiter = ',',
        default_value = "flake.lock"
    )]
    pub pr_allowed_files: Vec<String>,

    /// The GitHub logins whose PRs may be deployed (comma-separated, e.g.
    /// `github-actions[bot],renovate[bot]`). Unset: any bot account (an app's user, such as
    /// `github-actions[bot]`), never a person's.
    #[arg(long, env = "NIXDECK_PR_AUTHORS", value_delimiter = ',')]
    pub pr_authors: Vec<String>,

    /// How Merge & Deploy merges: merge, squash or rebase.
    #[arg(long, env = "NIXDECK_MERGE_METHOD", default_value = "merge",
          value_parser = ["merge", "squash", "rebase"])]
    pub merge_method: String,

    /// Seconds Merge & Deploy waits for the branch head to become the merge commit.
    #[arg(long, env = "NIXDECK_MERGE_WAIT_S", default_value_t = 120)]
    pub merge_wait_s: u64,

    /// Seconds a deploy that previewed first waits for an operator's confirmation before it
    /// ends without merging: what was previewed grows stale.
    #[arg(long, env = "NIXDECK_DEPLOY_CONFIRM_TIMEOUT_S", default_value_t = 3600)]
    pub deploy_confirm_timeout_s: u64,
}

impl GithubConfig {
    /// The API token from the flag, the environment or the token file.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        use anyhow::Context;
        match (&self.github_token, &self.github_token_file) {
            (Some(t), _) => Ok(Some(t.trim().to_owned())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the GitHub token file {}", path.display()))?;
                Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
            }
            (None, None) => Ok(None),
        }
    }
}

/// An address or a CIDR range (an address alone is a range of one).
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is neither an address nor a CIDR range"))
}

impl Config {
    /// Where the first admin's password comes from: NIXDECK_ADMIN_PASSWORD (from the
    /// process environment), else `--admin-password-file`, else `admin-password` next to
    /// the SQLite database. An in-memory database has no folder: then one of the two must
    /// be set.
    pub fn admin_password(&self) -> anyhow::Result<AdminPassword> {
        self.admin_password_with(std::env::var_os(ADMIN_PASSWORD_ENV))
    }

    /// `admin_password` with the environment variable's value passed in (tests).
    fn admin_password_with(
        &self,
        env: Option<std::ffi::OsString>,
    ) -> anyhow::Result<AdminPassword> {
        if let Some(value) = env {
            let value = value
                .into_string()
                .map_err(|_| anyhow::anyhow!("{ADMIN_PASSWORD_ENV} is not valid UTF-8"))?;
            return Ok(AdminPassword::Given(value));
        }
        if let Some(path) = &self.admin_password_file {
            return Ok(AdminPassword::File(path.clone()));
        }
        let db = crate::storage::database_file(&self.database_url).ok_or_else(|| {
            anyhow::anyhow!(
                "the database {} has no folder for the admin password file: set \
                 NIXDECK_ADMIN_PASSWORD_FILE or {ADMIN_PASSWORD_ENV}",
                crate::storage::shown_url(&self.database_url)
            )
        })?;
        Ok(AdminPassword::File(
            db.parent()
                .unwrap_or(std::path::Path::new(""))
                .join("admin-password"),
        ))
    }

    /// The /metrics bearer token from `--metrics-token-file` (read once, at start).
    pub fn metrics_token(&self) -> anyhow::Result<Option<String>> {
        use anyhow::Context;
        let Some(path) = &self.metrics_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the metrics token file {}", path.display()))?;
        let token = text.trim();
        // An empty token would let an empty `Bearer` header through.
        anyhow::ensure!(
            !token.is_empty(),
            "the metrics token file {} is empty",
            path.display()
        );
        Ok(Some(token.to_owned()))
    }

    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// Browsers reach the dashboard over HTTPS: it serves TLS itself, or sits behind an
    /// HTTPS reverse proxy (`NIXDECK_PUBLIC_URL=https://…`). Then the session cookie is the
    /// `__Host-` one with `Secure`, and responses carry HSTS.
    pub fn secure(&self) -> bool {
        self.tls()
            || self
                .public_url
                .as_deref()
                // `get`, not slicing: a multi-byte character there must not panic.
                .and_then(|u| u.get(..8))
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    }

    /// `max_output_mb` in bytes.
    pub fn max_output_bytes(&self) -> u64 {
        self.max_output_mb * 1024 * 1024
    }

    /// The secret key file: `--secret-key-file`, or `secret.key` in the SQLite database's
    /// folder (the working directory for an in-memory one). A PostgreSQL database has no
    /// folder here, and every server on it needs the same key: there the flag is required.
    pub fn secret_key_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.secret_key_file {
            return Ok(path.clone());
        }
        anyhow::ensure!(
            crate::storage::Backend::of_url(&self.database_url) == crate::storage::Backend::Sqlite,
            "with a PostgreSQL database, set NIXDECK_SECRET_KEY_FILE (--secret-key-file): the \
             same key file on every server that uses the database (docs/SCALING.md)"
        );
        Ok(crate::storage::database_file(&self.database_url)
            .and_then(|db| db.parent().map(|dir| dir.join("secret.key")))
            .unwrap_or_else(|| PathBuf::from("secret.key")))
    }

    pub fn timeout_s(&self, kind: protocol::CommandKind) -> u64 {
        use protocol::CommandKind::*;
        match kind {
            Pull => self.timeout_pull_s,
            // A build can take as long as a switch's, and an activation's confirm window
            // (the agent's health gate, 120 s by default) runs inside the command.
            Switch | PullSwitch | Boot | Preview | Rollback => self.timeout_switch_s,
            Test => self.timeout_test_s,
            _ => self.timeout_other_s,
        }
    }
}

/// `--database-url`: SQLite's URLs and PostgreSQL's. sqlx's SQLite driver reads anything
/// without its `sqlite:` prefix as a file name, so a URL of another database (or a typo)
/// would silently become a SQLite file of that name in the working directory; it is refused
/// here instead, with the reason.
fn parse_database_url(url: &str) -> Result<String, String> {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("sqlite:")
        || lower.starts_with("postgres://")
        || lower.starts_with("postgresql://")
    {
        return Ok(url.trim().to_owned());
    }
    const USE: &str = "use sqlite://PATH or postgres://USER@HOST/DATABASE";
    match lower.split_once("://") {
        Some((scheme, _)) if !scheme.is_empty() => {
            Err(format!("unknown database scheme `{scheme}`; {USE}"))
        }
        _ => Err(format!(
            "not a database URL; {USE} (e.g. sqlite://data/nixdeck.db)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL that is neither SQLite's nor PostgreSQL's stops the start, saying why, rather
    /// than becoming a SQLite file of that name.
    #[test]
    fn database_urls_other_than_sqlite_and_postgres_are_refused() {
        let parse = |url: &str| Config::try_parse_from(["nixdeck", "--database-url", url]);
        for ok in [
            "sqlite://data/nixdeck.db",
            "sqlite:x.db",
            "sqlite::memory:",
            "SQLITE:///abs.db",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgresql://h/db",
            "POSTGRES://nixdeck@localhost/nixdeck?host=/run/postgresql",
        ] {
            assert_eq!(
                parse(ok).map(|c| c.database_url).ok().as_deref(),
                Some(ok),
                "{ok}"
            );
        }
        for (bad, says) in [
            ("mysql://h/db", "unknown database scheme `mysql`"),
            ("postgres:/h/db", "not a database URL"),
            ("data/nixdeck.db", "not a database URL"),
            ("", "not a database URL"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// A session can command every host as root: by default it lasts a working day, and
    /// the rarest, most powerful actions want the password again after ten minutes.
    #[test]
    fn an_https_public_url_makes_the_site_secure_and_odd_ones_do_not_panic() {
        let secure = |url: &str| Config::parse_from(["nixdeck", "--public-url", url]).secure();
        assert!(secure("https://deck.example.org"));
        assert!(secure("HTTPS://deck.example.org"));
        assert!(!secure("http://deck.example.org"));
        assert!(!secure("httpséé://x"), "byte 8 inside a character");
        assert!(!secure("https"));
        assert!(!Config::parse_from(["nixdeck"]).secure());
    }

    #[test]
    fn sessions_are_short_by_default() {
        let c = Config::parse_from(["nixdeck"]);
        assert_eq!((c.session_idle_min, c.session_max_h), (8 * 60, 24));
        assert_eq!(c.reauth_window_s, 600);
    }

    fn config(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("nixdeck").chain(args.iter().copied()))
    }

    #[test]
    fn the_admin_password_file_sits_next_to_the_database_unless_set() {
        let default = config(&["--database-url", "sqlite://var/lib/deck/nixdeck.db"]);
        assert_eq!(
            default.admin_password_with(None).unwrap(),
            AdminPassword::File("var/lib/deck/admin-password".into())
        );
        let set = config(&[
            "--database-url",
            "sqlite://var/lib/deck/nixdeck.db",
            "--admin-password-file",
            "/run/secrets/admin",
        ]);
        assert_eq!(
            set.admin_password_with(None).unwrap(),
            AdminPassword::File("/run/secrets/admin".into())
        );
        // The environment variable wins over any file.
        assert_eq!(
            set.admin_password_with(Some("from-the-environment".into()))
                .unwrap(),
            AdminPassword::Given("from-the-environment".into())
        );
        // An in-memory database has no folder to put the file in.
        assert!(config(&["--database-url", "sqlite::memory:"])
            .admin_password_with(None)
            .is_err());
    }

    /// Every server on one PostgreSQL database needs the same key, and a PostgreSQL URL has
    /// no folder to put one in: the key file must be named there.
    #[test]
    fn the_secret_key_sits_next_to_sqlite_and_is_named_for_postgres() {
        let sqlite = config(&["--database-url", "sqlite://var/lib/deck/nixdeck.db"]);
        assert_eq!(
            sqlite.secret_key_path().unwrap(),
            PathBuf::from("var/lib/deck/secret.key")
        );
        let postgres = config(&["--database-url", "postgres://deck@db/nixdeck"]);
        let err = postgres.secret_key_path().unwrap_err().to_string();
        assert!(err.contains("NIXDECK_SECRET_KEY_FILE"), "{err}");
        let named = config(&[
            "--database-url",
            "postgres://deck@db/nixdeck",
            "--secret-key-file",
            "/run/secrets/nixdeck.key",
        ]);
        assert_eq!(
            named.secret_key_path().unwrap(),
            PathBuf::from("/run/secrets/nixdeck.key")
        );
    }

    /// A command line shows in `ps`: the password has no flag, only the environment.
    #[test]
    fn there_is_no_admin_password_flag() {
        let parsed = Config::try_parse_from(["nixdeck", "--admin-password", "secret-password-1"]);
        assert!(parsed.is_err());
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        github: GithubConfig,
    }

    #[test]
    fn update_pr_rules_default_to_the_strict_ones() {
        let g = Cli::parse_from(["x"]).github;
        assert!(!g.pr_match_title);
        assert_eq!(g.pr_allowed_files, ["flake.lock"]);
        assert!(g.pr_authors.is_empty(), "bots only");
        let g = Cli::parse_from([
            "x",
            "--pr-match-title",
            "--pr-allowed-files",
            "flake.lock,hosts/flake.lock",
            "--pr-authors",
            "renovate[bot],alice",
        ])
        .github;
        assert!(g.pr_match_title);
        assert_eq!(g.pr_allowed_files, ["flake.lock", "hosts/flake.lock"]);
        assert_eq!(g.pr_authors, ["renovate[bot]", "alice"]);
        let g = Cli::parse_from(["x", "--pr-match-title=false"]).github;
        assert!(!g.pr_match_title);
    }
}
