//! `nixdeck ctl`'s command line.

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Shown under `nixdeck ctl --help`: what a script can rely on.
const EXIT_CODES: &str = "\
Authentication: a personal API token (`nixdeck token create`), read from the file named by \
--token-file / NIXDECK_TOKEN_FILE, or from NIXDECK_TOKEN. There is no --token flag: a \
command line is visible to every user of the machine.

Exit codes:
  0  done; with --follow, the command ended ok / the deploy ended done on every host
  1  the command or deploy failed (error, timeout, lost, stopped, rolled_back; a deploy
     that failed, halted, was cancelled, or where any host failed or rolled back)
  2  bad usage or input (unknown flag, ambiguous host, 422 from the dashboard)
  3  not authenticated (no token, or a wrong, revoked or expired one: 401)
  4  not found (unknown host, tag, command or job: 404)
  5  the dashboard cannot be reached, or answered with a server error
  6  forbidden (the token's role may not do this: 403)
  7  conflict (host offline or busy, a deploy already running: 409)";

#[derive(Args, Debug, Clone)]
#[command(after_long_help = EXIT_CODES)]
pub struct CtlArgs {
    /// The dashboard's base URL
    #[arg(
        long,
        env = "NIXDECK_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub url: String,
    /// File holding the API token (surrounding whitespace is ignored). Without it, the
    /// token is read from NIXDECK_TOKEN
    #[arg(long, env = "NIXDECK_TOKEN_FILE", value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,
    /// Allow a plaintext http:// URL to a dashboard that is not on this machine (the
    /// token would travel in clear)
    #[arg(long, env = "NIXDECK_INSECURE", global = true)]
    pub insecure: bool,
    /// Machine-readable output: JSON on stdout (progress, if any, goes to stderr)
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum CtlCommand {
    /// List the hosts: name, online, compartments, running command, tags
    Hosts,
    /// Run a command on a host (by name or id); prints the command id
    Run {
        host: String,
        /// pull, switch, pull-switch, test, update, rollback, refresh, restart, preview, boot
        command: String,
        /// rollback only: the generation to go to (default: the previous one)
        #[arg(long)]
        generation: Option<u64>,
        /// Print the output as it comes, and exit 0 only if the command ends ok
        #[arg(long)]
        follow: bool,
    },
    /// A command's state and result
    Status { command_id: String },
    /// A command's whole log
    Log { command_id: String },
    /// Merge the update PR and roll it out; `deploy status|confirm|cancel JOB` for a job
    Deploy(DeployArgs),
}

#[derive(Args, Debug, Clone, PartialEq)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DeployArgs {
    #[command(subcommand)]
    pub job: Option<JobCommand>,
    /// The update PR's number
    #[arg(long, required = true)]
    pub pr: Option<u64>,
    /// The hosts to deploy to, by name or id (default: every host)
    #[arg(long, value_delimiter = ',', conflicts_with = "tags")]
    pub hosts: Vec<String>,
    /// Deploy to the hosts with any of these tags
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Hosts that go first, alone: names or ids (added to the targets), and `tag:NAME` for
    /// every target host with that tag
    #[arg(long, value_delimiter = ',')]
    pub canary: Vec<String>,
    /// After the canaries, hosts go in waves of this many (default: all at once)
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Go on while at most this many hosts failed (default: halt at the first failed wave)
    #[arg(long)]
    pub max_failures: Option<u32>,
    /// Seconds to wait after a wave succeeded before the next one
    #[arg(long)]
    pub soak_s: Option<u64>,
    /// What a failed wave does: halt, or also roll back its hosts that switched
    #[arg(long, value_enum)]
    pub on_failure: Option<OnFailureArg>,
    /// Preview the PR on every target first, print what would change, and wait for a
    /// confirmation (`deploy confirm JOB`, or --yes)
    #[arg(long)]
    pub preview: bool,
    /// With --preview: confirm at once when the previews are in
    #[arg(long, requires = "preview")]
    pub yes: bool,
    /// Print the progress until the deploy ends, and exit 0 only if it ended done with
    /// every host ok
    #[arg(long)]
    pub follow: bool,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum JobCommand {
    /// A deploy job's progress
    Status {
        job: String,
        #[arg(long)]
        follow: bool,
    },
    /// Merge and roll out a previewed deploy that waits for confirmation
    Confirm {
        job: String,
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a deploy (nothing new starts; running commands finish)
    Cancel { job: String },
}

/// `--on-failure`: the wire's names, and `rollback` for short.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum OnFailureArg {
    Halt,
    #[value(name = "rollback-and-halt", alias = "rollback")]
    RollbackAndHalt,
}

impl From<OnFailureArg> for protocol::api::OnFailure {
    fn from(a: OnFailureArg) -> Self {
        match a {
            OnFailureArg::Halt => protocol::api::OnFailure::Halt,
            OnFailureArg::RollbackAndHalt => protocol::api::OnFailure::RollbackAndHalt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Top {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        Top::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).map(|t| t.ctl)
    }

    fn deploy(args: &[&str]) -> DeployArgs {
        match parse(args).unwrap().command {
            CtlCommand::Deploy(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_takes_a_host_a_command_and_options_anywhere() {
        let a = parse(&[
            "run",
            "web-1",
            "rollback",
            "--generation",
            "7",
            "--follow",
            "--json",
        ])
        .unwrap();
        assert!(a.json);
        assert_eq!(
            a.command,
            CtlCommand::Run {
                host: "web-1".into(),
                command: "rollback".into(),
                generation: Some(7),
                follow: true
            }
        );
        assert!(parse(&["run", "web-1"]).is_err());
        assert!(parse(&["run", "web-1", "switch", "--generation", "x"]).is_err());
    }

    #[test]
    fn there_is_no_token_flag() {
        let e = parse(&["--token", "secret", "hosts"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn deploy_lists_split_on_commas_and_rollback_is_short_for_rollback_and_halt() {
        let d = deploy(&[
            "deploy",
            "--pr",
            "42",
            "--hosts",
            "a,b",
            "--canary",
            "tag:canary,web-1",
            "--on-failure",
            "rollback",
            "--batch-size",
            "2",
        ]);
        assert_eq!(d.pr, Some(42));
        assert_eq!(d.hosts, ["a", "b"]);
        assert_eq!(d.canary, ["tag:canary", "web-1"]);
        assert_eq!(d.on_failure, Some(OnFailureArg::RollbackAndHalt));
        assert_eq!(d.batch_size, Some(2));
        assert_eq!(d.job, None);
        let d = deploy(&["deploy", "--pr", "1", "--on-failure", "rollback-and-halt"]);
        assert_eq!(d.on_failure, Some(OnFailureArg::RollbackAndHalt));
    }

    #[test]
    fn deploy_needs_a_pr_unless_it_names_a_job() {
        assert!(parse(&["deploy"]).is_err());
        assert!(parse(&["deploy", "--hosts", "a"]).is_err());
        let d = deploy(&["deploy", "confirm", "job1", "--follow"]);
        assert_eq!(
            d.job,
            Some(JobCommand::Confirm {
                job: "job1".into(),
                follow: true
            })
        );
        // A job command takes no start options.
        assert!(parse(&["deploy", "--pr", "3", "cancel", "job1"]).is_err());
    }

    #[test]
    fn deploy_refuses_hosts_with_tags_and_yes_without_preview() {
        assert!(parse(&["deploy", "--pr", "1", "--hosts", "a", "--tags", "web"]).is_err());
        assert!(parse(&["deploy", "--pr", "1", "--yes"]).is_err());
        assert!(parse(&["deploy", "--pr", "1", "--preview", "--yes"]).is_ok());
        assert!(parse(&["deploy", "--pr", "1", "--on-failure", "explode"]).is_err());
    }
}
