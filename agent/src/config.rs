//! Command line, environment and the optional config file: the raw `Cli` and the checked
//! `Config` the agent runs on.

use crate::nix::{Activation, Health, SwitchAction, SystemSettings};
use crate::plan::{Checkout, CommandOverride};
use crate::probes;
use crate::token::{Secret, TokenSource};
use clap::{ArgGroup, Parser, ValueEnum};
use protocol::{is_valid_host_id, is_valid_theme_color, CommandKind, HostType};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tokio_tungstenite::tungstenite::http::Uri;

#[derive(Debug, Parser)]
#[command(
    name = "nixdeck-agent",
    version = protocol::VERSION,
    about = "The nixdeck host agent: reports this host to the dashboard over one WebSocket",
    long_about = None,
    // Exactly one of --token / --token-file; clap names both when neither is given.
    group = ArgGroup::new("credentials").required(true).args(["token", "token_file"])
)]
pub struct Cli {
    /// Dashboard URL: an http(s) base such as http://127.0.0.1:3000 or https://deck.example.org
    /// (the agent connects to ws(s)://…/ws/agent), or the full ws:// or wss:// URL. Several
    /// replicas of one dashboard: repeat --url or separate them with commas; the agent
    /// connects to the first and moves to the next when a connection fails or drops
    #[arg(
        long,
        env = "NIXDECK_URL",
        value_name = "URL",
        required = true,
        value_delimiter = ','
    )]
    pub url: Vec<String>,

    /// Allow a plaintext http:// or ws:// URL to a dashboard that is not on this machine.
    /// Without TLS the token travels in clear and anyone on the path can command this host,
    /// so plaintext is refused except to loopback unless this is given
    #[arg(long, env = "NIXDECK_INSECURE")]
    pub insecure: bool,

    /// Host token or enrollment token. Prefer --token-file: arguments are visible in `ps`
    #[arg(
        long,
        env = "NIXDECK_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// File holding the token (surrounding whitespace is ignored). After enrollment the new
    /// host token is written here (mode 0600)
    #[arg(long, env = "NIXDECK_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Heartbeat interval in seconds; the dashboard's value wins once registered
    #[arg(
        long,
        env = "NIXDECK_INTERVAL",
        value_name = "SECONDS",
        default_value_t = protocol::DEFAULT_HEARTBEAT_S,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub interval: u32,

    /// Host name to register as [default: the OS hostname without its domain, lower-cased]
    #[arg(long, env = "NIXDECK_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,

    /// Kind of host [default: nixos if /etc/NIXOS exists, macos on macOS, else nixos]
    #[arg(long, env = "NIXDECK_HOST_TYPE", value_name = "TYPE", value_parser = parse_host_type)]
    pub host_type: Option<HostType>,

    /// Card colour on the dashboard, as #rrggbb
    #[arg(long, env = "NIXDECK_THEME_COLOR", value_name = "#RRGGBB", value_parser = parse_theme_color)]
    pub theme_color: Option<String>,

    /// Free-text location shown on the dashboard (e.g. "office")
    #[arg(long, env = "NIXDECK_LOCATION", value_name = "TEXT")]
    pub location: Option<String>,

    /// Free-text device type shown on the dashboard (e.g. "laptop", "server")
    #[arg(long, env = "NIXDECK_DEVICE_TYPE", value_name = "TEXT")]
    pub device_type: Option<String>,

    /// Tags of this host, comma-separated (e.g. "web,canary"): lower-case letters, digits,
    /// `.`, `_`, `-`, at most 32 characters each and 32 tags. Shown on the dashboard beside
    /// the ones set there; bulk actions, deploys and notification rules can name them
    #[arg(long, env = "NIXDECK_TAGS", value_name = "TAG,…", value_delimiter = ',', value_parser = parse_tag)]
    pub tags: Vec<String>,

    /// Checkout of the configuration repository (legacy mode: the operator's own checkout):
    /// its HEAD is reported as the generation and the SHA-256 of its flake.lock as the lock
    /// hash; commands run on it
    #[arg(long, env = "NIXDECK_REPO_DIR", value_name = "DIR")]
    pub repo_dir: Option<PathBuf>,

    /// Accept a --repo-dir (or its .git) owned by another user than the one the agent runs
    /// as. git runs in the checkout as the agent's user, so the checkout's owner can run
    /// code as that user (root, for the service) through its git hooks and config: without
    /// this flag such a checkout is refused at start
    #[arg(long, env = "NIXDECK_ALLOW_FOREIGN_REPO_OWNER")]
    pub allow_foreign_repo_owner: bool,

    /// Remote URL of the configuration repository. Without --repo-dir the agent keeps its
    /// own clone of it in <state-dir>/repo (isolated mode); with it, it is only reported
    #[arg(long, env = "NIXDECK_REPO_URL", value_name = "URL")]
    pub repo_url: Option<String>,

    /// Branch of the configuration repository this host follows
    #[arg(
        long,
        env = "NIXDECK_BRANCH",
        value_name = "BRANCH",
        default_value = "main"
    )]
    pub branch: String,

    /// Directory for the agent's own state (the enrolled token, the output of commands not
    /// yet delivered, the isolated clone) [default: /var/lib/nixdeck-agent as root, else
    /// $XDG_STATE_HOME/nixdeck-agent or ~/.local/state/nixdeck-agent]
    #[arg(long, env = "NIXDECK_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// TOML file whose [commands] table sets the argv (and optionally timeout_s) of pull,
    /// switch, pull-switch, test, update and rollback; everything has defaults
    #[arg(long, env = "NIXDECK_AGENT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Output of one command kept on disk until the dashboard has it, in MiB; past it,
    /// further lines are dropped and counted in one marker line
    #[arg(
        long,
        env = "NIXDECK_SPOOL_LIMIT_MB",
        value_name = "MIB",
        default_value_t = 64,
        value_parser = clap::value_parser!(u64).range(1..=1_048_576)
    )]
    pub spool_limit_mb: u64,

    /// How a built configuration is activated, which also picks the default flake
    /// attribute and profile: nixos (`bin/switch-to-configuration`), darwin (nix-darwin's
    /// `activate`) or home-manager (`activate`, as the user) [default: nixos on NixOS,
    /// darwin on macOS]
    #[arg(long, env = "NIXDECK_ACTIVATION", value_name = "KIND", value_parser = parse_activation)]
    pub activation: Option<Activation>,

    /// The profile switch, boot and rollback set [default: /nix/var/nix/profiles/system;
    /// home-manager: ~/.local/state/nix/profiles/home-manager]. Its directory must exist
    #[arg(long, env = "NIXDECK_SYSTEM_PROFILE", value_name = "PATH")]
    pub system_profile: Option<PathBuf>,

    /// The flake attribute built from the checkout; {hostname} is substituted [default:
    /// nixosConfigurations.{hostname}.config.system.build.toplevel; darwin:
    /// darwinConfigurations.{hostname}.system; home-manager:
    /// homeConfigurations.{hostname}.activationPackage]
    #[arg(long, env = "NIXDECK_FLAKE_ATTR", value_name = "ATTR")]
    pub flake_attr: Option<String>,

    /// After a switch's activation, the agent must reach the dashboard again and the
    /// health checks must pass within this many seconds, or the previous generation is
    /// put back
    #[arg(
        long,
        env = "NIXDECK_CONFIRM_TIMEOUT_S",
        value_name = "SECONDS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub confirm_timeout_s: u64,

    /// What a switch does with the built system (NixOS only): `switch` makes it a new
    /// generation of the profile, the boot default, and activates it; `test` only
    /// activates it (`switch-to-configuration test`, as `nixos-rebuild test`), so the
    /// profile and the boot default stay, and a failed health gate re-activates the
    /// system that was running before
    #[arg(
        long,
        env = "NIXDECK_SWITCH_ACTION",
        value_name = "ACTION",
        value_enum,
        default_value_t = SwitchAction::Switch
    )]
    pub switch_action: SwitchAction,

    /// The running system, what a preview diffs against [default: /run/current-system;
    /// home-manager: the profile]
    #[arg(long, env = "NIXDECK_CURRENT_SYSTEM", value_name = "PATH")]
    pub current_system: Option<PathBuf>,

    /// The system the machine booted, for reboot_needed and the booted generation
    #[arg(
        long,
        env = "NIXDECK_BOOTED_SYSTEM",
        value_name = "PATH",
        default_value = "/run/booted-system"
    )]
    pub booted_system: PathBuf,

    /// Log lines on stderr: text, or json (one object per line, for a log collector)
    #[arg(long, env = "NIXDECK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_activation(s: &str) -> Result<Activation, String> {
    Activation::parse(s)
        .ok_or_else(|| format!("`{s}` is not an activation; use nixos, darwin or home-manager"))
}

fn parse_host_type(s: &str) -> Result<HostType, String> {
    HostType::parse(s).ok_or_else(|| format!("`{s}` is not a host type; use nixos or macos"))
}

fn parse_tag(s: &str) -> Result<String, String> {
    let tag = s.trim();
    if protocol::is_valid_tag(tag) {
        Ok(tag.to_owned())
    } else {
        Err(format!(
            "`{tag}` is not a tag (lower-case letters, digits, `.`, `_`, `-`, starting with \
             a letter or digit, at most 32 characters)"
        ))
    }
}

fn parse_theme_color(s: &str) -> Result<String, String> {
    if is_valid_theme_color(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("`{s}` is not a colour of the form #rrggbb"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid --url `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "`{0}` is not a valid host id (lower-case letters, digits, `.`, `_`, `-`, \
         starting with a letter or digit, at most 63 characters); set --hostname"
    )]
    Hostname(String),
    #[error("cannot read the OS hostname; set --hostname")]
    NoHostname,
    #[error("cannot choose a state directory (no $HOME); set --state-dir")]
    NoStateDir,
    #[error("cannot find the home-manager profile (no $HOME); set --system-profile")]
    NoProfile,
    #[error(
        "--switch-action test activates with NixOS's `switch-to-configuration test`, which \
         {0} configurations do not have; use --switch-action switch with --activation {0}"
    )]
    SwitchActionNeedsNixos(&'static str),
    #[error("--flake-attr is empty")]
    EmptyFlakeAttr,
    #[error("--tags names {0} tags; a host carries at most 32")]
    TooManyTags(usize),
    #[error("--token is empty")]
    EmptyToken,
    #[error("`{0}` is not a branch name git would accept; set --branch")]
    Branch(String),
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error(
        "refusing plaintext `{0}`: the token would travel in clear and anyone on the path \
         could command this host; use https:// or wss://, or pass --insecure"
    )]
    Plaintext(String),
    #[error(
        "refusing --repo-dir {dir}: {path} belongs to {owner}, not to {agent} that this agent \
         runs as; the agent runs git in the checkout, so {owner} could run code as {agent} \
         through its git hooks and config. chown -R the checkout to {agent}, use isolated mode \
         (--repo-url without --repo-dir), or accept the risk with --allow-foreign-repo-owner"
    )]
    ForeignRepoOwner {
        dir: String,
        path: String,
        owner: String,
        agent: String,
    },
    #[error(
        "cannot check who owns --repo-dir {dir}: {path}: {reason} (a checkout must exist when \
         the agent starts; --allow-foreign-repo-owner skips the check)"
    )]
    RepoDirUnreadable {
        dir: String,
        path: String,
        reason: String,
    },
}

/// Everything the agent needs, checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// `ws(s)://host:port/ws/agent` of each replica of the dashboard, in the order given;
    /// never empty, each once.
    pub ws_urls: Vec<String>,
    pub token: TokenSource,
    pub hostname: String,
    pub host_type: HostType,
    pub interval_s: u32,
    pub theme_color: Option<String>,
    pub location: Option<String>,
    pub device_type: Option<String>,
    /// `--tags`, sorted, each once.
    pub tags: Vec<String>,
    /// The checkout commands work on and the generation is read from, if any.
    pub checkout: Option<Checkout>,
    pub repo_url: Option<String>,
    pub branch: String,
    pub state_dir: PathBuf,
    /// `[commands]` of the config file.
    pub commands: HashMap<CommandKind, CommandOverride>,
    /// Most bytes of output kept on disk per command.
    pub spool_limit: u64,
    /// This binary, started again as `supervise` for each command.
    pub supervisor_exe: PathBuf,
    /// The Nix-native switch, boot, preview and rollback (`sudo` is decided per plan).
    pub system: SystemSettings,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let ws_urls = agent_ws_urls(&cli.url, cli.insecure)?;

        let token = match (cli.token, cli.token_file) {
            (_, Some(path)) => TokenSource::File(path),
            (Some(token), None) => {
                let token = token.trim();
                if token.is_empty() {
                    return Err(ConfigError::EmptyToken);
                }
                TokenSource::Inline(Secret::new(token))
            }
            // The required `credentials` group makes this unreachable.
            (None, None) => return Err(ConfigError::EmptyToken),
        };

        // An explicit name is checked as given: the contract never rewrites host ids.
        let hostname = match non_empty(cli.hostname) {
            Some(name) => name,
            None => probes::os_hostname().ok_or(ConfigError::NoHostname)?,
        };
        if !is_valid_host_id(&hostname) {
            return Err(ConfigError::Hostname(hostname));
        }

        let state_dir = match cli.state_dir.filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) => absolute(dir),
            None => default_state_dir().ok_or(ConfigError::NoStateDir)?,
        };

        let branch = cli.branch.trim().to_owned();
        if !is_valid_branch(&branch) {
            return Err(ConfigError::Branch(branch));
        }
        let repo_url = non_empty(cli.repo_url);
        let checkout = match (
            cli.repo_dir.filter(|p| !p.as_os_str().is_empty()),
            &repo_url,
        ) {
            (Some(dir), _) => {
                let dir = absolute(dir);
                // SAFETY: geteuid has no preconditions and cannot fail.
                let uid = unsafe { libc::geteuid() };
                check_repo_owner(&dir, uid, cli.allow_foreign_repo_owner)?;
                Some(Checkout {
                    dir,
                    clone_url: None,
                })
            }
            (None, Some(url)) => Some(Checkout {
                dir: state_dir.join("repo"),
                clone_url: Some(url.clone()),
            }),
            (None, None) => None,
        };
        let (commands, health) = match &cli.config {
            Some(path) => load_file(path)?,
            None => (HashMap::new(), Health::default()),
        };
        let host_type = cli.host_type.unwrap_or_else(probes::detect_host_type);
        let activation = cli.activation.unwrap_or(match host_type {
            HostType::Nixos => Activation::Nixos,
            HostType::Macos => Activation::Darwin,
        });
        // nix-darwin and Home Manager have only `activate`: there is no "activate without
        // making it the default" to offer, so asking for one is refused at start rather
        // than silently switching for real.
        if cli.switch_action == SwitchAction::Test && activation != Activation::Nixos {
            return Err(ConfigError::SwitchActionNeedsNixos(activation.as_str()));
        }
        let profile = match cli.system_profile.filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => absolute(path),
            None if activation == Activation::HomeManager => std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .ok_or(ConfigError::NoProfile)?
                .join(".local/state/nix/profiles/home-manager"),
            None => PathBuf::from("/nix/var/nix/profiles/system"),
        };
        let flake_attr = match cli.flake_attr {
            Some(attr) if attr.trim().is_empty() => return Err(ConfigError::EmptyFlakeAttr),
            Some(attr) => attr.trim().to_owned(),
            None => activation.default_flake_attr().to_owned(),
        };
        let current_system = match cli.current_system.filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => absolute(path),
            // Home Manager has no system link: what runs is what its profile points at.
            None if activation == Activation::HomeManager => profile.clone(),
            None => PathBuf::from("/run/current-system"),
        };
        let mut tags = cli.tags;
        tags.sort();
        tags.dedup();
        if tags.len() > protocol::MAX_TAGS {
            return Err(ConfigError::TooManyTags(tags.len()));
        }
        let system = SystemSettings {
            activation,
            profile,
            flake_attr,
            confirm_timeout_s: cli.confirm_timeout_s.max(1),
            switch_action: cli.switch_action,
            current_system,
            booted_system: absolute(cli.booted_system),
            health,
            sudo: false,
        };

        Ok(Config {
            ws_urls,
            token,
            hostname,
            host_type,
            interval_s: cli.interval.max(1),
            theme_color: non_empty(cli.theme_color),
            location: non_empty(cli.location),
            device_type: non_empty(cli.device_type),
            tags,
            checkout,
            repo_url,
            branch,
            state_dir,
            commands,
            spool_limit: cli.spool_limit_mb * 1024 * 1024,
            supervisor_exe: std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from("nixdeck-agent")),
            system,
        })
    }
}

/// Legacy mode: refuses a checkout that git's ownership check would refuse if the agent
/// did not pass `safe.directory=*` (see repo.rs), unless `allow` (then only warns).
fn check_repo_owner(dir: &Path, uid: u32, allow: bool) -> Result<(), ConfigError> {
    let err = match crate::repo::foreign_owner(dir, uid) {
        Ok(None) => return Ok(()),
        Ok(Some((path, owner))) => ConfigError::ForeignRepoOwner {
            dir: dir.display().to_string(),
            path: path.display().to_string(),
            owner: describe_uid(owner),
            agent: describe_uid(uid),
        },
        Err((path, e)) => ConfigError::RepoDirUnreadable {
            dir: dir.display().to_string(),
            path: path.display().to_string(),
            reason: e.to_string(),
        },
    };
    if !allow {
        return Err(err);
    }
    match err {
        ConfigError::ForeignRepoOwner {
            path, owner, agent, ..
        } => tracing::warn!(
            "--allow-foreign-repo-owner: {path} belongs to {owner}, who can run code as \
             {agent} through the checkout's git hooks and config"
        ),
        other => tracing::warn!("--allow-foreign-repo-owner: {other}"),
    }
    Ok(())
}

/// `uid 1000 (alice)`, or `uid 1000` when the user database has no name for it.
fn describe_uid(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data (integers and pointers) for which all-zero is valid.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf.len() is buf's true length;
    // getpwuid_r writes the strings it returns into buf, which outlives their use below.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The config file. Unknown keys are errors: a typo must not silently fall back to a
/// default that runs something else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    commands: BTreeMap<String, CommandEntry>,
    /// What a switch's health gate checks besides `hosts/<host>/tests/`.
    #[serde(default)]
    health: Health,
}

/// `switch = ["argv", …]` or `switch = { argv = […], timeout_s = 600 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CommandEntry {
    Argv(Vec<String>),
    Table(CommandTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandTable {
    argv: Option<Vec<String>>,
    timeout_s: Option<u64>,
}

/// Reads `[commands]` from the config file.
pub fn load_commands(path: &Path) -> Result<HashMap<CommandKind, CommandOverride>, ConfigError> {
    load_file(path).map(|(commands, _)| commands)
}

/// Reads `[commands]` and `[health]` from the config file.
pub fn load_file(
    path: &Path,
) -> Result<(HashMap<CommandKind, CommandOverride>, Health), ConfigError> {
    let err = |reason: String| ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: ConfigFile =
        toml::from_str(&text).map_err(|e| err(e.to_string().trim().to_owned()))?;
    check_health(&file.health).map_err(err)?;
    let health = file.health.clone();
    Ok((commands_of(file).map_err(err)?, health))
}

fn check_health(health: &Health) -> Result<(), String> {
    for unit in &health.units {
        if unit.trim().is_empty() || unit.starts_with('-') || unit.contains(char::is_whitespace) {
            return Err(format!("health.units: `{unit}` is not a unit name"));
        }
    }
    for url in &health.urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "health.urls: `{url}` is not an http:// or https:// URL"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
fn parse_commands(text: &str) -> Result<HashMap<CommandKind, CommandOverride>, String> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
    commands_of(file)
}

fn commands_of(file: ConfigFile) -> Result<HashMap<CommandKind, CommandOverride>, String> {
    let mut commands = HashMap::new();
    for (name, entry) in file.commands {
        let kind = CommandKind::parse(&name).ok_or_else(|| {
            format!(
                "unknown command `{name}` in [commands]; expected one of: {}",
                CONFIGURABLE.map(CommandKind::as_str).join(", ")
            )
        })?;
        if !CONFIGURABLE.contains(&kind) {
            return Err(format!(
                "`{name}` is built into the agent and cannot be configured"
            ));
        }
        let (argv, timeout_s) = match entry {
            CommandEntry::Argv(argv) => (Some(argv), None),
            CommandEntry::Table(t) => (t.argv, t.timeout_s),
        };
        if argv
            .as_ref()
            .is_some_and(|a| a.first().is_none_or(|p| p.trim().is_empty()))
        {
            return Err(format!("commands.{name}: the argv must name a program"));
        }
        if timeout_s == Some(0) {
            return Err(format!("commands.{name}: timeout_s must be at least 1"));
        }
        commands.insert(kind, CommandOverride { argv, timeout_s });
    }
    Ok(commands)
}

const CONFIGURABLE: [CommandKind; 7] = [
    CommandKind::Pull,
    CommandKind::Switch,
    CommandKind::PullSwitch,
    CommandKind::Test,
    CommandKind::Update,
    CommandKind::Rollback,
    CommandKind::Boot,
];

/// What `git check-ref-format --branch` would refuse, and anything that could pass for an
/// option in a git command line.
fn is_valid_branch(branch: &str) -> bool {
    !branch.is_empty()
        && !branch.starts_with(['-', '/', '.'])
        && !branch.ends_with(['/', '.'])
        && !branch.ends_with(".lock")
        && !branch.contains("..")
        && !branch.contains("@{")
        && !branch.contains("//")
        && !branch
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

/// An empty environment variable (`NIXDECK_LOCATION=`) means "not set".
fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The agent endpoints of the `--url` values, in order and each once. Each is checked on
/// its own: one plaintext URL to another machine is refused even when the others use TLS.
fn agent_ws_urls(urls: &[String], insecure: bool) -> Result<Vec<String>, ConfigError> {
    let mut ws_urls: Vec<String> = Vec::with_capacity(urls.len());
    for url in urls {
        // `NIXDECK_URL=a,,b` or a trailing comma: an empty item names nothing.
        if url.trim().is_empty() && urls.len() > 1 {
            continue;
        }
        let ws_url = agent_ws_url(url)?;
        if !insecure && !is_encrypted_or_local(&ws_url) {
            return Err(ConfigError::Plaintext(url.trim().to_owned()));
        }
        if !ws_urls.contains(&ws_url) {
            ws_urls.push(ws_url);
        }
    }
    if ws_urls.is_empty() {
        return Err(ConfigError::Url {
            url: String::new(),
            reason: "no URL given".into(),
        });
    }
    Ok(ws_urls)
}

/// The agent endpoint for a dashboard URL: http(s) bases get `/ws/agent` appended (kept
/// under a sub-path, for dashboards behind a reverse proxy); ws(s) URLs are used as given.
pub fn agent_ws_url(url: &str) -> Result<String, ConfigError> {
    let err = |reason: &str| ConfigError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e| err(&format!("not a URL ({e})")))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| err("missing scheme; use http://, https://, ws:// or wss://"))?
        .to_ascii_lowercase();
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| err("missing host"))?;
    let path = uri.path();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();

    let (ws_scheme, ws_path) = match scheme.as_str() {
        "http" | "https" => {
            let ws_scheme = if scheme == "https" { "wss" } else { "ws" };
            let path = if path.ends_with("/ws/agent") {
                path.to_owned()
            } else {
                format!("{}/ws/agent", path.trim_end_matches('/'))
            };
            (ws_scheme, path)
        }
        "ws" | "wss" => {
            let path = if path.is_empty() || path == "/" {
                "/ws/agent".to_owned()
            } else {
                path.to_owned()
            };
            (if scheme == "wss" { "wss" } else { "ws" }, path)
        }
        other => {
            return Err(err(&format!(
                "unsupported scheme `{other}`; use http://, https://, ws:// or wss://"
            )))
        }
    };
    Ok(format!("{ws_scheme}://{authority}{ws_path}{query}"))
}

/// Whether a `ws(s)://` URL from `agent_ws_url` keeps the token safe: TLS, or a plaintext
/// link that never leaves this machine (localhost, 127.0.0.0/8, ::1).
pub fn is_encrypted_or_local(ws_url: &str) -> bool {
    if ws_url.starts_with("wss://") {
        return true;
    }
    let Some(host) = ws_url
        .parse::<Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
    else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `/var/lib/nixdeck-agent` for root (the systemd/launchd service), else the user's XDG
/// state directory, so running the agent by hand needs no special permissions.
/// Paths given relative to where the agent started are made absolute once, because
/// commands run with the checkout as their working directory.
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

fn default_state_dir() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/lib/nixdeck-agent"));
    }
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = absolute("XDG_STATE_HOME") {
        return Some(xdg.join("nixdeck-agent"));
    }
    absolute("HOME").map(|home| home.join(".local/state/nixdeck-agent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_base_becomes_ws() {
        assert_eq!(
            agent_ws_url("http://127.0.0.1:3000").unwrap(),
            "ws://127.0.0.1:3000/ws/agent"
        );
        assert_eq!(
            agent_ws_url("http://127.0.0.1:3000/").unwrap(),
            "ws://127.0.0.1:3000/ws/agent"
        );
        assert_eq!(
            agent_ws_url("HTTP://deck.lan").unwrap(),
            "ws://deck.lan/ws/agent"
        );
    }

    #[test]
    fn https_base_becomes_wss() {
        assert_eq!(
            agent_ws_url("https://deck.example.org").unwrap(),
            "wss://deck.example.org/ws/agent"
        );
        assert_eq!(
            agent_ws_url("https://deck.example.org:8443/").unwrap(),
            "wss://deck.example.org:8443/ws/agent"
        );
        // Behind a reverse proxy under a sub-path.
        assert_eq!(
            agent_ws_url("https://example.org/nixdeck/").unwrap(),
            "wss://example.org/nixdeck/ws/agent"
        );
        // Already the endpoint.
        assert_eq!(
            agent_ws_url("https://example.org/ws/agent").unwrap(),
            "wss://example.org/ws/agent"
        );
    }

    #[test]
    fn explicit_ws_url_is_kept() {
        assert_eq!(
            agent_ws_url("ws://10.0.0.1:3000/ws/agent").unwrap(),
            "ws://10.0.0.1:3000/ws/agent"
        );
        assert_eq!(
            agent_ws_url("wss://deck.example.org/custom/path").unwrap(),
            "wss://deck.example.org/custom/path"
        );
        assert_eq!(
            agent_ws_url("ws://[::1]:3000").unwrap(),
            "ws://[::1]:3000/ws/agent"
        );
    }

    #[test]
    fn bad_urls_are_rejected() {
        for bad in [
            "ftp://deck.lan",
            "127.0.0.1:3000",
            "deck.lan",
            "http://",
            "",
            "file:///tmp/x",
        ] {
            let e = agent_ws_url(bad).unwrap_err();
            assert!(matches!(e, ConfigError::Url { .. }), "{bad}: {e}");
        }
        let e = agent_ws_url("ftp://deck.lan").unwrap_err().to_string();
        assert!(e.contains("unsupported scheme `ftp`"), "{e}");
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["nixdeck-agent"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::from_cli(cli).map_err(|e| e.to_string())
    }

    /// `parse` with a URL, token, hostname and state directory, plus `extra`.
    fn parse_with(extra: &[&str]) -> Result<Config, String> {
        let mut args = vec![
            "--url",
            "http://127.0.0.1:3000",
            "--token",
            "t",
            "--hostname",
            "web-1",
            "--state-dir",
            "/tmp/nd",
        ];
        args.extend_from_slice(extra);
        parse(&args)
    }

    #[test]
    fn cli_resolves() {
        let cfg = parse(&[
            "--url",
            "http://127.0.0.1:3000",
            "--token",
            "t0k",
            "--hostname",
            "web-1",
            "--host-type",
            "macos",
            "--state-dir",
            "/tmp/nd",
            "--location",
            "",
            "--theme-color",
            "#7aa2f7",
        ])
        .unwrap();
        assert_eq!(cfg.ws_urls, ["ws://127.0.0.1:3000/ws/agent"]);
        assert_eq!(cfg.hostname, "web-1");
        assert_eq!(cfg.host_type, HostType::Macos);
        assert_eq!(cfg.interval_s, 5);
        assert_eq!(cfg.branch, "main");
        assert_eq!(cfg.location, None);
        assert_eq!(cfg.theme_color.as_deref(), Some("#7aa2f7"));
        assert!(matches!(cfg.token, TokenSource::Inline(ref s) if s.expose() == "t0k"));
        assert!(cfg.tags.is_empty());
    }

    /// Replicas of one dashboard: --url repeated, or comma-separated (as NIXDECK_URL is),
    /// kept in the order given, each once; every one is checked as a single URL would be.
    #[test]
    fn several_urls_repeated_or_comma_separated() {
        let with = |urls: &[&str], extra: &[&str]| {
            let mut v = Vec::new();
            for url in urls {
                v.extend_from_slice(&["--url", url]);
            }
            v.extend_from_slice(&["--token", "x", "--hostname", "a", "--state-dir", "/tmp/nd"]);
            v.extend_from_slice(extra);
            parse(&v)
        };
        let both = [
            "ws://127.0.0.1:3001/ws/agent",
            "wss://deck-b.example.org/ws/agent",
        ];
        let repeated = with(
            &["http://127.0.0.1:3001", "https://deck-b.example.org"],
            &[],
        );
        assert_eq!(repeated.unwrap().ws_urls, both);
        let commas = with(&["http://127.0.0.1:3001,https://deck-b.example.org,"], &[]);
        assert_eq!(commas.unwrap().ws_urls, both);
        let twice = with(
            &["http://127.0.0.1:3001", "ws://127.0.0.1:3001/ws/agent", " "],
            &[],
        );
        assert_eq!(twice.unwrap().ws_urls, ["ws://127.0.0.1:3001/ws/agent"]);

        // One bad or plaintext-remote URL among good ones stops the agent, naming it.
        let err = with(&["https://deck-a.example.org", "ftp://deck-b.lan"], &[]).unwrap_err();
        assert!(
            err.contains("`ftp://deck-b.lan`") && err.contains("ftp"),
            "{err}"
        );
        let err = with(&["https://deck-a.example.org,http://deck-b.lan"], &[]).unwrap_err();
        assert!(
            err.contains("refusing plaintext `http://deck-b.lan`"),
            "{err}"
        );
        let ok = with(
            &["https://deck-a.example.org,http://deck-b.lan"],
            &["--insecure"],
        );
        assert_eq!(ok.unwrap().ws_urls.len(), 2);
        assert!(with(&[","], &[]).unwrap_err().contains("no URL given"));
        // --url is required (assumes NIXDECK_URL is not set in the test environment).
        assert!(with(&[], &[]).unwrap_err().contains("--url"));

        // The environment variable splits on commas too: checked on the declaration, as
        // the process environment is shared by the tests.
        use clap::CommandFactory;
        let cmd = Cli::command();
        let arg = cmd.get_arguments().find(|a| a.get_id() == "url").unwrap();
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some("NIXDECK_URL"));
        assert_eq!(arg.get_value_delimiter(), Some(','));
    }

    /// Tags are checked at start: one bad tag stops it, naming the tag.
    #[test]
    fn tags_are_checked_sorted_and_bounded() {
        let with = |tags: &str| parse_with(&["--tags", tags]);
        assert_eq!(with("web,canary,web").unwrap().tags, ["canary", "web"]);
        let err = with("web,Bad Tag").unwrap_err();
        assert!(err.contains("`Bad Tag` is not a tag"), "{err}");
        let many = (0..33)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let err = with(&many).unwrap_err();
        assert!(err.contains("names 33 tags"), "{err}");
    }

    /// The token and the commands must not cross a network in clear: plaintext only to
    /// this machine, or with --insecure.
    #[test]
    fn plaintext_only_to_loopback_or_when_insecure() {
        let with = |url: &str, extra: &[&str]| {
            let mut v = vec!["--url", url, "--token", "x", "--hostname", "a"];
            v.extend_from_slice(&["--state-dir", "/tmp/nd"]);
            v.extend_from_slice(extra);
            parse(&v)
        };
        for local in [
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "ws://[::1]:3000",
            "http://127.1.2.3",
        ] {
            assert!(with(local, &[]).is_ok(), "{local}");
        }
        for remote in [
            "http://deck.lan:3000",
            "ws://10.0.0.1:3000/ws/agent",
            "http://[2001:db8::1]:3000",
            "http://localhost.evil.example",
        ] {
            let e = with(remote, &[]).unwrap_err();
            assert!(
                e.contains("refusing plaintext") && e.contains("--insecure"),
                "{e}"
            );
            assert!(with(remote, &["--insecure"]).is_ok(), "{remote}");
        }
        for tls in ["https://deck.example.org", "wss://10.0.0.1/ws/agent"] {
            assert!(with(tls, &[]).is_ok(), "{tls}");
        }
    }

    #[test]
    fn cli_rejects_bad_input() {
        let base = ["--url", "http://127.0.0.1:1", "--state-dir", "/tmp/nd"];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        // No token at all (assumes NIXDECK_TOKEN* are not set in the test environment).
        assert!(with(&["--hostname", "a"]).is_err());
        assert!(with(&["--token", "x", "--token-file", "/f", "--hostname", "a"]).is_err());
        assert!(with(&["--token", "x", "--hostname", "Web"])
            .unwrap_err()
            .contains("not a valid host id"));
        assert!(with(&["--token", "x", "--hostname", "a", "--interval", "0"]).is_err());
        assert!(with(&["--token", "x", "--hostname", "a", "--theme-color", "red"]).is_err());
        assert!(with(&["--token", "x", "--hostname", "a", "--host-type", "windows"]).is_err());
        assert!(with(&["--token", "  ", "--hostname", "a"]).is_err());
        assert!(with(&[
            "--token",
            "x",
            "--hostname",
            "a",
            "--branch=--upload-pack=x"
        ])
        .unwrap_err()
        .contains("branch"));
        assert!(with(&["--token", "x", "--hostname", "a", "--spool-limit-mb", "0"]).is_err());
    }

    #[test]
    fn checkout_modes() {
        let with = |extra: &[&str]| parse_with(extra).unwrap();
        assert_eq!(with(&[]).checkout, None);
        let checkout = tempfile::tempdir().unwrap();
        let dir = checkout.path().to_str().unwrap();
        let legacy = with(&["--repo-dir", dir, "--repo-url", "https://x/cfg.git"]);
        assert_eq!(
            legacy.checkout,
            Some(Checkout {
                dir: dir.into(),
                clone_url: None
            })
        );
        assert_eq!(legacy.repo_url.as_deref(), Some("https://x/cfg.git"));
        let isolated = with(&["--repo-url", "https://x/cfg.git"]);
        assert_eq!(
            isolated.checkout,
            Some(Checkout {
                dir: "/tmp/nd/repo".into(),
                clone_url: Some("https://x/cfg.git".into())
            })
        );
        assert_eq!(isolated.spool_limit, 64 * 1024 * 1024);
    }

    /// A directory owned by another user than the one the tests run as, and that owner:
    /// as root (CI, the dev machines), a new one given to nobody (65534); otherwise `/`.
    fn foreign_dir(tmp: &Path) -> (PathBuf, u32) {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return ("/".into(), 0);
        }
        let dir = tmp.join("foreign");
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        for path in [dir.join(".git"), dir.clone()] {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        }
        (dir, 65534)
    }

    /// Legacy mode runs git in the checkout as the agent's user with safe.directory=*, so
    /// a checkout of another user would let that user run code as root through git hooks
    /// and config: refused at start, naming the owner and the flag, unless the flag says so.
    #[test]
    fn repo_dir_of_another_user_is_refused_unless_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let with = |dir: &Path, extra: &[&str]| {
            let mut v = vec![
                "--url",
                "http://127.0.0.1:1",
                "--token",
                "x",
                "--hostname",
                "a",
            ];
            v.extend_from_slice(&[
                "--state-dir",
                "/tmp/nd",
                "--repo-dir",
                dir.to_str().unwrap(),
            ]);
            v.extend_from_slice(extra);
            parse(&v)
        };

        let (foreign, owner) = foreign_dir(tmp.path());
        let err = with(&foreign, &[]).unwrap_err();
        assert!(err.starts_with("refusing --repo-dir"), "{err}");
        assert!(err.contains(&format!("belongs to uid {owner}")), "{err}");
        assert!(err.contains("--allow-foreign-repo-owner"), "{err}");
        if owner == 65534 {
            // The name comes from the user database when it has one.
            assert!(
                err.contains(&describe_uid(65534)),
                "{err} / {}",
                describe_uid(65534)
            );
        }

        let allowed = with(&foreign, &["--allow-foreign-repo-owner"]).unwrap();
        assert_eq!(allowed.checkout.unwrap().dir, foreign);

        // The agent's own checkout needs no flag.
        let own = tmp.path().join("own");
        std::fs::create_dir_all(own.join(".git")).unwrap();
        assert_eq!(with(&own, &[]).unwrap().checkout.unwrap().dir, own);

        // A checkout that is not there cannot be vouched for.
        let missing = tmp.path().join("missing");
        let err = with(&missing, &[]).unwrap_err();
        assert!(err.contains("cannot check who owns --repo-dir"), "{err}");
        assert!(with(&missing, &["--allow-foreign-repo-owner"]).is_ok());
    }

    #[test]
    fn system_settings_defaults_and_flags() {
        let with = parse_with;
        let sys = with(&["--host-type", "nixos"]).unwrap().system;
        assert_eq!(sys.activation, Activation::Nixos);
        assert_eq!(sys.profile, Path::new("/nix/var/nix/profiles/system"));
        assert_eq!(
            sys.flake_attr,
            "nixosConfigurations.{hostname}.config.system.build.toplevel"
        );
        assert_eq!(sys.confirm_timeout_s, 120);
        assert_eq!(sys.current_system, Path::new("/run/current-system"));
        assert_eq!(sys.booted_system, Path::new("/run/booted-system"));
        assert_eq!(sys.health, Health::default());

        let sys = with(&["--host-type", "macos"]).unwrap().system;
        assert_eq!(sys.activation, Activation::Darwin);
        assert_eq!(sys.flake_attr, "darwinConfigurations.{hostname}.system");
        assert_eq!(sys.profile, Path::new("/nix/var/nix/profiles/system"));

        let sys = with(&[
            "--host-type",
            "macos",
            "--activation",
            "home-manager",
            "--system-profile",
            "/home/a/.local/state/nix/profiles/home-manager",
        ])
        .unwrap()
        .system;
        assert_eq!(sys.activation, Activation::HomeManager);
        assert_eq!(
            sys.flake_attr,
            "homeConfigurations.{hostname}.activationPackage"
        );
        // Home Manager has no /run/current-system: a preview diffs against its profile.
        assert_eq!(sys.current_system, sys.profile);

        let sys = with(&[
            "--system-profile",
            "/p/system",
            "--flake-attr",
            "hosts.{hostname}.toplevel",
            "--confirm-timeout-s",
            "5",
            "--current-system",
            "/c",
            "--booted-system",
            "/b",
        ])
        .unwrap()
        .system;
        assert_eq!(sys.profile, Path::new("/p/system"));
        assert_eq!(sys.flake_attr, "hosts.{hostname}.toplevel");
        assert_eq!(sys.confirm_timeout_s, 5);
        assert_eq!(sys.current_system, Path::new("/c"));
        assert_eq!(sys.booted_system, Path::new("/b"));

        for bad in [
            &["--activation", "nixops"][..],
            &["--confirm-timeout-s", "0"],
            &["--flake-attr", " "],
        ] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn switch_action_flag_env_and_the_non_nixos_refusal() {
        let with = parse_with;
        let sys = with(&["--host-type", "nixos"]).unwrap().system;
        assert_eq!(sys.switch_action, SwitchAction::Switch);
        let sys = with(&["--host-type", "nixos", "--switch-action", "test"])
            .unwrap()
            .system;
        assert_eq!(sys.switch_action, SwitchAction::Test);
        let sys = with(&["--switch-action", "switch", "--activation", "darwin"])
            .unwrap()
            .system;
        assert_eq!(sys.switch_action, SwitchAction::Switch);

        let err = with(&["--switch-action", "boot"]).unwrap_err();
        assert!(err.contains("switch") && err.contains("test"), "{err}");

        // nix-darwin and Home Manager have no "activate without making it the default".
        for extra in [
            &["--host-type", "macos"][..],
            &["--activation", "darwin"],
            &[
                "--activation",
                "home-manager",
                "--system-profile",
                "/home/a/.local/state/nix/profiles/home-manager",
            ],
        ] {
            let mut args = extra.to_vec();
            args.extend_from_slice(&["--switch-action", "test"]);
            let err = with(&args).unwrap_err();
            assert!(
                err.starts_with("--switch-action test activates with NixOS's")
                    && err.contains("--switch-action switch"),
                "{extra:?}: {err}"
            );
        }

        // The environment variable: read from the process environment, which other tests
        // share, so checked on the declaration (tests/commands.rs starts the binary with it).
        use clap::CommandFactory;
        let cmd = Cli::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "switch_action")
            .unwrap();
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some("NIXDECK_SWITCH_ACTION")
        );
    }

    #[test]
    fn config_file_health() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "[health]\nunits = [\"nginx.service\"]\nurls = [\"http://127.0.0.1:8080/health\"]\n",
        )
        .unwrap();
        let (commands, health) = load_file(&path).unwrap();
        assert!(commands.is_empty());
        assert_eq!(health.units, ["nginx.service"]);
        assert_eq!(health.urls, ["http://127.0.0.1:8080/health"]);
        for (bad, says) in [
            ("[health]\nurl = [\"http://x\"]\n", "unknown field"),
            ("[health]\nurls = [\"ftp://x\"]\n", "not an http"),
            ("[health]\nunits = [\"--now\"]\n", "not a unit name"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = load_file(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn config_file_commands() {
        let cmds = parse_commands(
            r#"
            [commands]
            switch = ["nixos-rebuild", "switch", "--flake", "{repo_dir}#{hostname}"]
            test = { argv = ["sh", "-c", "true"], timeout_s = 30 }
            update = { timeout_s = 900 }
            "#,
        )
        .unwrap();
        assert_eq!(cmds.len(), 3);
        assert_eq!(
            cmds[&CommandKind::Switch].argv.as_ref().unwrap()[3],
            "{repo_dir}#{hostname}"
        );
        assert_eq!(cmds[&CommandKind::Test].timeout_s, Some(30));
        assert_eq!(cmds[&CommandKind::Update].argv, None);
        assert!(parse_commands("").unwrap().is_empty());

        for (bad, says) in [
            (
                "[commands]
swtich = [\"x\"]",
                "unknown command `swtich`",
            ),
            (
                "[commands]
restart = [\"x\"]",
                "built into the agent",
            ),
            (
                "[commands]
switch = []",
                "must name a program",
            ),
            (
                "[commands]
switch = { argv = [\"x\"], timeout_s = 0 }",
                "at least 1",
            ),
            (
                "[commands]
switch = { argv = [\"x\"], timeout = 5 }",
                "",
            ),
            (
                "[command]
switch = [\"x\"]",
                "command",
            ),
            (
                "[commands]
switch = \"nixos-rebuild switch\"",
                "",
            ),
        ] {
            let err = parse_commands(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
