//! What each command runs. A supervised command is a `Plan`: a list of steps that the
//! supervisor runs in order, stopping at the first that fails. Argv arrays come from the
//! `[commands]` table of the config file or from the defaults below; placeholders are
//! substituted per element and nothing goes through a shell.

use crate::repo;
use protocol::{CommandKind, HostType};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Run a program; a non-zero exit fails the plan.
    Run {
        argv: Vec<String>,
        #[serde(default)]
        cwd: Option<PathBuf>,
    },
    /// Make `dir` a working clone of `url` (isolated mode): clone it when missing, clone
    /// it again when it is broken or points elsewhere.
    Clone {
        url: String,
        branch: String,
        dir: PathBuf,
    },
    /// Run every executable file in `dir`, in name order; fails if any fails.
    Tests { dir: PathBuf, cwd: PathBuf },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Print `$ argv` before each Run step: for the agent's own multi-step commands, so
    /// the log shows which step said what. Off for configured commands, whose output
    /// should be exactly theirs.
    #[serde(default)]
    pub echo: bool,
    /// Extra environment for every step.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The supervisor stops the command after this long (the dashboard has its own).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Most bytes of output kept on disk.
    pub spool_limit: u64,
}

/// One `[commands]` entry of the config file: an argv, a timeout, or both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOverride {
    pub argv: Option<Vec<String>>,
    pub timeout_s: Option<u64>,
}

/// The configuration checkout the commands work on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    pub dir: PathBuf,
    /// Isolated mode: the agent owns `dir` as a clone of this URL.
    pub clone_url: Option<String>,
}

/// Everything a plan depends on.
#[derive(Clone, Debug)]
pub struct PlanContext {
    pub hostname: String,
    pub host_type: HostType,
    pub branch: String,
    pub checkout: Option<Checkout>,
    pub overrides: HashMap<CommandKind, CommandOverride>,
    pub spool_limit: u64,
    pub is_root: bool,
}

/// How the agent carries out a command.
#[derive(Debug)]
pub enum Action {
    /// Run by a supervisor process.
    Supervised(Plan),
    /// Done by the agent itself at once.
    Refresh,
    Restart,
}

const NO_CHECKOUT: &str =
    "no configuration checkout: start the agent with --repo-dir or --repo-url";

impl PlanContext {
    /// The action for a command, or a sentence saying why it cannot run here.
    pub fn action(&self, kind: CommandKind) -> Result<Action, String> {
        let steps = match kind {
            CommandKind::Refresh => return Ok(Action::Refresh),
            CommandKind::Restart => return Ok(Action::Restart),
            CommandKind::PullSwitch => {
                let mut steps = self.steps(CommandKind::Pull)?;
                steps.extend(self.steps(CommandKind::Switch)?);
                steps
            }
            kind => self.steps(kind)?,
        };
        let configured = self.overrides.get(&kind).is_some_and(|o| o.argv.is_some());
        let mut env = BTreeMap::new();
        // git must never wait for a password nobody can type.
        env.insert("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned());
        env.insert("NIXDECK_HOSTNAME".to_owned(), self.hostname.clone());
        env.insert("NIXDECK_BRANCH".to_owned(), self.branch.clone());
        if let Some(checkout) = &self.checkout {
            env.insert(
                "NIXDECK_REPO_DIR".to_owned(),
                checkout.dir.display().to_string(),
            );
        }
        Ok(Action::Supervised(Plan {
            echo: !configured && steps.len() > 1,
            steps,
            env,
            timeout_s: self.overrides.get(&kind).and_then(|o| o.timeout_s),
            spool_limit: self.spool_limit,
        }))
    }

    fn repo_dir(&self) -> Result<&Path, String> {
        self.checkout
            .as_ref()
            .map(|c| c.dir.as_path())
            .ok_or_else(|| NO_CHECKOUT.to_owned())
    }

    /// The steps of one basic command: its configured argv, or the default.
    fn steps(&self, kind: CommandKind) -> Result<Vec<Step>, String> {
        if let Some(argv) = self.overrides.get(&kind).and_then(|o| o.argv.as_ref()) {
            return Ok(vec![Step::Run {
                argv: self.substitute(argv)?,
                cwd: self.checkout.as_ref().map(|c| c.dir.clone()),
            }]);
        }
        let run_in_repo = |argv: Vec<String>| -> Result<Vec<Step>, String> {
            Ok(vec![Step::Run {
                argv,
                cwd: Some(self.repo_dir()?.to_owned()),
            }])
        };
        let flake = || -> Result<String, String> {
            Ok(format!("{}#{}", self.repo_dir()?.display(), self.hostname))
        };
        match kind {
            CommandKind::Pull => {
                let checkout = self.checkout.as_ref().ok_or(NO_CHECKOUT)?;
                let mut steps = Vec::new();
                if let Some(url) = &checkout.clone_url {
                    steps.push(Step::Clone {
                        url: url.clone(),
                        branch: self.branch.clone(),
                        dir: checkout.dir.clone(),
                    });
                }
                steps.extend(
                    repo::pull_argvs(&checkout.dir, &self.branch)
                        .into_iter()
                        .map(|argv| Step::Run { argv, cwd: None }),
                );
                Ok(steps)
            }
            CommandKind::Switch => match self.host_type {
                HostType::Nixos => {
                    run_in_repo(self.as_root(&["nixos-rebuild", "switch", "--flake", &flake()?]))
                }
                HostType::Macos => {
                    run_in_repo(strings(&["home-manager", "switch", "--flake", &flake()?]))
                }
            },
            CommandKind::Rollback => match self.host_type {
                HostType::Nixos => {
                    run_in_repo(self.as_root(&["nixos-rebuild", "switch", "--rollback"]))
                }
                HostType::Macos => Err("there is no default rollback on macOS; \
                     set `rollback` in the [commands] table of the agent's config file"
                    .to_owned()),
            },
            CommandKind::Update => run_in_repo(strings(&["nix", "flake", "update"])),
            CommandKind::Test => {
                let repo = self.repo_dir()?;
                Ok(vec![Step::Tests {
                    dir: repo.join("hosts").join(&self.hostname).join("tests"),
                    cwd: repo.to_owned(),
                }])
            }
            CommandKind::Preview | CommandKind::Boot => {
                Err(format!("`{kind}` is not supported by this agent yet"))
            }
            CommandKind::PullSwitch | CommandKind::Refresh | CommandKind::Restart => {
                Err(format!("`{kind}` is not a basic command"))
            }
        }
    }

    /// `sudo -n` first when not root: -n fails at once instead of asking for a password.
    fn as_root(&self, argv: &[&str]) -> Vec<String> {
        let mut full = if self.is_root {
            Vec::new()
        } else {
            vec!["sudo".to_owned(), "-n".to_owned()]
        };
        full.extend(strings(argv));
        full
    }

    fn substitute(&self, argv: &[String]) -> Result<Vec<String>, String> {
        let repo_dir = match &self.checkout {
            Some(c) => Some(c.dir.display().to_string()),
            None if argv.iter().any(|a| a.contains("{repo_dir}")) => {
                return Err(NO_CHECKOUT.to_owned())
            }
            None => None,
        };
        Ok(argv
            .iter()
            .map(|arg| {
                let arg = arg
                    .replace("{hostname}", &self.hostname)
                    .replace("{branch}", &self.branch);
                match &repo_dir {
                    Some(dir) => arg.replace("{repo_dir}", dir),
                    None => arg,
                }
            })
            .collect())
    }
}

fn strings(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|s| (*s).to_owned()).collect()
}

/// An argv as a shell would show it, for step headers and failure notes.
pub fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@#+,%*".contains(&b));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(host_type: HostType, is_root: bool) -> PlanContext {
        PlanContext {
            hostname: "web-1".into(),
            host_type,
            branch: "main".into(),
            checkout: Some(Checkout {
                dir: "/etc/nixos".into(),
                clone_url: None,
            }),
            overrides: HashMap::new(),
            spool_limit: 1 << 20,
            is_root,
        }
    }

    fn plan(ctx: &PlanContext, kind: CommandKind) -> Plan {
        match ctx.action(kind).unwrap() {
            Action::Supervised(plan) => plan,
            other => panic!("{other:?}"),
        }
    }

    fn argvs(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| match s {
                Step::Run { argv, .. } => display_argv(argv),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn switch_defaults_per_host_type_and_user() {
        let p = plan(&ctx(HostType::Nixos, false), CommandKind::Switch);
        assert_eq!(
            argvs(&p),
            vec!["sudo -n nixos-rebuild switch --flake /etc/nixos#web-1"]
        );
        assert!(!p.echo);
        let p = plan(&ctx(HostType::Nixos, true), CommandKind::Rollback);
        assert_eq!(argvs(&p), vec!["nixos-rebuild switch --rollback"]);
        let p = plan(&ctx(HostType::Macos, false), CommandKind::Switch);
        assert_eq!(
            argvs(&p),
            vec!["home-manager switch --flake /etc/nixos#web-1"]
        );
        assert!(ctx(HostType::Macos, false)
            .action(CommandKind::Rollback)
            .is_err());
    }

    #[test]
    fn pull_switch_is_pull_then_switch_with_headers() {
        let p = plan(&ctx(HostType::Nixos, true), CommandKind::PullSwitch);
        let all = argvs(&p);
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(all[0].contains(" fetch origin "), "{all:?}");
        assert!(all[1].contains(" reset --hard origin/main"), "{all:?}");
        assert!(all[2].contains(" clean -fd"), "{all:?}");
        assert!(all[3].starts_with("nixos-rebuild switch"), "{all:?}");
        assert!(p.echo);
    }

    #[test]
    fn overrides_substitute_placeholders_per_element() {
        let mut c = ctx(HostType::Nixos, true);
        c.overrides.insert(
            CommandKind::Switch,
            CommandOverride {
                argv: Some(strings(&[
                    "deploy",
                    "{repo_dir}#{hostname}",
                    "--branch={branch}; rm -rf /",
                ])),
                timeout_s: Some(60),
            },
        );
        let p = plan(&c, CommandKind::Switch);
        assert_eq!(
            p.steps,
            vec![Step::Run {
                argv: strings(&["deploy", "/etc/nixos#web-1", "--branch=main; rm -rf /"]),
                cwd: Some("/etc/nixos".into()),
            }]
        );
        assert_eq!(p.timeout_s, Some(60));
        assert!(!p.echo);
    }

    #[test]
    fn commands_needing_a_checkout_say_so() {
        let mut c = ctx(HostType::Nixos, true);
        c.checkout = None;
        for kind in [CommandKind::Pull, CommandKind::Switch, CommandKind::Test] {
            let err = c.action(kind).unwrap_err();
            assert!(err.contains("--repo-dir"), "{kind}: {err}");
        }
        c.overrides.insert(
            CommandKind::Test,
            CommandOverride {
                argv: Some(strings(&["true"])),
                timeout_s: None,
            },
        );
        assert!(c.action(CommandKind::Test).is_ok());
    }

    #[test]
    fn isolated_pull_clones_first() {
        let mut c = ctx(HostType::Nixos, true);
        c.checkout = Some(Checkout {
            dir: "/var/lib/nixdeck-agent/repo".into(),
            clone_url: Some("https://example.org/cfg.git".into()),
        });
        let p = plan(&c, CommandKind::Pull);
        assert!(matches!(&p.steps[0], Step::Clone { url, .. } if url.ends_with("cfg.git")));
        assert_eq!(p.steps.len(), 4);
    }

    #[test]
    fn argv_display_quotes_what_a_shell_would_split() {
        assert_eq!(
            display_argv(&strings(&["echo", "a b", "it's", ""])),
            r"echo 'a b' 'it'\''s' ''"
        );
    }
}
