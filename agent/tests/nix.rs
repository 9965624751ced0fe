//! The Nix-native commands against real Nix: the agent binary runs as its own process,
//! connected to a fake dashboard here, with a test flake (testkit::nix) as its checkout
//! and a profile in a temp dir standing in for /nix/var/nix/profiles/system.
//!
//! `--current-system` points at the profile itself (the test flake's activation does not
//! update /run/current-system as NixOS's does), and `--booted-system` at a link the test
//! sets to the first generation's store path.

use futures::{SinkExt, StreamExt};
use protocol::messages::{
    Ack, AgentCommandComplete, AgentOutcome, CommandOrder, Register, Registered, StatusReport,
    StopOrder,
};
use protocol::{
    decode, AgentMessage, ChangeKind, ClosureDiff, CommandKind, Decoded, ServerMessage,
};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::nix::{nix_env, nixos_attr, require_nix, Activation, FlakeHost, TestFlake};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const AGENT: &str = env!("CARGO_BIN_EXE_nixdeck-agent");
const HOST: &str = "web-1";
/// Short, so the tests that wait it out stay quick.
const CONFIRM_S: u64 = 5;

type ServerSocket = WebSocketStream<TcpStream>;

/// One host under test: the flake checkout, the profile, the agent's state.
struct Machine {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    flake: TestFlake,
    profile: PathBuf,
    booted: PathBuf,
    state: PathBuf,
    pid_file: PathBuf,
    /// Extra agent arguments.
    args: Vec<String>,
    /// The agent's checkout (default: the flake's repository itself).
    checkout: Option<PathBuf>,
    confirm_s: u64,
    listener: TcpListener,
    agent: Option<Child>,
}

impl Machine {
    async fn new(hosts: &[FlakeHost]) -> Machine {
        require_nix();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let flake = TestFlake::new(&root.join("repo"), hosts);
        std::fs::create_dir_all(root.join("profiles")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Machine {
            profile: root.join("profiles/system"),
            booted: root.join("booted-system"),
            state: root.join("state"),
            pid_file: root.join("agent.pid"),
            flake,
            root,
            _tmp: tmp,
            args: Vec::new(),
            checkout: None,
            confirm_s: CONFIRM_S,
            listener,
            agent: None,
        }
    }

    /// Builds the flake as committed and adds it to the profile as the next generation,
    /// as an earlier switch would have (no activation).
    fn set_generation(&self) -> String {
        let path = self.flake.build(&nixos_attr(HOST));
        nix_env_cmd(&["-p", &self.profile.display().to_string(), "--set", &path]);
        path
    }

    /// "Booted" from this store path.
    fn boot_from(&self, path: &str) {
        let _ = std::fs::remove_file(&self.booted);
        std::os::unix::fs::symlink(path, &self.booted).unwrap();
    }

    fn generation(&self) -> u64 {
        let link = std::fs::read_link(&self.profile).unwrap();
        let name = link.file_name().unwrap().to_str().unwrap();
        name.trim_start_matches("system-")
            .trim_end_matches("-link")
            .parse()
            .unwrap()
    }

    fn current_path(&self) -> String {
        std::fs::canonicalize(&self.profile)
            .unwrap()
            .display()
            .to_string()
    }

    /// Starts the agent binary and accepts its session.
    async fn start(&mut self) -> Session {
        let port = self.listener.local_addr().unwrap().port();
        let mut cmd = Command::new(AGENT);
        cmd.args([
            "--url",
            &format!("ws://127.0.0.1:{port}"),
            "--token",
            "test-token",
            "--hostname",
            HOST,
            "--host-type",
            "nixos",
            "--interval",
            "1",
        ])
        .arg("--state-dir")
        .arg(&self.state)
        .arg("--repo-dir")
        .arg(self.checkout.as_ref().unwrap_or(&self.flake.dir))
        .arg("--system-profile")
        .arg(&self.profile)
        .arg("--current-system")
        .arg(&self.profile)
        .arg("--booted-system")
        .arg(&self.booted)
        .args(["--confirm-timeout-s", &self.confirm_s.to_string()])
        .args(&self.args)
        .envs(nix_env())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.join("agent.log"))
                .unwrap(),
        );
        for (key, _) in std::env::vars() {
            if key.starts_with("NIXDECK_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd.spawn().expect("starting the agent");
        std::fs::write(&self.pid_file, format!("{}\n", child.id())).unwrap();
        self.agent = Some(child);
        self.accept().await
    }

    async fn accept(&mut self) -> Session {
        let (tcp, _) = timeout(Duration::from_secs(20), self.listener.accept())
            .await
            .expect("the agent connects")
            .unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let AgentMessage::Register(register) = next_frame(&mut ws, Duration::from_secs(10))
            .await
            .expect("register")
        else {
            panic!("the first frame must be register");
        };
        send(
            &mut ws,
            ServerMessage::Registered(Registered {
                host_id: HOST.into(),
                dashboard_version: protocol::VERSION.into(),
                heartbeat_interval_s: 1,
                agent_token: None,
            }),
        )
        .await;
        Session {
            ws,
            register,
            statuses: Vec::new(),
        }
    }

    /// Waits for the agent process to end (it was killed).
    fn reap(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.wait();
        }
    }

    /// The agent's log, for failure messages.
    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.root.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn nix_env_cmd(args: &[&str]) -> String {
    testkit::proc::run(Command::new("nix-env").args(args).envs(nix_env()))
}

struct Session {
    ws: ServerSocket,
    register: Register,
    statuses: Vec<StatusReport>,
}

/// What the dashboard saw of one command.
#[derive(Debug)]
struct Done {
    lines: Vec<String>,
    complete: AgentCommandComplete,
}

impl Done {
    fn log(&self) -> String {
        self.lines.join("\n")
    }

    fn has(&self, text: &str) -> bool {
        self.lines.iter().any(|l| l.contains(text))
    }

    fn assert_has(&self, text: &str) {
        assert!(self.has(text), "`{text}` not in the log:\n{}", self.log());
    }

    fn generation(&self) -> Option<u64> {
        self.complete.result.as_ref().and_then(|r| r.generation)
    }
}

async fn send(ws: &mut ServerSocket, msg: ServerMessage) {
    ws.send(Message::text(serde_json::to_string(&msg).unwrap()))
        .await
        .unwrap();
}

/// The next agent frame within `within`; None when the agent hung up.
async fn next_frame(ws: &mut ServerSocket, within: Duration) -> Option<AgentMessage> {
    timeout(within, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Text(text))) => {
                    assert!(text.len() < 64 * 1024, "a frame over the agent limit");
                    match decode::<AgentMessage>(&text) {
                        Decoded::Message(m) => return Some(m),
                        other => panic!("agent sent {other:?}"),
                    }
                }
                Some(Ok(Message::Close(_))) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("timed out waiting for an agent frame")
}

impl Session {
    async fn order(&mut self, order: CommandOrder) {
        send(&mut self.ws, ServerMessage::Command(order)).await;
    }

    async fn command(&mut self, id: &str, kind: CommandKind) -> Done {
        self.order(CommandOrder::new(id, kind)).await;
        self.run_to_end(id).await
    }

    /// Reads frames, acking every line, until `id` completes (then acks that too).
    async fn run_to_end(&mut self, id: &str) -> Done {
        self.run_to_end_acking(id, true).await
    }

    /// Like `run_to_end`, acking the lines as they come only if `ack_lines`.
    async fn run_to_end_acking(&mut self, id: &str, ack_lines: bool) -> Done {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = next_frame(&mut self.ws, left)
                .await
                .unwrap_or_else(|| panic!("the agent hung up before {id} completed: {lines:#?}"));
            match frame {
                AgentMessage::Output(o) if o.command_id == id => {
                    lines.push(o.line);
                    if !ack_lines {
                        continue;
                    }
                    let ack = Ack {
                        command_id: id.into(),
                        seq: o.seq,
                        complete: false,
                    };
                    send(&mut self.ws, ServerMessage::Ack(ack)).await;
                }
                AgentMessage::CommandComplete(c) if c.command_id == id => {
                    let ack = Ack {
                        command_id: id.into(),
                        seq: c.last_seq,
                        complete: true,
                    };
                    send(&mut self.ws, ServerMessage::Ack(ack)).await;
                    return Done { lines, complete: c };
                }
                AgentMessage::CommandRejected(r) => panic!("rejected: {r:?}"),
                AgentMessage::Status(s) => self.statuses.push(s),
                _ => {}
            }
        }
    }

    /// The next `status` that carries generations (sent after a switch, boot or rollback).
    async fn generations_status(&mut self) -> StatusReport {
        if let Some(i) = self.statuses.iter().position(|s| s.generations.is_some()) {
            return self.statuses.remove(i);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match next_frame(&mut self.ws, left).await.expect("agent alive") {
                AgentMessage::Status(s) if s.generations.is_some() => return s,
                _ => {}
            }
        }
    }
}

fn numbers(gens: &[protocol::Generation]) -> Vec<(u64, bool, bool)> {
    gens.iter()
        .map(|g| (g.number, g.current, g.booted))
        .collect()
}

// ---------------------------------------------------------------- switch and generations

#[tokio::test]
async fn switch_builds_sets_the_profile_activates_and_is_confirmed() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    let first = m.set_generation();
    m.boot_from(&first);
    let mut s = m.start().await;
    let gens = s
        .register
        .generations
        .clone()
        .expect("generations in register");
    assert_eq!(numbers(&gens), [(1, true, true)]);
    assert_eq!(gens[0].store_path, first);
    assert_eq!(s.register.reboot_needed, Some(false));

    // A new kernel too: booted ≠ current afterwards.
    m.flake
        .commit(&[v1.clone().with_version("26.05.2").kernel("6.6.2")], "v2");
    let preview = s.command("pv-1", CommandKind::Preview).await;
    let diff = preview.complete.result.unwrap().diff.unwrap();
    assert!(diff.reboot_needed, "the preview sees the kernel change");
    assert!(diff
        .changes
        .iter()
        .any(|c| c.name == "linux" && c.kind == ChangeKind::Upgraded));
    let done = s.command("sw-1", CommandKind::Switch).await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    assert_eq!(done.generation(), Some(2));
    let result = done.complete.result.clone().unwrap();
    assert!(result
        .store_path
        .unwrap()
        .ends_with("nixos-system-web-1-26.05.2"));
    done.assert_has("$ nix build --no-link --json");
    done.assert_has("#nixosConfigurations.web-1.config.system.build.toplevel");
    done.assert_has(&format!(
        "$ nix-env -p {} --set /nix/store/",
        m.profile.display()
    ));
    done.assert_has("/bin/switch-to-configuration switch");
    done.assert_has("activating web-1 26.05.2 (switch)");
    done.assert_has("waiting up to 5 s for the agent to reach the dashboard");
    done.assert_has("generation 2 confirmed");
    assert_eq!(m.generation(), 2);

    let status = s.generations_status().await;
    assert_eq!(
        numbers(status.generations.as_ref().unwrap()),
        [(1, false, true), (2, true, false)]
    );
    assert_eq!(status.reboot_needed, Some(true), "the kernel changed");

    // boot: the profile moves, the activation is `boot`, no health gate.
    m.flake.commit(&[v1.with_version("26.05.3")], "v3");
    let done = s.command("boot-1", CommandKind::Boot).await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    assert_eq!(done.generation(), Some(3));
    done.assert_has("activating web-1 26.05.3 (boot)");
    assert!(!done.has("waiting up to"), "{}", done.log());
    let status = s.generations_status().await;
    assert_eq!(
        status.reboot_needed,
        Some(false),
        "back on the booted kernel"
    );
}

trait WithVersion {
    fn with_version(self, version: &str) -> Self;
}

impl WithVersion for FlakeHost {
    fn with_version(mut self, version: &str) -> Self {
        self.version = version.to_owned();
        self
    }
}

#[tokio::test]
async fn rollback_to_the_previous_and_to_a_chosen_generation() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    m.set_generation();
    for v in ["26.05.2", "26.05.3"] {
        m.flake.commit(&[v1.clone().with_version(v)], v);
        m.set_generation();
    }
    assert_eq!(m.generation(), 3);
    let mut s = m.start().await;

    let done = s.command("rb-1", CommandKind::Rollback).await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    assert_eq!(done.generation(), Some(2));
    done.assert_has("--rollback");
    done.assert_has("activating web-1 26.05.2 (switch)");
    assert_eq!(m.generation(), 2);
    let status = s.generations_status().await;
    assert_eq!(
        numbers(status.generations.as_ref().unwrap()),
        [(1, false, false), (2, true, false), (3, false, false)]
    );

    let mut order = CommandOrder::new("rb-2", CommandKind::Rollback);
    order.generation = Some(1);
    s.order(order).await;
    let done = s.run_to_end("rb-2").await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    assert_eq!(done.generation(), Some(1));
    done.assert_has("--switch-generation 1");
    done.assert_has("activating web-1 26.05.1 (switch)");
    assert_eq!(m.generation(), 1);

    let mut order = CommandOrder::new("rb-3", CommandKind::Rollback);
    order.generation = Some(42);
    s.order(order).await;
    let done = s.run_to_end("rb-3").await;
    assert_eq!(done.complete.status, AgentOutcome::Error, "{}", done.log());
    assert_eq!(m.generation(), 1);
}

#[tokio::test]
async fn pull_switch_pulls_then_switches_through_the_gate() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    m.set_generation();
    // The host's checkout is a clone; the flake's repository plays the remote.
    let checkout = m.root.join("checkout");
    testkit::git::git(
        &m.root,
        &[
            "clone",
            "-q",
            &m.flake.dir.display().to_string(),
            "checkout",
        ],
    );
    m.checkout = Some(checkout.clone());
    let mut s = m.start().await;
    let head = m.flake.commit(&[v1.with_version("26.05.2")], "v2");
    let done = s.command("ps-1", CommandKind::PullSwitch).await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    assert_eq!(testkit::git::git(&checkout, &["rev-parse", "HEAD"]), head);
    done.assert_has("reset --hard origin/main");
    done.assert_has("activating web-1 26.05.2 (switch)");
    done.assert_has("generation 2 confirmed");
    assert_eq!(done.generation(), Some(2));
    assert!(s.generations_status().await.generations.is_some());
}

// ---------------------------------------------------------------- preview

#[tokio::test]
async fn preview_diffs_and_a_switch_activates_exactly_the_previewed_path() {
    let v1 = FlakeHost::new(HOST, "26.05.1").package("curl", "8.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    m.set_generation();
    let mut s = m.start().await;

    let v2 = FlakeHost::new(HOST, "26.05.2")
        .package("openssl", "3.0.15")
        .package("zlib", "1.3")
        .package("bash", "5.2")
        .package("coreutils", "9.5");
    m.flake.commit(&[v2], "v2");
    let done = s.command("pv-1", CommandKind::Preview).await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    let result = done.complete.result.clone().unwrap();
    let diff = result.diff.expect("a diff");
    let packages = package_changes(&diff);
    assert_eq!(
        packages,
        [
            ("bash", None, Some("5.2"), ChangeKind::Added),
            ("coreutils", None, Some("9.5"), ChangeKind::Added),
            ("curl", Some("8.1"), None, ChangeKind::Removed),
            (
                "openssl",
                Some("3.0.14"),
                Some("3.0.15"),
                ChangeKind::Upgraded
            ),
            ("zlib", None, Some("1.3"), ChangeKind::Added),
        ]
    );
    // Nix lists the toplevel itself too; kept.
    assert!(diff
        .changes
        .iter()
        .any(|c| c.name == "nixos-system-web" && c.kind == ChangeKind::Upgraded));
    assert!(diff.closure_bytes_before > 0);
    assert!(
        diff.closure_bytes_after > diff.closure_bytes_before,
        "{diff:?}"
    );
    assert!(!diff.reboot_needed);
    assert_eq!(diff.truncated, 0);
    let previewed = result.store_path.expect("the built path");
    assert!(previewed.ends_with("nixos-system-web-1-26.05.2"));
    done.assert_has("$ nix store diff-closures");
    done.assert_has("openssl: 3.0.14 → 3.0.15");
    assert_eq!(m.generation(), 1, "a preview activates nothing");

    // The checkout moves on; the switch still activates what was previewed.
    m.flake.commit(&[v1.with_version("26.05.9")], "v9");
    let mut order = CommandOrder::new("sw-p", CommandKind::Switch);
    order.store_path = Some(previewed.clone());
    s.order(order).await;
    let done = s.run_to_end("sw-p").await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    assert!(!done.has("$ nix build"), "{}", done.log());
    done.assert_has("activating web-1 26.05.2 (switch)");
    let result = done.complete.result.clone().unwrap();
    assert_eq!(result.store_path.as_deref(), Some(previewed.as_str()));
    assert_eq!(result.generation, Some(2));
    assert_eq!(m.current_path(), previewed);

    // A path outside the store: nothing switched.
    let mut order = CommandOrder::new("sw-tmp", CommandKind::Switch);
    order.store_path = Some(m.flake.dir.display().to_string());
    s.order(order).await;
    let done = s.run_to_end("sw-tmp").await;
    assert_eq!(done.complete.status, AgentOutcome::Error, "{}", done.log());
    done.assert_has("is not a path in /nix/store; nothing was switched");
    assert_eq!(m.generation(), 2);

    // A store path that is not a system: nothing switched.
    let mut order = CommandOrder::new("sw-bad", CommandKind::Switch);
    order.store_path = Some("/nix/store/00000000000000000000000000000000-gone".into());
    s.order(order).await;
    let done = s.run_to_end("sw-bad").await;
    assert_eq!(done.complete.status, AgentOutcome::Error, "{}", done.log());
    done.assert_has("nothing was switched");
    assert_eq!(m.generation(), 2);
}

#[tokio::test]
async fn preview_without_a_current_system_lists_everything_as_added() {
    let mut m = Machine::new(&[FlakeHost::new(HOST, "26.05.1").kernel("6.1.0")]).await;
    let mut s = m.start().await;
    assert_eq!(s.register.generations, None, "no profile yet");
    let done = s.command("pv-0", CommandKind::Preview).await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    let diff = done.complete.result.unwrap().diff.unwrap();
    assert_eq!(diff.closure_bytes_before, 0);
    assert!(diff.closure_bytes_after > 0);
    assert!(diff
        .changes
        .iter()
        .all(|c| c.kind == ChangeKind::Added && c.old.is_none()));
    assert!(diff
        .changes
        .iter()
        .any(|c| c.name == "openssl" && c.new.as_deref() == Some("3.0.14")));
    assert!(diff
        .changes
        .iter()
        .any(|c| c.name == "linux" && c.new.as_deref() == Some("6.1.0")));
}

// ---------------------------------------------------------------- preview of a commit

/// Whether the repository in `dir` holds commit `sha`.
fn has_commit(dir: &std::path::Path, sha: &str) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["cat-file", "-e", &format!("{sha}^{{commit}}")])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The checkout is a clone of a bare origin whose main has v1; v2 sits on another branch
/// of the origin that the checkout never fetched, as a pull request's head does.
#[tokio::test]
async fn preview_of_a_commit_fetches_and_builds_it_and_leaves_the_checkout_alone() {
    use testkit::git::git;
    let v1 = FlakeHost::new(HOST, "26.05.1").package("curl", "8.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    let first = m.set_generation();
    let origin = m.root.join("origin.git").display().to_string();
    git(&m.root, &["init", "-q", "--bare", "-b", "main", &origin]);
    git(&m.flake.dir, &["remote", "add", "origin", &origin]);
    git(&m.flake.dir, &["push", "-q", "origin", "main"]);
    let checkout = m.root.join("checkout");
    git(&m.root, &["clone", "-q", &origin, "checkout"]);
    m.checkout = Some(checkout.clone());
    let head = git(&checkout, &["rev-parse", "HEAD"]);
    let v2 = FlakeHost::new(HOST, "26.05.2")
        .package("openssl", "3.0.15")
        .package("zlib", "1.3")
        .package("bash", "5.2");
    let sha = m.flake.commit(&[v2], "v2");
    git(
        &m.flake.dir,
        &["push", "-q", "origin", "HEAD:refs/heads/pr-7"],
    );
    assert!(!has_commit(&checkout, &sha), "the checkout has not seen v2");
    let mut s = m.start().await;

    let preview = |id: &str, rev: &str| {
        let mut order = CommandOrder::new(id, CommandKind::Preview);
        order.rev = Some(rev.to_owned());
        order
    };
    let unchanged = |m: &Machine| {
        assert_eq!(git(&checkout, &["rev-parse", "HEAD"]), head);
        assert_eq!(
            git(&checkout, &["rev-parse", "--abbrev-ref", "HEAD"]),
            "main"
        );
        assert_eq!(git(&checkout, &["status", "--porcelain"]), "");
        assert_eq!(m.generation(), 1, "a preview activates nothing");
        assert_eq!(m.current_path(), first);
    };

    s.order(preview("pv-rev", &sha)).await;
    let done = s.run_to_end("pv-rev").await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    done.assert_has(&format!(
        "$ git -c safe.directory=* -C {} fetch origin {sha}",
        checkout.display()
    ));
    done.assert_has(&format!(
        "$ nix build --no-link --json 'git+file://{}?rev={sha}#{}'",
        checkout.display(),
        nixos_attr(HOST)
    ));
    let result = done.complete.result.clone().unwrap();
    let diff = result.diff.expect("a diff");
    let packages = package_changes(&diff);
    assert_eq!(
        packages,
        [
            ("bash", None, Some("5.2"), ChangeKind::Added),
            ("curl", Some("8.1"), None, ChangeKind::Removed),
            (
                "openssl",
                Some("3.0.14"),
                Some("3.0.15"),
                ChangeKind::Upgraded
            ),
            ("zlib", None, Some("1.3"), ChangeKind::Added),
        ]
    );
    let store_path = result.store_path.expect("the built path");
    assert!(
        store_path.ends_with("-nixos-system-web-1-26.05.2"),
        "{store_path}"
    );
    unchanged(&m);
    assert!(has_commit(&checkout, &sha), "fetched into the object store");

    // Present now: no second fetch.
    s.order(preview("pv-again", &sha)).await;
    let done = s.run_to_end("pv-again").await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    done.assert_has("not fetching");
    assert!(!done.has("fetch origin"), "{}", done.log());
    assert_eq!(
        done.complete.result.unwrap().store_path.as_deref(),
        Some(store_path.as_str())
    );

    // Not a full commit id: refused before git or nix run.
    let bad = [
        "main; rm -rf /".to_owned(),
        sha[..12].to_owned(),
        sha.to_uppercase(),
    ];
    for (i, rev) in bad.iter().enumerate() {
        let id = format!("pv-bad-{i}");
        s.order(preview(&id, rev)).await;
        let done = s.run_to_end(&id).await;
        assert_eq!(done.complete.status, AgentOutcome::Error, "{}", done.log());
        done.assert_has("must be a full commit id (40 or 64 lowercase hex digits)");
        assert_eq!(done.lines.len(), 1, "nothing ran: {}", done.log());
        assert!(!done.has("$ "), "{}", done.log());
    }
    // Only a preview takes a commit.
    let mut order = CommandOrder::new("sw-rev", CommandKind::Switch);
    order.rev = Some(sha.clone());
    s.order(order).await;
    let done = s.run_to_end("sw-rev").await;
    assert_eq!(done.complete.status, AgentOutcome::Error, "{}", done.log());
    done.assert_has("goes only with `preview`");
    assert!(!done.has("$ "), "{}", done.log());

    // A commit the origin does not have: git says so, nothing is built.
    let missing = "0123456789abcdef".repeat(3)[..40].to_owned();
    s.order(preview("pv-missing", &missing)).await;
    let done = s.run_to_end("pv-missing").await;
    assert_eq!(done.complete.status, AgentOutcome::Error, "{}", done.log());
    done.assert_has(&format!("fetch origin {missing}"));
    done.assert_has("not our ref");
    assert!(!done.has("$ nix build"), "{}", done.log());
    unchanged(&m);
}

// ---------------------------------------------------------------- the health gate

#[tokio::test]
async fn a_failed_activation_returns_to_the_generation_current_at_the_start() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    m.set_generation();
    m.flake.commit(&[v1.clone().with_version("26.05.2")], "v2");
    m.set_generation();
    // The operator went back to 1: previous is 1, not 3 − 1.
    nix_env_cmd(&[
        "-p",
        &m.profile.display().to_string(),
        "--switch-generation",
        "1",
    ]);
    let mut s = m.start().await;

    m.flake.commit(
        &[v1.with_version("26.05.3").activation(Activation::Fail)],
        "v3 fails",
    );
    let done = s.command("sw-f", CommandKind::Switch).await;
    assert_eq!(
        done.complete.status,
        AgentOutcome::RolledBack,
        "{}",
        done.log()
    );
    assert_eq!(done.generation(), Some(1));
    done.assert_has("activation of web-1 26.05.3 failed");
    done.assert_has("rolling back to generation 1");
    done.assert_has("--switch-generation 1");
    done.assert_has("activating web-1 26.05.1 (switch)");
    done.assert_has("rolled back to generation 1");
    assert_eq!(m.generation(), 1);
    let status = s.generations_status().await;
    let gens = status.generations.unwrap();
    assert_eq!(gens.iter().find(|g| g.current).unwrap().number, 1);
}

#[tokio::test]
async fn failing_health_checks_roll_back() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    m.set_generation();
    // A URL nobody answers on: a port bound and closed again.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // And one that answers 200, to see that a passing URL passes.
    let healthy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let healthy_port = healthy.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut tcp, _)) = healthy.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let config = m.root.join("agent.toml");
    std::fs::write(
        &config,
        format!("[health]\nurls = [\"http://127.0.0.1:{healthy_port}/health\"]\n"),
    )
    .unwrap();
    m.args = vec!["--config".into(), config.display().to_string()];
    let mut s = m.start().await;

    // A test script in hosts/<host>/tests/ that fails.
    m.flake.commit(&[v1.clone().with_version("26.05.2")], "v2");
    m.flake.commit_file(
        "hosts/web-1/tests/10-web",
        "#!/bin/sh\necho 'web answers 502' >&2\nexit 1\n",
        true,
        "a failing test",
    );
    let done = s.command("sw-t", CommandKind::Switch).await;
    assert_eq!(
        done.complete.status,
        AgentOutcome::RolledBack,
        "{}",
        done.log()
    );
    done.assert_has("activating web-1 26.05.2 (switch)");
    done.assert_has("web answers 502");
    done.assert_has("health check failed: 1 of 1 tests failed: 10-web");
    done.assert_has("activating web-1 26.05.1 (switch)");
    assert_eq!(done.generation(), Some(1));
    assert_eq!(m.generation(), 1);

    // Passing tests, a passing URL: confirmed.
    m.flake.commit_file(
        "hosts/web-1/tests/10-web",
        "#!/bin/sh\necho 'web answers 200'\n",
        true,
        "a passing test",
    );
    let done = s.command("sw-ok", CommandKind::Switch).await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    done.assert_has("web answers 200");
    done.assert_has(&format!("127.0.0.1:{healthy_port}/health answered 200"));
    // The same system as the rolled-back generation 2 (only a test changed), and Nix
    // reuses the newest generation when it holds the same path.
    assert_eq!(m.generation(), 2);
    drop(s);

    // A URL that does not answer.
    m.reap_and_kill();
    std::fs::write(
        &config,
        format!("[health]\nurls = [\"http://127.0.0.1:{port}/health\"]\n"),
    )
    .unwrap();
    let mut s = m.start().await;
    m.flake.commit(&[v1.with_version("26.05.4")], "v4");
    let done = s.command("sw-u", CommandKind::Switch).await;
    assert_eq!(
        done.complete.status,
        AgentOutcome::RolledBack,
        "{}",
        done.log()
    );
    done.assert_has(&format!(
        "health check failed: http://127.0.0.1:{port}/health did not answer 2xx"
    ));
    assert_eq!(done.generation(), Some(2));
    assert_eq!(m.generation(), 2);
}

// ---------------------------------------------------------------- --switch-action test

impl Machine {
    /// The profile's generation links, by number: a test activation must add none.
    fn generation_numbers(&self) -> Vec<u64> {
        let mut found: Vec<u64> = std::fs::read_dir(self.profile.parent().unwrap())
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                name.strip_prefix("system-")?
                    .strip_suffix("-link")?
                    .parse()
                    .ok()
            })
            .collect();
        found.sort();
        found
    }
}

#[tokio::test]
async fn switch_action_test_activates_without_touching_the_profile() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    let first = m.set_generation();
    m.boot_from(&first);
    m.args = vec!["--switch-action".into(), "test".into()];
    let mut s = m.start().await;

    m.flake.commit(&[v1.clone().with_version("26.05.2")], "v2");
    let done = s.command("sw-t", CommandKind::Switch).await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    done.assert_has("$ nix build --no-link --json");
    done.assert_has("/bin/switch-to-configuration test");
    done.assert_has("activating web-1 26.05.2 (test)");
    done.assert_has("(test: not the boot default, no new generation)");
    done.assert_has("confirmed: the agent reached the dashboard");
    assert!(!done.has("nix-env"), "{}", done.log());
    let result = done.complete.result.clone().unwrap();
    assert!(result
        .store_path
        .as_deref()
        .unwrap()
        .ends_with("nixos-system-web-1-26.05.2"));
    assert_eq!(
        result.generation, None,
        "a test activation makes no generation"
    );
    assert_eq!(m.generation(), 1);
    assert_eq!(m.generation_numbers(), [1]);
    assert_eq!(m.current_path(), first);
    let status = s.generations_status().await;
    assert_eq!(
        numbers(status.generations.as_ref().unwrap()),
        [(1, true, true)]
    );

    // A previewed path: the same activation (a pull-switch's plan is in plan.rs's tests).
    m.flake.commit(&[v1.with_version("26.05.3")], "v3");
    let preview = s.command("pv-t", CommandKind::Preview).await;
    let previewed = preview.complete.result.unwrap().store_path.unwrap();
    let mut order = CommandOrder::new("sw-pt", CommandKind::Switch);
    order.store_path = Some(previewed.clone());
    s.order(order).await;
    let done = s.run_to_end("sw-pt").await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    assert!(!done.has("$ nix build"), "{}", done.log());
    done.assert_has("activating web-1 26.05.3 (test)");
    let result = done.complete.result.clone().unwrap();
    assert_eq!(result.store_path.as_deref(), Some(previewed.as_str()));
    assert_eq!(result.generation, None);
    assert_eq!(m.generation_numbers(), [1]);
    assert_eq!(m.current_path(), first);

    // boot is unchanged: it sets the profile, as with --switch-action switch.
    let done = s.command("boot-t", CommandKind::Boot).await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    done.assert_has("activating web-1 26.05.3 (boot)");
    assert_eq!(done.generation(), Some(2));
    assert_eq!(m.generation_numbers(), [1, 2]);
}

#[tokio::test]
async fn switch_action_test_rolls_back_by_activating_the_previous_system_again() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    let first = m.set_generation();
    m.args = vec!["--switch-action".into(), "test".into()];
    let mut s = m.start().await;

    // A failing health check.
    m.flake.commit(&[v1.clone().with_version("26.05.2")], "v2");
    m.flake.commit_file(
        "hosts/web-1/tests/10-web",
        "#!/bin/sh\necho 'web answers 502' >&2\nexit 1\n",
        true,
        "a failing test",
    );
    let done = s.command("sw-tf", CommandKind::Switch).await;
    assert_eq!(
        done.complete.status,
        AgentOutcome::RolledBack,
        "{}",
        done.log()
    );
    done.assert_has("activating web-1 26.05.2 (test)");
    done.assert_has("health check failed: 1 of 1 tests failed: 10-web");
    done.assert_has(&format!(
        "rolling back to the system running before, {first}"
    ));
    done.assert_has(&format!("$ {first}/bin/switch-to-configuration test"));
    done.assert_has("activating web-1 26.05.1 (test)");
    done.assert_has(&format!(
        "rolled back to the system running before, {first}"
    ));
    assert!(!done.has("nix-env"), "{}", done.log());
    let result = done.complete.result.clone().unwrap();
    assert_eq!(result.store_path.as_deref(), Some(first.as_str()));
    assert_eq!(result.generation, None);
    assert_eq!(m.generation(), 1);
    assert_eq!(m.generation_numbers(), [1]);
    let status = s.generations_status().await;
    assert_eq!(
        numbers(status.generations.as_ref().unwrap()),
        [(1, true, false)]
    );

    // A failing activation: the same.
    m.flake.commit(
        &[v1.with_version("26.05.3").activation(Activation::Fail)],
        "v3 fails",
    );
    let done = s.command("sw-ta", CommandKind::Switch).await;
    assert_eq!(
        done.complete.status,
        AgentOutcome::RolledBack,
        "{}",
        done.log()
    );
    done.assert_has("activation of web-1 26.05.3 failed");
    done.assert_has("activating web-1 26.05.1 (test)");
    assert_eq!(
        done.complete.result.clone().unwrap().store_path.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(m.generation_numbers(), [1]);
}

impl Machine {
    fn reap_and_kill(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn an_agent_killed_by_the_activation_and_not_back_in_time_means_rolled_back() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    m.set_generation();
    let mut s = m.start().await;
    m.flake.commit(
        &[v1.with_version("26.05.2")
            .activation(Activation::KillPidIn(m.pid_file.clone()))],
        "v2 breaks the agent",
    );
    s.order(CommandOrder::new("sw-k", CommandKind::Switch))
        .await;
    // The activation kills the agent; its link drops.
    let deadline = Instant::now() + Duration::from_secs(60);
    while next_frame(
        &mut s.ws,
        deadline.saturating_duration_since(Instant::now()),
    )
    .await
    .is_some()
    {}
    m.reap();
    // Nobody is there to confirm: the supervisor rolls back on its own.
    let result = m.state.join("commands/sw-k/result");
    let deadline = Instant::now() + Duration::from_secs(CONFIRM_S + 30);
    while !result.exists() {
        assert!(Instant::now() < deadline, "no result from the supervisor");
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(m.generation(), 1, "back on the generation from before");

    // The agent comes back later and reports what happened.
    let mut s = m.start().await;
    let running = s
        .register
        .running_command
        .clone()
        .expect("the held command");
    assert_eq!(running.command_id, "sw-k");
    let done = s.run_to_end("sw-k").await;
    assert_eq!(
        done.complete.status,
        AgentOutcome::RolledBack,
        "{}",
        done.log()
    );
    assert_eq!(done.generation(), Some(1));
    done.assert_has("activating web-1 26.05.2 (switch); killing the agent");
    done.assert_has(&format!(
        "the agent did not reach the dashboard within {CONFIRM_S} s after the activation"
    ));
    done.assert_has("rolled back to generation 1");
    let status = s.generations_status().await;
    let gens = status.generations.unwrap();
    assert_eq!(gens.iter().find(|g| g.current).unwrap().number, 1);
}

#[tokio::test]
async fn an_agent_restarted_within_the_window_confirms_the_switch() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    m.set_generation();
    m.confirm_s = 60;
    let mut s = m.start().await;
    m.flake.commit(
        &[v1.with_version("26.05.2")
            .activation(Activation::KillPidIn(m.pid_file.clone()))],
        "v2 restarts the agent",
    );
    s.order(CommandOrder::new("sw-r", CommandKind::Switch))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next_frame(
        &mut s.ws,
        deadline.saturating_duration_since(Instant::now()),
    )
    .await
    .is_some()
    {}
    m.reap();
    // As the service manager would: a new agent at once.
    let mut s = m.start().await;
    let done = s.run_to_end("sw-r").await;
    assert_eq!(done.complete.status, AgentOutcome::Ok, "{}", done.log());
    done.assert_has("generation 2 confirmed");
    assert_eq!(done.generation(), Some(2));
    assert_eq!(m.generation(), 2);
}

#[tokio::test]
async fn a_stop_during_the_health_gate_rolls_back() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    m.set_generation();
    m.confirm_s = 60;
    let mut s = m.start().await;
    m.flake.commit(&[v1.with_version("26.05.2")], "v2");
    s.order(CommandOrder::new("sw-s", CommandKind::Switch))
        .await;
    // Read without acking: the gate waits for the dashboard; then stop it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let frame = next_frame(
            &mut s.ws,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        .expect("agent alive");
        if let AgentMessage::Output(o) = frame {
            if o.line.contains("waiting up to 60 s") {
                break;
            }
        }
    }
    send(
        &mut s.ws,
        ServerMessage::Stop(StopOrder {
            command_id: "sw-s".into(),
        }),
    )
    .await;
    // Still no acks: the dashboard must not seem reached.
    let done = s.run_to_end_acking("sw-s", false).await;
    assert_eq!(
        done.complete.status,
        AgentOutcome::RolledBack,
        "{}",
        done.log()
    );
    done.assert_has("the command was stopped; rolling back to generation 1");
    assert_eq!(m.generation(), 1);
}

// ---------------------------------------------------------------- bad input

#[tokio::test]
async fn bad_input_ends_as_an_error_with_nix_saying_why_and_the_profile_unchanged() {
    let v1 = FlakeHost::new(HOST, "26.05.1");
    let mut m = Machine::new(std::slice::from_ref(&v1)).await;
    m.set_generation();
    let mut s = m.start().await;

    let cases: [(&str, String, &str); 3] = [
        (
            "missing",
            testkit::nix::flake_nix(&[FlakeHost::new("db-1", "1")]),
            "does not provide attribute",
        ),
        (
            "eval",
            "{ outputs = { self }: throw \"broken on purpose\"; }\n".to_owned(),
            "broken on purpose",
        ),
        (
            "build",
            format!(
                "{{ outputs = {{ self }}: {{ nixosConfigurations.web-1.config.system.build.toplevel = \
                 derivation {{ name = \"nixos-system-web-1\"; system = \"{}\"; builder = \"/bin/sh\"; \
                 args = [ \"-c\" \"echo compiler exploded on purpose >&2; exit 1\" ]; }}; }}; }}\n",
                testkit::nix::system()
            ),
            "compiler exploded on purpose",
        ),
    ];
    for (name, flake, said) in cases {
        m.flake.commit_file("flake.nix", &flake, false, name);
        for kind in [CommandKind::Switch, CommandKind::Preview] {
            let id = format!("{name}-{kind}");
            let done = s.command(&id, kind).await;
            assert_eq!(
                done.complete.status,
                AgentOutcome::Error,
                "{id}: {}",
                done.log()
            );
            done.assert_has(said);
            assert_eq!(m.generation(), 1, "{id}");
            assert!(!done.has("activating"), "{id}: {}", done.log());
        }
    }
}

#[tokio::test]
async fn a_profile_whose_directory_is_missing_is_an_error_not_a_new_profile() {
    let mut m = Machine::new(&[FlakeHost::new(HOST, "26.05.1")]).await;
    m.profile = m.root.join("no-such-dir/system");
    let mut s = m.start().await;
    let done = s.command("sw-p", CommandKind::Switch).await;
    assert_eq!(done.complete.status, AgentOutcome::Error, "{}", done.log());
    done.assert_has("no-such-dir");
    assert!(!done.has("activating"), "{}", done.log());
    assert!(!m.root.join("no-such-dir").exists());
}

#[tokio::test]
async fn a_failed_first_switch_has_nothing_to_roll_back_to() {
    let mut m = Machine::new(&[FlakeHost::new(HOST, "26.05.1").activation(Activation::Fail)]).await;
    let mut s = m.start().await;
    let done = s.command("sw-1", CommandKind::Switch).await;
    assert_eq!(done.complete.status, AgentOutcome::Error, "{}", done.log());
    done.assert_has("activation of web-1 26.05.1 failed");
    done.assert_has("nothing to roll back to");
}

// ---------------------------------------------------------------- nix-darwin, Home Manager

#[tokio::test]
async fn darwin_and_home_manager_switch_through_activate() {
    for (activation, attr, name) in [
        (
            "darwin",
            "darwinConfigurations.web-1.system",
            "darwin-system-web-1",
        ),
        (
            "home-manager",
            "homeConfigurations.web-1.activationPackage",
            "home-manager-generation-web-1",
        ),
    ] {
        let mut m = Machine::new(&[FlakeHost::new(HOST, "26.05.1")]).await;
        m.args = vec!["--activation".into(), activation.into()];
        let mut s = m.start().await;
        let done = s.command("sw", CommandKind::Switch).await;
        assert_eq!(
            done.complete.status,
            AgentOutcome::Ok,
            "{activation}: {}\n{}",
            done.log(),
            m.agent_log()
        );
        done.assert_has(&format!("#{attr}"));
        done.assert_has(&format!("{name}-26.05.1/activate"));
        done.assert_has("activating web-1 26.05.1 ()");
        assert_eq!(done.generation(), Some(1));
        assert!(m.current_path().ends_with(&format!("{name}-26.05.1")));
        let status = s.generations_status().await;
        assert_eq!(
            numbers(status.generations.as_ref().unwrap()),
            [(1, true, false)]
        );
    }
}

/// A diff's package changes (the toplevel's own line left out), sorted by name, as
/// (name, old, new, kind) for one comparison.
fn package_changes(diff: &ClosureDiff) -> Vec<(&str, Option<&str>, Option<&str>, ChangeKind)> {
    let mut packages: Vec<_> = diff
        .changes
        .iter()
        .filter(|c| !c.name.starts_with("nixos-system"))
        .map(|c| (c.name.as_str(), c.old.as_deref(), c.new.as_deref(), c.kind))
        .collect();
    packages.sort_by_key(|p| p.0);
    packages
}
