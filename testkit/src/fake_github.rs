//! The `fake-github` binary of this package, started for a test.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::proc::first_line;

/// A running fake-github; killed when dropped.
pub struct FakeGithub {
    child: Child,
    /// `http://127.0.0.1:PORT`, from its "listening on" line.
    pub base: String,
}

impl FakeGithub {
    /// Starts `bin` serving the git repository `repo` as `owner/name` on a free port, with
    /// `extra` flags (e.g. `--token`), and waits until it listens. Its log goes to `stderr`.
    pub fn start(
        bin: &Path,
        repo: &Path,
        owner: &str,
        name: &str,
        extra: &[&str],
        stderr: Stdio,
    ) -> FakeGithub {
        let mut child = Command::new(bin)
            .arg("--repo-dir")
            .arg(repo)
            .args(["--owner", owner, "--name", name, "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting fake-github");
        let line = first_line(&mut child);
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from fake-github: {line:?}"))
            .to_owned();
        FakeGithub { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
