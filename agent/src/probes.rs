//! What the agent reports about its host: metrics, identity, versions and the state of the
//! configuration checkout.

use protocol::{HostType, Metrics, Timestamp};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, UNIX_EPOCH};
use sysinfo::System;
use tokio::process::Command;

/// A probe command that does not answer in this time is treated as "unknown", so a hung
/// `git` cannot stall heartbeats.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// CPU, memory and load. One `System` lives as long as the agent because CPU usage is the
/// difference between two refreshes; only CPU and memory are refreshed, never processes.
pub struct MetricsProbe {
    system: System,
}

impl MetricsProbe {
    pub fn new() -> Self {
        let mut system = System::new();
        // The baseline for the first usage figure.
        system.refresh_cpu_usage();
        MetricsProbe { system }
    }

    /// Usage since the previous sample (or since `new`).
    pub fn sample(&mut self) -> Metrics {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let s = &self.system;
        Metrics {
            cpu: round1(clamp_percent(f64::from(s.global_cpu_usage()))),
            ram: round1(percent(s.used_memory(), s.total_memory())),
            swap: round1(percent(s.used_swap(), s.total_swap())),
            load: round1(System::load_average().one.max(0.0)),
            disk: disk_usage(Path::new("/")).map(round1),
        }
    }
}

/// How full the filesystem holding `path` is, in percent, as `df` counts it: used blocks
/// over the blocks an unprivileged user could have (used plus available; the blocks kept
/// for root are left out). None when it cannot be read.
pub fn disk_usage(path: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs the call fills in.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let blocks = stat.f_blocks as u64;
    let used = blocks.saturating_sub(stat.f_bfree as u64);
    Some(percent(used, used + stat.f_bavail as u64))
}

impl Default for MetricsProbe {
    fn default() -> Self {
        Self::new()
    }
}

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        // No swap configured (or an unreadable figure): report 0, not NaN.
        return 0.0;
    }
    clamp_percent(used as f64 / total as f64 * 100.0)
}

fn clamp_percent(value: f64) -> f64 {
    if value.is_finite() {
        value.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// The OS hostname without its domain part, lower-cased (`Web-1.lan` → `web-1`).
pub fn os_hostname() -> Option<String> {
    let name = System::host_name()?;
    let short = name.split('.').next().unwrap_or_default().trim();
    (!short.is_empty()).then(|| short.to_lowercase())
}

pub fn detect_host_type() -> HostType {
    if Path::new("/etc/NIXOS").exists() {
        HostType::Nixos
    } else if cfg!(target_os = "macos") {
        HostType::Macos
    } else {
        HostType::Nixos
    }
}

/// A human-readable OS version such as "Linux (NixOS 25.05)" or "macOS 15.1 Sequoia".
pub fn os_version() -> Option<String> {
    System::long_os_version()
        .or_else(System::os_version)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The nixpkgs version of the running system, e.g. "25.05.20250101.abcdef0".
pub async fn nixpkgs_version() -> Option<String> {
    if let Ok(text) = tokio::fs::read_to_string("/run/current-system/nixos-version").await {
        let version = text.trim();
        if !version.is_empty() {
            return Some(version.to_owned());
        }
    }
    run_for_line(Command::new("nixos-version")).await
}

/// The commit checked out in the configuration repository (`git rev-parse HEAD`), full.
pub async fn generation(repo_dir: &Path) -> Option<String> {
    // safe.directory: a root agent reading a checkout owned by a user (legacy mode).
    let argv = crate::repo::git_in(repo_dir);
    let mut git = Command::new(&argv[0]);
    git.args(&argv[1..]).args(["rev-parse", "HEAD"]);
    let commit = run_for_line(git).await?;
    // SHA-1 or SHA-256 object names only; anything else is not a commit.
    let is_commit =
        matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit());
    is_commit.then(|| commit.to_ascii_lowercase())
}

/// Lower-case hex SHA-256 of `<repo_dir>/flake.lock`, None when there is none.
pub async fn lock_hash(repo_dir: &Path) -> Option<String> {
    let bytes = tokio::fs::read(repo_dir.join("flake.lock")).await.ok()?;
    Some(sha256_hex(&bytes))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// When `<repo_dir>/flake.lock` last changed: the committer time of the last commit that
/// touched it (`git log -1 --format=%ct -- flake.lock`), else its mtime when git has no
/// such commit (not a repository, or the lock is not committed yet). None without a
/// flake.lock.
pub async fn lock_updated_at(repo_dir: &Path) -> Option<Timestamp> {
    let path = repo_dir.join("flake.lock");
    let modified = tokio::fs::metadata(&path).await.ok()?.modified().ok();
    // safe.directory: the same invocation as `generation`.
    let argv = crate::repo::git_in(repo_dir);
    let mut git = Command::new(&argv[0]);
    git.args(&argv[1..])
        .args(["log", "-1", "--format=%ct", "--", "flake.lock"]);
    // An empty answer (no commit touched it) is None too, which falls back to the mtime.
    if let Some(secs) = run_for_line(git).await.and_then(|l| l.parse::<i64>().ok()) {
        return Some(Timestamp(secs));
    }
    let secs = modified?.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Timestamp(i64::try_from(secs).ok()?))
}

/// What the heartbeat reports about the checkout; all None without `--repo-dir`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoState {
    pub generation: Option<String>,
    pub lock_hash: Option<String>,
    pub lock_updated_at: Option<Timestamp>,
}

/// The last `lock_updated_at` and the (generation, lock hash) it was computed for.
///
/// `repo_state` runs on every heartbeat (every few seconds), but the lock's time can only
/// change when the checked-out commit or the lock's content does, and both are read anyway;
/// so `git log` runs again only when that pair differs. The owner of the repo state (a
/// `Host`) keeps one of these and passes it in: no shared state, no locking.
#[derive(Clone, Debug, Default)]
pub struct LockTimeCache {
    last: Option<LockTimeEntry>,
}

#[derive(Clone, Debug)]
struct LockTimeEntry {
    generation: Option<String>,
    lock_hash: Option<String>,
    lock_updated_at: Option<Timestamp>,
}

impl LockTimeCache {
    async fn get(
        &mut self,
        dir: &Path,
        generation: &Option<String>,
        lock_hash: &Option<String>,
    ) -> Option<Timestamp> {
        if let Some(last) = &self.last {
            if last.generation == *generation && last.lock_hash == *lock_hash {
                return last.lock_updated_at;
            }
        }
        // No readable flake.lock, no time: skip git altogether.
        let lock_updated_at = match lock_hash {
            Some(_) => lock_updated_at(dir).await,
            None => None,
        };
        self.last = Some(LockTimeEntry {
            generation: generation.clone(),
            lock_hash: lock_hash.clone(),
            lock_updated_at,
        });
        lock_updated_at
    }
}

pub async fn repo_state(repo_dir: Option<&Path>, cache: &mut LockTimeCache) -> RepoState {
    match repo_dir {
        Some(dir) => {
            let (generation, lock_hash) = tokio::join!(generation(dir), lock_hash(dir));
            let lock_updated_at = cache.get(dir, &generation, &lock_hash).await;
            RepoState {
                generation,
                lock_hash,
                lock_updated_at,
            }
        }
        None => RepoState::default(),
    }
}

/// The probes that keep state between samples, and the checkout they look at: one per
/// agent, lent in turn to the link (register, heartbeats) and to the command dispatch
/// (the state before and after a command, `refresh`).
pub struct Host {
    metrics: MetricsProbe,
    /// Spares heartbeats a `git log` for flake.lock's time while the checkout is unchanged.
    lock_time: LockTimeCache,
    repo_dir: Option<PathBuf>,
}

impl Host {
    /// `repo_dir`: the configuration checkout, if the agent has one.
    pub fn new(repo_dir: Option<PathBuf>) -> Self {
        Host {
            metrics: MetricsProbe::new(),
            lock_time: LockTimeCache::default(),
            repo_dir,
        }
    }

    pub fn repo_dir(&self) -> Option<&Path> {
        self.repo_dir.as_deref()
    }

    /// Usage since the previous sample.
    pub fn metrics(&mut self) -> Metrics {
        self.metrics.sample()
    }

    pub async fn repo_state(&mut self) -> RepoState {
        repo_state(self.repo_dir.as_deref(), &mut self.lock_time).await
    }
}

/// Runs a probe command and returns the first line of its stdout, or None when it is
/// missing, fails, prints nothing or takes too long. Failures are expected (no git, not a
/// repository) and only logged at debug.
async fn run_for_line(mut command: Command) -> Option<String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => {
            tracing::debug!("{program}: {err}");
            return None;
        }
        Err(_) => {
            tracing::debug!("{program}: no answer within {COMMAND_TIMEOUT:?}");
            return None;
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        tracing::debug!(
            "{program}: {}: {}",
            output.status,
            stderr.lines().next().unwrap_or("")
        );
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_percentages() {
        let mut probe = MetricsProbe::new();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let _ = probe.sample();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let m = probe.sample();
        for (name, v) in [("cpu", m.cpu), ("ram", m.ram), ("swap", m.swap)] {
            assert!((0.0..=100.0).contains(&v), "{name} = {v}");
            assert_eq!(v, round1(v), "{name} is rounded to one decimal");
        }
        assert!(m.load >= 0.0);
        // Any machine running this test uses some memory.
        assert!(m.ram > 0.0, "ram = {}", m.ram);
        // And has a root filesystem with something on it.
        let disk = m.disk.expect("the root filesystem's usage");
        assert!(disk > 0.0 && disk <= 100.0, "disk = {disk}");
        assert_eq!(disk_usage(Path::new("/no/such/path")), None);
    }

    #[test]
    fn percent_edge_cases() {
        assert_eq!(percent(0, 0), 0.0);
        assert_eq!(round1(percent(1, 3)), 33.3);
        assert_eq!(percent(5, 4), 100.0);
        assert_eq!(clamp_percent(f64::NAN), 0.0);
    }

    #[tokio::test]
    async fn lock_hash_of_flake_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lock_hash(dir.path()).await, None);
        std::fs::write(dir.path().join("flake.lock"), "abc").unwrap();
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            lock_hash(dir.path()).await.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[tokio::test]
    async fn generation_of_a_git_checkout() {
        let dir = tempfile::tempdir().unwrap();
        // Not a repository (or no git installed): unknown, not an error.
        assert_eq!(generation(dir.path()).await, None);

        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .output()
        };
        let Ok(init) = git(&["init", "-q"]) else {
            eprintln!("git not installed; skipping");
            return;
        };
        assert!(init.status.success());
        let commit = git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ])
        .unwrap();
        assert!(commit.status.success(), "{commit:?}");
        let head = git(&["rev-parse", "HEAD"]).unwrap();
        let head = String::from_utf8(head.stdout).unwrap().trim().to_owned();
        assert_eq!(generation(dir.path()).await, Some(head));
    }

    /// `git -C dir <args>` with a fixed identity and dates, so commits work without any
    /// global git config and carry a known time. Err when git cannot be run.
    fn git_at(dir: &Path, date: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "commit.gpgsign=false"])
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date)
            .output()
    }

    #[tokio::test]
    async fn lock_updated_at_is_the_last_commit_of_flake_lock() {
        let dir = tempfile::tempdir().unwrap();
        let date = "2026-01-02T03:04:05Z";
        let Ok(init) = git_at(dir.path(), date, &["init", "-q"]) else {
            eprintln!("git not installed; skipping");
            return;
        };
        assert!(init.status.success(), "{init:?}");
        std::fs::write(dir.path().join("flake.lock"), "{}").unwrap();
        for args in [&["add", "flake.lock"][..], &["commit", "-q", "-m", "lock"]] {
            let out = git_at(dir.path(), date, args).unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
        // A later commit that leaves flake.lock alone does not move its time.
        let out = git_at(
            dir.path(),
            "2026-02-03T04:05:06Z",
            &["commit", "-q", "--allow-empty", "-m", "other"],
        )
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            lock_updated_at(dir.path()).await,
            Some(Timestamp::parse(date).unwrap())
        );
        assert_eq!(
            lock_updated_at(dir.path()).await.unwrap().secs(),
            1_767_323_045
        );
    }

    #[tokio::test]
    async fn lock_updated_at_falls_back_to_the_mtime() {
        let dir = tempfile::tempdir().unwrap();
        // No flake.lock: no time.
        assert_eq!(lock_updated_at(dir.path()).await, None);
        // Not a repository: the file's mtime, which is about now.
        std::fs::write(dir.path().join("flake.lock"), "{}").unwrap();
        let t = lock_updated_at(dir.path()).await.expect("mtime");
        let now = Timestamp::now().secs();
        assert!((now - 60..=now + 1).contains(&t.secs()), "{t} vs now {now}");

        // A repository in which flake.lock is not committed: still the mtime.
        let Ok(init) = git_at(dir.path(), "2026-01-02T03:04:05Z", &["init", "-q"]) else {
            return;
        };
        assert!(init.status.success(), "{init:?}");
        let out = git_at(
            dir.path(),
            "2026-01-02T03:04:05Z",
            &["commit", "-q", "--allow-empty", "-m", "x"],
        )
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        let t = lock_updated_at(dir.path()).await.expect("mtime");
        assert!((now - 60..=now + 1).contains(&t.secs()), "{t} vs now {now}");
    }

    #[tokio::test]
    async fn repo_state_recomputes_the_lock_time_only_when_the_checkout_changes() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("flake.lock");
        let mut cache = LockTimeCache::default();
        assert_eq!(repo_state(None, &mut cache).await, RepoState::default());
        assert_eq!(
            repo_state(Some(dir.path()), &mut cache)
                .await
                .lock_updated_at,
            None
        );

        let set_mtime = |secs: u64| {
            let file = std::fs::File::options().write(true).open(&lock).unwrap();
            file.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
                .unwrap();
        };
        std::fs::write(&lock, "a").unwrap();
        set_mtime(1_000_000);
        let first = repo_state(Some(dir.path()), &mut cache).await;
        assert_eq!(first.lock_updated_at, Some(Timestamp(1_000_000)));
        // Same generation and content: the cached answer, even though the mtime moved.
        set_mtime(2_000_000);
        assert_eq!(repo_state(Some(dir.path()), &mut cache).await, first);
        // New content: computed again.
        std::fs::write(&lock, "b").unwrap();
        set_mtime(3_000_000);
        let second = repo_state(Some(dir.path()), &mut cache).await;
        assert_eq!(second.lock_updated_at, Some(Timestamp(3_000_000)));
        assert_ne!(second.lock_hash, first.lock_hash);
        // Gone: None at once.
        std::fs::remove_file(&lock).unwrap();
        let gone = repo_state(Some(dir.path()), &mut cache).await;
        assert_eq!((gone.lock_hash, gone.lock_updated_at), (None, None));
    }

    #[test]
    fn hostname_is_short_and_lower_case() {
        if let Some(name) = os_hostname() {
            assert!(!name.contains('.'));
            assert_eq!(name, name.to_lowercase());
        }
    }
}
