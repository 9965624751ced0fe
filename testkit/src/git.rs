//! Running the `git` CLI in a directory. [`Git`] is fake-github's thin async wrapper: every
//! call is a fresh process with `-C <repo>`, so hosts fetching from the same repository see
//! exactly what the fake API reports. [`git`] and [`Origin`] are the tests' blocking
//! helpers for making and changing repositories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug)]
pub struct GitError(pub String);

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim_end().to_owned()
    }
}

pub struct CommitInfo {
    pub sha: String,
    pub tree: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub author_time: i64,
    pub committer_name: String,
    pub committer_email: String,
    pub committer_time: i64,
    pub message: String,
}

/// One file a comparison changes, as GitHub lists a PR's files.
pub struct FileChange {
    pub path: String,
    /// The old path of a renamed file.
    pub previous_path: Option<String>,
    /// GitHub's word: added, removed, modified, renamed, copied or changed.
    pub status: &'static str,
    pub additions: u64,
    pub deletions: u64,
}

pub struct Git {
    dir: PathBuf,
}

/// A ref or sha a client may name. Rejecting a leading '-' keeps it from being read as an
/// option; whitespace/control characters can never be part of a ref anyway.
fn plausible_ref(r: &str) -> bool {
    !r.is_empty() && !r.starts_with('-') && !r.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Git {
    pub fn new(dir: PathBuf) -> Self {
        Git { dir }
    }

    pub async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, GitError> {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(&self.dir)
            .args(args)
            // Works on a machine without any git identity or config; never prompts.
            .env("GIT_AUTHOR_NAME", "fake-github")
            .env("GIT_AUTHOR_EMAIL", "fake@github.invalid")
            .env("GIT_COMMITTER_NAME", "fake-github")
            .env("GIT_COMMITTER_EMAIL", "fake@github.invalid")
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| GitError(format!("spawning git: {e}")))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input)
                .await
                .map_err(|e| GitError(format!("writing to git: {e}")))?;
            // Dropping the pipe sends EOF so batch commands finish.
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| GitError(format!("waiting for git: {e}")))?;
        Ok(Output {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_owned(),
        })
    }

    /// Runs git and insists on exit 0; returns trimmed stdout.
    async fn ok(&self, args: &[&str]) -> Result<String, GitError> {
        let out = self.run(args, None).await?;
        if out.code == Some(0) {
            Ok(out.text())
        } else {
            Err(GitError(format!(
                "git {} failed ({:?}): {}",
                args.join(" "),
                out.code,
                out.stderr
            )))
        }
    }

    /// Checks that the directory is a git repository at all.
    pub async fn check_repo(&self) -> Result<(), GitError> {
        self.ok(&["rev-parse", "--git-dir"]).await.map(|_| ())
    }

    /// Branch name or (abbreviated) sha → full commit sha, or None when it names no commit.
    pub async fn resolve_commit(&self, r: &str) -> Result<Option<String>, GitError> {
        if !plausible_ref(r) {
            return Ok(None);
        }
        let spec = format!("{r}^{{commit}}");
        let out = self
            .run(
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    &spec,
                ],
                None,
            )
            .await?;
        Ok((out.code == Some(0)).then(|| out.text()))
    }

    /// The commit a local branch points at (exactly refs/heads/<b>, not a tag of that name).
    pub async fn branch_head(&self, branch: &str) -> Result<Option<String>, GitError> {
        self.resolve_commit(&format!("refs/heads/{branch}")).await
    }

    /// All local branches with their commit, in one process rather than one per PR.
    pub async fn branch_heads(&self) -> Result<HashMap<String, String>, GitError> {
        let out = self
            .ok(&[
                "for-each-ref",
                "--format=%(objectname) %(refname)",
                "refs/heads/",
            ])
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (sha, name) = l.split_once(' ')?;
                Some((name.strip_prefix("refs/heads/")?.to_owned(), sha.to_owned()))
            })
            .collect())
    }

    pub async fn commit_info(&self, sha: &str) -> Result<CommitInfo, GitError> {
        // NUL-separated so no field (the message least of all) can break the parse.
        let out = self
            .ok(&[
                "log",
                "-1",
                "--format=%H%x00%T%x00%P%x00%an%x00%ae%x00%at%x00%cn%x00%ce%x00%ct%x00%B",
                sha,
                "--",
            ])
            .await?;
        let f: Vec<&str> = out.splitn(10, '\0').collect();
        if f.len() != 10 {
            return Err(GitError(format!("unexpected git log output for {sha}")));
        }
        Ok(CommitInfo {
            sha: f[0].to_owned(),
            tree: f[1].to_owned(),
            parents: f[2].split_whitespace().map(str::to_owned).collect(),
            author_name: f[3].to_owned(),
            author_email: f[4].to_owned(),
            author_time: f[5].parse().unwrap_or(0),
            committer_name: f[6].to_owned(),
            committer_email: f[7].to_owned(),
            committer_time: f[8].parse().unwrap_or(0),
            // GitHub reports the message without the trailing newline git stores.
            message: f[9].trim_end().to_owned(),
        })
    }

    /// `<ref>:<path>` → (blob sha, size) when it is a file; None for missing paths and trees.
    /// Goes through `cat-file --batch-check` on stdin so no client text lands in argv.
    pub async fn blob_at(&self, r: &str, path: &str) -> Result<Option<(String, u64)>, GitError> {
        if !plausible_ref(r) || path.is_empty() || path.contains(['\n', '\r', '\0']) {
            return Ok(None);
        }
        let input = format!("{r}:{path}\n");
        let out = self
            .run(&["cat-file", "--batch-check"], Some(input.as_bytes()))
            .await?;
        if out.code != Some(0) {
            return Err(GitError(format!(
                "git cat-file --batch-check: {}",
                out.stderr
            )));
        }
        let text = out.text();
        let mut parts = text.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(sha), Some("blob"), Some(size)) => {
                Ok(size.parse().ok().map(|s| (sha.to_owned(), s)))
            }
            _ => Ok(None),
        }
    }

    pub async fn blob(&self, sha: &str) -> Result<Vec<u8>, GitError> {
        let out = self.run(&["cat-file", "blob", sha], None).await?;
        if out.code == Some(0) {
            Ok(out.stdout)
        } else {
            Err(GitError(format!("git cat-file blob {sha}: {}", out.stderr)))
        }
    }

    /// Three-way merge without a work tree: Some(tree) when clean, None on conflicts.
    pub async fn merge_tree(&self, base: &str, head: &str) -> Result<Option<String>, GitError> {
        let out = self
            .run(&["merge-tree", "--write-tree", base, head], None)
            .await?;
        match out.code {
            // The first line is the tree; conflict details (exit 1) follow it.
            Some(0) => Ok(out.text().lines().next().map(str::to_owned)),
            Some(1) => Ok(None),
            _ => Err(GitError(format!("git merge-tree: {}", out.stderr))),
        }
    }

    pub async fn commit_tree(
        &self,
        tree: &str,
        parents: &[&str],
        message: &str,
    ) -> Result<String, GitError> {
        let mut args = vec!["commit-tree", tree];
        for p in parents {
            args.extend(["-p", p]);
        }
        args.extend(["-m", message]);
        self.ok(&args).await
    }

    /// The files `head` changes since its merge base with `base` (`git diff base...head`,
    /// renames found), in git's order.
    pub async fn changed_files(&self, base: &str, head: &str) -> Result<Vec<FileChange>, GitError> {
        if !plausible_ref(base) || !plausible_ref(head) {
            return Ok(Vec::new());
        }
        let range = format!("{base}...{head}");
        let diff = |format: &'static str| {
            let range = range.clone();
            async move {
                let out = self
                    .run(&["diff", "-z", "-M", format, &range, "--"], None)
                    .await?;
                if out.code != Some(0) {
                    return Err(GitError(format!(
                        "git diff {format} {range}: {}",
                        out.stderr
                    )));
                }
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
        };
        // `--name-status -z`: STATUS\0PATH\0, or STATUS\0OLD\0NEW\0 for renames and copies.
        let names = diff("--name-status").await?;
        let mut fields = names.split('\0').filter(|f| !f.is_empty());
        let mut changes = Vec::new();
        while let Some(code) = fields.next() {
            let two = code.starts_with('R') || code.starts_with('C');
            let first = fields.next().unwrap_or_default().to_owned();
            let (path, previous_path) = if two {
                (fields.next().unwrap_or_default().to_owned(), Some(first))
            } else {
                (first, None)
            };
            let status = match code.as_bytes().first() {
                Some(b'A') => "added",
                Some(b'D') => "removed",
                Some(b'R') => "renamed",
                Some(b'C') => "copied",
                Some(b'M') => "modified",
                _ => "changed",
            };
            changes.push(FileChange {
                path,
                previous_path,
                status,
                additions: 0,
                deletions: 0,
            });
        }
        // `--numstat -z`: ADD\tDEL\tPATH\0, or ADD\tDEL\t\0OLD\0NEW\0 (binary files: -).
        let counts = diff("--numstat").await?;
        let mut fields = counts.split('\0');
        while let Some(entry) = fields.next().filter(|f| !f.is_empty()) {
            let mut parts = entry.splitn(3, '\t');
            let add = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let del = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let path = match parts.next() {
                Some("") => {
                    fields.next();
                    fields.next().unwrap_or_default()
                }
                Some(p) => p,
                None => continue,
            };
            if let Some(c) = changes.iter_mut().find(|c| c.path == path) {
                c.additions = add;
                c.deletions = del;
            }
        }
        Ok(changes)
    }

    /// Compare-and-swap: fails if the branch moved since `old` was read.
    pub async fn update_branch(&self, branch: &str, new: &str, old: &str) -> Result<(), GitError> {
        let r = format!("refs/heads/{branch}");
        self.ok(&["update-ref", "-m", "fake-github merge", &r, new, old])
            .await
            .map(|_| ())
    }
}

/// Runs git in `dir` with a fixed identity, independent of whoever runs the tests and their
/// ~/.gitconfig; its trimmed stdout. Panics when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_env(dir, &[], args)
}

/// [`git`] with extra environment, e.g. `GIT_COMMITTER_DATE` for a commit in the past.
pub fn git_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    crate::proc::run(
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "nixdeck")
            .env("GIT_AUTHOR_EMAIL", "test@nixdeck.invalid")
            .env("GIT_COMMITTER_NAME", "nixdeck")
            .env("GIT_COMMITTER_EMAIL", "test@nixdeck.invalid")
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(env.iter().copied()),
    )
}

/// A config repository as hosts see it: a bare `origin.git` and a work clone `work` to
/// push commits to its main branch from.
pub struct Origin {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Origin {
    /// `scratch/origin.git` with one commit ("first") on main holding `files` (path,
    /// content), pushed from the clone `scratch/work`.
    pub fn new(scratch: &Path, files: &[(&str, &str)]) -> Origin {
        let origin = Origin {
            bare: scratch.join("origin.git"),
            work: scratch.join("work"),
        };
        git(
            scratch,
            &["init", "-q", "--bare", "-b", "main", path(&origin.bare)],
        );
        origin.clone_to(&origin.work);
        for (file, content) in files {
            std::fs::write(origin.work.join(file), content).unwrap();
        }
        git(&origin.work, &["add", "."]);
        git(&origin.work, &["commit", "-qm", "first"]);
        git(&origin.work, &["push", "-q", "origin", "HEAD:main"]);
        origin
    }

    /// Clones the origin to `dir` (a host's checkout).
    pub fn clone_to(&self, dir: &Path) {
        let parent = dir.parent().expect("a checkout's parent directory");
        git(parent, &["clone", "-q", path(&self.bare), path(dir)]);
    }

    /// Writes `file` in the work clone, commits it (message `message`) and pushes it to
    /// main, first catching up with main (which a fake merge may have moved); the new head.
    pub fn push(&self, file: &str, content: &str, message: &str) -> String {
        git(&self.work, &["pull", "-q", "--ff-only", "origin", "main"]);
        std::fs::write(self.work.join(file), content).unwrap();
        git(&self.work, &["add", file]);
        git(&self.work, &["commit", "-qm", message]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        self.head()
    }

    /// Writes `files` (path, content) on `branch` in the work clone, started from main when
    /// the origin has no such branch yet, commits them (message `message`) and pushes the
    /// branch; its new head. The work clone is back on main afterwards.
    pub fn push_branch(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        git(&self.work, &["fetch", "-q", "origin"]);
        let remote = format!("origin/{branch}");
        let exists = std::process::Command::new("git")
            .arg("-C")
            .arg(&self.work)
            .args(["rev-parse", "--verify", "--quiet", &remote])
            .output()
            .is_ok_and(|o| o.status.success());
        let from = if exists {
            remote
        } else {
            "origin/main".to_owned()
        };
        git(&self.work, &["checkout", "-q", "-B", branch, &from]);
        for (file, content) in files {
            let path = self.work.join(file);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).unwrap();
            }
            std::fs::write(path, content).unwrap();
            git(&self.work, &["add", file]);
        }
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(
            &self.work,
            &["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")],
        );
        let head = git(&self.work, &["rev-parse", "HEAD"]);
        git(&self.work, &["checkout", "-q", "main"]);
        head
    }

    /// Main's head in the origin.
    pub fn head(&self) -> String {
        git(&self.bare, &["rev-parse", "main"])
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}
