//! What each command runs. A supervised command is a `Plan`: a list of steps that the
//! supervisor runs in order, stopping at the first that fails. Argv arrays come from the
//! `[commands]` table of the config file or from the defaults below; placeholders are
//! substituted per element and nothing goes through a shell.

use crate::nix::{Activation, SwitchAction, SystemSettings};
use crate::repo;
use protocol::messages::CommandOrder;
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
    /// Make commit `rev` present in the repository `dir`: nothing when it is there
    /// already, else `git fetch origin <rev>`, which moves no branch and no work tree.
    FetchRev { dir: PathBuf, rev: String },
    /// Run every executable file in `dir`, in name order; fails if any fails.
    Tests { dir: PathBuf, cwd: PathBuf },
    /// `nix build --no-link --json <installable>`: the built path becomes the target of
    /// the steps that follow.
    Build { installable: String },
    /// Use this already built store path as the target (a switch from a preview); fails,
    /// switching nothing, when it is gone or has no activation entry point.
    UseStorePath { store_path: String },
    /// `nix-env -p <profile> --set <target>`.
    SetProfile,
    /// Run the target's activation entry point (`bin/switch-to-configuration <mode>` on
    /// NixOS, `activate` otherwise). Mode `test` (`TEST_MODE`) leaves the profile alone,
    /// so undoing it means activating the system that ran before, with `test` too.
    Activate { mode: Option<String> },
    /// The health gate: the agent must reach the dashboard again and the checks must pass
    /// within the confirm timeout, or the supervisor rolls back.
    Confirm {
        tests: Option<PathBuf>,
        cwd: Option<PathBuf>,
    },
    /// Diff the target's closure against the current system (`preview`).
    Diff,
    /// `nix-env -p <profile> --switch-generation N`, or `--rollback` without N; the
    /// generation it lands on becomes the target.
    SwitchGeneration { generation: Option<u64> },
}

/// The activation mode of `--switch-action test`: the supervisor tells such a switch
/// from one that moved the profile by it.
pub const TEST_MODE: &str = "test";

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
    /// For the Nix-native steps: the profile, activation and health gate settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemSettings>,
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
    /// The Nix-native switch, boot, preview and rollback.
    pub system: SystemSettings,
}

/// How the agent carries out a command.
// Made once per command and consumed at once: boxing the plan would buy nothing.
#[allow(clippy::large_enum_variant)]
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
    /// The action for a plain command (no generation, no store path), or a sentence
    /// saying why it cannot run here.
    pub fn action(&self, kind: CommandKind) -> Result<Action, String> {
        self.action_for(&CommandOrder::new(String::new(), kind))
    }

    /// The action for a `command` order, or a sentence saying why it cannot run here.
    pub fn action_for(&self, order: &CommandOrder) -> Result<Action, String> {
        let kind = order.command;
        if let Some(rev) = &order.rev {
            check_rev(kind, rev)?;
        }
        let (steps, native) = match kind {
            CommandKind::Refresh => return Ok(Action::Refresh),
            CommandKind::Restart => return Ok(Action::Restart),
            CommandKind::PullSwitch if self.configured(kind) => self.steps(kind, order)?,
            CommandKind::PullSwitch => {
                let (mut steps, _) = self.steps(CommandKind::Pull, order)?;
                let (switch, native) = self.steps(CommandKind::Switch, order)?;
                steps.extend(switch);
                (steps, native)
            }
            kind => self.steps(kind, order)?,
        };
        let configured = self.configured(kind);
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
            echo: !configured && (native || steps.len() > 1),
            steps,
            env,
            timeout_s: self.overrides.get(&kind).and_then(|o| o.timeout_s),
            spool_limit: self.spool_limit,
            system: native.then(|| self.system_settings()),
        }))
    }

    /// An argv in the config file replaces the default of this command.
    fn configured(&self, kind: CommandKind) -> bool {
        self.overrides.get(&kind).is_some_and(|o| o.argv.is_some())
    }

    /// The settings as the supervisor needs them: the attribute with the host's name in it.
    fn system_settings(&self) -> SystemSettings {
        let mut system = self.system.clone();
        system.flake_attr = system.flake_attr.replace("{hostname}", &self.hostname);
        system.sudo = !self.is_root && system.activation.needs_root();
        system
    }

    fn repo_dir(&self) -> Result<&Path, String> {
        self.checkout
            .as_ref()
            .map(|c| c.dir.as_path())
            .ok_or_else(|| NO_CHECKOUT.to_owned())
    }

    /// `<repo>#<attribute>`: what the Nix-native commands build.
    fn installable(&self) -> Result<String, String> {
        let attr = self.system.flake_attr.replace("{hostname}", &self.hostname);
        Ok(format!("{}#{attr}", self.repo_dir()?.display()))
    }

    /// `git+file://<repo>?rev=<rev>#<attribute>`: the flake at commit `rev`, which Nix
    /// reads from the repository's objects, so the work tree and branch stay as they are
    /// (Nix 2.8 builds a commit no branch points at this way, as current Nix does).
    fn installable_at(&self, rev: &str) -> Result<String, String> {
        let dir = self.repo_dir()?;
        let path = dir.display().to_string();
        // The path goes into a URL unescaped: `?`, `#`, `%` or a space would change what
        // Nix reads, so such a path is refused rather than built from elsewhere.
        let plain = path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-+~@:=,".contains(&b));
        if !plain {
            return Err(format!(
                "a preview of a commit builds git+file://<checkout>?rev=…, and the checkout's \
                 path {} has characters a URL would read differently",
                display_argv(&[path])
            ));
        }
        let attr = self.system.flake_attr.replace("{hostname}", &self.hostname);
        Ok(format!("git+file://{path}?rev={rev}#{attr}"))
    }

    /// Where the target comes from: built from the checkout, or a preview's store path.
    fn target(&self, order: &CommandOrder) -> Result<Step, String> {
        match &order.store_path {
            Some(store_path) => Ok(Step::UseStorePath {
                store_path: store_path.clone(),
            }),
            None => Ok(Step::Build {
                installable: self.installable()?,
            }),
        }
    }

    /// The steps of one basic command: its configured argv, or the default; and whether
    /// they are the Nix-native steps (which need `Plan::system`).
    fn steps(&self, kind: CommandKind, order: &CommandOrder) -> Result<(Vec<Step>, bool), String> {
        if let Some(argv) = self.overrides.get(&kind).and_then(|o| o.argv.as_ref()) {
            if order.generation.is_some() && kind == CommandKind::Rollback {
                // The configured command knows nothing of the chosen generation.
                return Err("a rollback to a chosen generation needs the agent's own \
                     rollback, but [commands] in the agent's config file sets `rollback`"
                    .to_owned());
            }
            if order.rev.is_some() {
                // The configured command would build the checkout, not the commit.
                return Err(format!(
                    "a {kind} of a commit that is not checked out needs the agent's own \
                     {kind}, but [commands] in the agent's config file sets `{kind}`"
                ));
            }
            if order.store_path.is_some() {
                // The configured command would build the checkout, not the previewed path.
                return Err(format!(
                    "a {kind} of a previewed store path needs the agent's own {kind}, but \
                     [commands] in the agent's config file sets `{kind}`"
                ));
            }
            return Ok((
                vec![Step::Run {
                    argv: self.substitute(argv)?,
                    cwd: self.checkout.as_ref().map(|c| c.dir.clone()),
                }],
                false,
            ));
        }
        let run_in_repo = |argv: Vec<String>| -> Result<(Vec<Step>, bool), String> {
            Ok((
                vec![Step::Run {
                    argv,
                    cwd: Some(self.repo_dir()?.to_owned()),
                }],
                false,
            ))
        };
        let activation = self.system.activation;
        let switch_mode = (activation == Activation::Nixos).then(|| "switch".to_owned());
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
                Ok((steps, false))
            }
            CommandKind::Switch => {
                let (tests, cwd) = match &self.checkout {
                    Some(c) => (
                        Some(c.dir.join("hosts").join(&self.hostname).join("tests")),
                        Some(c.dir.clone()),
                    ),
                    None => (None, None),
                };
                let steps = match self.system.switch_action {
                    SwitchAction::Switch => vec![
                        self.target(order)?,
                        Step::SetProfile,
                        Step::Activate { mode: switch_mode },
                        Step::Confirm { tests, cwd },
                    ],
                    // `nixos-rebuild test`: no profile step, so no generation and no
                    // boot entry; the supervisor undoes a failed gate by activating what
                    // ran before, the same way (see `Step::Activate`).
                    SwitchAction::Test => {
                        if activation != Activation::Nixos {
                            return Err(format!(
                                "--switch-action test needs NixOS's switch-to-configuration; \
                                 this agent activates {} configurations (--activation)",
                                activation.as_str()
                            ));
                        }
                        vec![
                            self.target(order)?,
                            Step::Activate {
                                mode: Some(TEST_MODE.to_owned()),
                            },
                            Step::Confirm { tests, cwd },
                        ]
                    }
                };
                Ok((steps, true))
            }
            CommandKind::Boot => {
                if activation != Activation::Nixos {
                    return Err(format!(
                        "`boot` activates a NixOS system at the next boot; this agent \
                         activates {} configurations (--activation)",
                        activation.as_str()
                    ));
                }
                Ok((
                    vec![
                        self.target(order)?,
                        Step::SetProfile,
                        Step::Activate {
                            mode: Some("boot".to_owned()),
                        },
                    ],
                    true,
                ))
            }
            CommandKind::Preview => {
                let mut steps = Vec::new();
                let installable = match &order.rev {
                    Some(rev) => {
                        steps.push(Step::FetchRev {
                            dir: self.repo_dir()?.to_owned(),
                            rev: rev.clone(),
                        });
                        self.installable_at(rev)?
                    }
                    None => self.installable()?,
                };
                steps.extend([Step::Build { installable }, Step::Diff]);
                Ok((steps, true))
            }
            CommandKind::Rollback => Ok((
                vec![
                    Step::SwitchGeneration {
                        generation: order.generation,
                    },
                    Step::Activate { mode: switch_mode },
                ],
                true,
            )),
            CommandKind::Update => run_in_repo(strings(&["nix", "flake", "update"])),
            CommandKind::Test => {
                let repo = self.repo_dir()?;
                Ok((
                    vec![Step::Tests {
                        dir: repo.join("hosts").join(&self.hostname).join("tests"),
                        cwd: repo.to_owned(),
                    }],
                    false,
                ))
            }
            CommandKind::PullSwitch | CommandKind::Refresh | CommandKind::Restart => {
                Err(format!("`{kind}` is not a basic command"))
            }
        }
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

/// Refuses an order's `rev` before anything runs: it belongs to `preview` only (the
/// other commands act on the checkout as it is), and must be a full commit id, so no
/// other text ever reaches git's argv or Nix's URL.
fn check_rev(kind: CommandKind, rev: &str) -> Result<(), String> {
    if kind != CommandKind::Preview {
        return Err(format!(
            "`rev` (a commit to build) goes only with `preview`; a `{kind}` works on the \
             checkout as it is"
        ));
    }
    if !repo::is_commit_id(rev) {
        // Debug quoting: control characters in the order cannot break the log line.
        let shown: String = rev.chars().take(80).collect();
        return Err(format!(
            "`rev` must be a full commit id (40 or 64 lowercase hex digits), not {shown:?}"
        ));
    }
    Ok(())
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
        let activation = match host_type {
            HostType::Nixos => Activation::Nixos,
            HostType::Macos => Activation::Darwin,
        };
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
            system: SystemSettings {
                activation,
                profile: "/nix/var/nix/profiles/system".into(),
                flake_attr: activation.default_flake_attr().into(),
                confirm_timeout_s: 120,
                switch_action: SwitchAction::Switch,
                current_system: "/run/current-system".into(),
                booted_system: "/run/booted-system".into(),
                health: Default::default(),
                sudo: false,
            },
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
        let c = ctx(HostType::Nixos, false);
        let p = plan(&c, CommandKind::Switch);
        assert_eq!(
            p.steps,
            vec![
                Step::Build {
                    installable:
                        "/etc/nixos#nixosConfigurations.web-1.config.system.build.toplevel".into()
                },
                Step::SetProfile,
                Step::Activate {
                    mode: Some("switch".into())
                },
                Step::Confirm {
                    tests: Some("/etc/nixos/hosts/web-1/tests".into()),
                    cwd: Some("/etc/nixos".into()),
                },
            ]
        );
        assert!(p.echo);
        let system = p.system.unwrap();
        assert!(
            system.sudo,
            "not root: the profile and activation need sudo -n"
        );
        assert_eq!(
            system.flake_attr,
            "nixosConfigurations.web-1.config.system.build.toplevel"
        );
        assert!(
            !plan(&ctx(HostType::Nixos, true), CommandKind::Switch)
                .system
                .unwrap()
                .sudo
        );

        let p = plan(&ctx(HostType::Nixos, true), CommandKind::Rollback);
        assert_eq!(
            p.steps,
            vec![
                Step::SwitchGeneration { generation: None },
                Step::Activate {
                    mode: Some("switch".into())
                },
            ]
        );
        let p = plan(&ctx(HostType::Macos, false), CommandKind::Switch);
        assert_eq!(
            p.steps[0],
            Step::Build {
                installable: "/etc/nixos#darwinConfigurations.web-1.system".into()
            }
        );
        assert_eq!(p.steps[2], Step::Activate { mode: None });
        assert!(ctx(HostType::Macos, false)
            .action(CommandKind::Boot)
            .is_err());
        let mut hm = ctx(HostType::Macos, false);
        hm.system.activation = Activation::HomeManager;
        hm.system.flake_attr = Activation::HomeManager.default_flake_attr().into();
        let p = plan(&hm, CommandKind::Switch);
        assert_eq!(
            p.steps[0],
            Step::Build {
                installable: "/etc/nixos#homeConfigurations.web-1.activationPackage".into()
            }
        );
        assert!(
            !p.system.unwrap().sudo,
            "a home-manager profile is the user's"
        );
    }

    #[test]
    fn boot_preview_and_orders_with_a_generation_or_a_store_path() {
        let c = ctx(HostType::Nixos, true);
        let p = plan(&c, CommandKind::Boot);
        assert_eq!(
            p.steps[1..],
            [
                Step::SetProfile,
                Step::Activate {
                    mode: Some("boot".into())
                }
            ]
        );
        let p = plan(&c, CommandKind::Preview);
        assert!(matches!(p.steps[0], Step::Build { .. }));
        assert_eq!(p.steps[1], Step::Diff);

        let mut order = CommandOrder::new("x", CommandKind::Rollback);
        order.generation = Some(7);
        let Action::Supervised(p) = c.action_for(&order).unwrap() else {
            panic!()
        };
        assert_eq!(
            p.steps[0],
            Step::SwitchGeneration {
                generation: Some(7)
            }
        );
        let mut order = CommandOrder::new("x", CommandKind::Switch);
        order.store_path = Some("/nix/store/abc-nixos-system".into());
        let Action::Supervised(p) = c.action_for(&order).unwrap() else {
            panic!()
        };
        assert_eq!(
            p.steps[0],
            Step::UseStorePath {
                store_path: "/nix/store/abc-nixos-system".into()
            }
        );
    }

    /// `nixos-rebuild test`: activated now, the profile untouched; boot and rollback are
    /// what they always are, and a pull-switch or a previewed path switch the same way.
    #[test]
    fn switch_action_test_activates_without_the_profile() {
        let mut c = ctx(HostType::Nixos, true);
        c.system.switch_action = SwitchAction::Test;
        let test_steps = |p: &Plan| -> Vec<Step> { p.steps[p.steps.len() - 3..].to_vec() };
        let p = plan(&c, CommandKind::Switch);
        assert_eq!(p.steps.len(), 3);
        assert!(matches!(p.steps[0], Step::Build { .. }));
        assert_eq!(
            p.steps[1],
            Step::Activate {
                mode: Some("test".into())
            }
        );
        assert!(matches!(p.steps[2], Step::Confirm { .. }));
        assert!(!p.steps.contains(&Step::SetProfile));
        assert_eq!(p.system.unwrap().switch_action, SwitchAction::Test);

        let p = plan(&c, CommandKind::PullSwitch);
        assert!(!p.steps.contains(&Step::SetProfile));
        assert_eq!(
            test_steps(&p)[1],
            Step::Activate {
                mode: Some("test".into())
            }
        );

        let mut order = CommandOrder::new("x", CommandKind::Switch);
        order.store_path = Some("/nix/store/abc-nixos-system".into());
        let Action::Supervised(p) = c.action_for(&order).unwrap() else {
            panic!()
        };
        assert!(matches!(p.steps[0], Step::UseStorePath { .. }));
        assert_eq!(
            p.steps[1],
            Step::Activate {
                mode: Some("test".into())
            }
        );
        assert!(!p.steps.contains(&Step::SetProfile));

        let p = plan(&c, CommandKind::Boot);
        assert_eq!(p.steps[1], Step::SetProfile);
        assert_eq!(
            p.steps[2],
            Step::Activate {
                mode: Some("boot".into())
            }
        );
        let p = plan(&c, CommandKind::Rollback);
        assert_eq!(
            p.steps[1],
            Step::Activate {
                mode: Some("switch".into())
            }
        );

        // The config refuses it at start; a plan made anyway says why.
        let mut darwin = ctx(HostType::Macos, true);
        darwin.system.switch_action = SwitchAction::Test;
        assert!(darwin
            .action(CommandKind::Switch)
            .unwrap_err()
            .contains("--switch-action test"));
    }

    #[test]
    fn an_argv_override_still_wins_over_the_nix_native_switch() {
        let mut c = ctx(HostType::Nixos, false);
        for kind in [CommandKind::Switch, CommandKind::Rollback] {
            let argv = match kind {
                CommandKind::Switch => strings(&[
                    "nixos-rebuild",
                    "switch",
                    "--flake",
                    "{repo_dir}#{hostname}",
                ]),
                _ => strings(&["nixos-rebuild", "switch", "--rollback"]),
            };
            c.overrides.insert(
                kind,
                CommandOverride {
                    argv: Some(argv),
                    timeout_s: None,
                },
            );
        }
        let p = plan(&c, CommandKind::Switch);
        assert_eq!(
            argvs(&p),
            vec!["nixos-rebuild switch --flake /etc/nixos#web-1"]
        );
        assert!(!p.echo);
        assert_eq!(p.system, None, "no health gate around a configured command");
        let p = plan(&c, CommandKind::Rollback);
        assert_eq!(argvs(&p), vec!["nixos-rebuild switch --rollback"]);
        // pull-switch: the pull steps, then the configured switch.
        let p = plan(&c, CommandKind::PullSwitch);
        assert_eq!(p.steps.len(), 4);
        assert_eq!(p.system, None);
        // A previewed store path cannot go through a configured command.
        let mut order = CommandOrder::new("x", CommandKind::Switch);
        order.store_path = Some("/nix/store/abc".into());
        assert!(c.action_for(&order).unwrap_err().contains("[commands]"));
        let mut order = CommandOrder::new("x", CommandKind::Rollback);
        order.generation = Some(3);
        assert!(c.action_for(&order).unwrap_err().contains("[commands]"));
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

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn preview_of(rev: &str) -> CommandOrder {
        let mut order = CommandOrder::new("x", CommandKind::Preview);
        order.rev = Some(rev.into());
        order
    }

    #[test]
    fn a_preview_of_a_commit_fetches_it_and_builds_it_from_git() {
        let c = ctx(HostType::Nixos, true);
        let Action::Supervised(p) = c.action_for(&preview_of(SHA)).unwrap() else {
            panic!()
        };
        assert_eq!(
            p.steps,
            vec![
                Step::FetchRev {
                    dir: "/etc/nixos".into(),
                    rev: SHA.into()
                },
                Step::Build {
                    installable: format!(
                        "git+file:///etc/nixos?rev={SHA}#\
                         nixosConfigurations.web-1.config.system.build.toplevel"
                    )
                },
                Step::Diff,
            ]
        );
        assert!(p.echo && p.system.is_some());
        assert_eq!(
            display_argv(&repo::fetch_rev_argv(Path::new("/etc/nixos"), SHA)),
            format!("git -c safe.directory=* -C /etc/nixos fetch origin {SHA}")
        );
        // SHA-256 repositories have 64-digit ids.
        assert!(c.action_for(&preview_of(&"ab".repeat(32))).is_ok());

        // Isolated mode: the agent's own clone.
        let mut iso = ctx(HostType::Nixos, true);
        iso.checkout = Some(Checkout {
            dir: "/var/lib/nixdeck-agent/repo".into(),
            clone_url: Some("https://example.org/cfg.git".into()),
        });
        let Action::Supervised(p) = iso.action_for(&preview_of(SHA)).unwrap() else {
            panic!()
        };
        assert!(matches!(&p.steps[0], Step::FetchRev { dir, .. }
            if dir == Path::new("/var/lib/nixdeck-agent/repo")));
        assert!(matches!(&p.steps[1], Step::Build { installable }
            if installable.starts_with("git+file:///var/lib/nixdeck-agent/repo?rev=")));
    }

    #[test]
    fn a_rev_that_is_not_a_full_commit_id_or_not_on_a_preview_is_refused() {
        let c = ctx(HostType::Nixos, true);
        for bad in [
            "main; rm -rf /",
            "main",
            &SHA[..12],
            &SHA.to_uppercase(),
            &format!("{SHA}0"),
            &format!("--upload-pack=touch /tmp/x{}", &SHA[..14]),
            "",
        ] {
            let err = c.action_for(&preview_of(bad)).unwrap_err();
            assert!(err.contains("full commit id"), "{bad}: {err}");
        }
        let err = c.action_for(&preview_of("a\nb")).unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        for kind in [
            CommandKind::Switch,
            CommandKind::Boot,
            CommandKind::PullSwitch,
            CommandKind::Pull,
            CommandKind::Refresh,
        ] {
            let mut order = CommandOrder::new("x", kind);
            order.rev = Some(SHA.into());
            let err = c.action_for(&order).unwrap_err();
            assert!(err.contains("only with `preview`"), "{kind}: {err}");
        }
        // A path a URL would read differently is not built from somewhere else.
        let mut odd = ctx(HostType::Nixos, true);
        odd.checkout = Some(Checkout {
            dir: "/etc/nix os#x".into(),
            clone_url: None,
        });
        assert!(odd
            .action_for(&preview_of(SHA))
            .unwrap_err()
            .contains("URL"));
        // A configured preview (were one allowed) knows nothing of the commit.
        let mut configured = ctx(HostType::Nixos, true);
        configured.overrides.insert(
            CommandKind::Preview,
            CommandOverride {
                argv: Some(strings(&["true"])),
                timeout_s: None,
            },
        );
        let err = configured.action_for(&preview_of(SHA)).unwrap_err();
        assert!(err.contains("[commands]"), "{err}");
    }

    #[test]
    fn argv_display_quotes_what_a_shell_would_split() {
        assert_eq!(
            display_argv(&strings(&["echo", "a b", "it's", ""])),
            r"echo 'a b' 'it'\''s' ''"
        );
    }
}
