//! The configuration checkout: git command lines for a clean-slate pull, and the clone the
//! agent owns in isolated mode (`--repo-url` without `--repo-dir`).
//!
//! Every git call carries `-c safe.directory=*`: a root agent on a checkout owned by a user
//! (legacy mode) would otherwise be refused with "dubious ownership". That check is git's
//! guard against a checkout's owner running code as whoever runs git in it (hooks, and
//! config such as `core.fsmonitor`), so the agent does it itself at start, with
//! `foreign_owner`, and refuses a `--repo-dir` of another user unless told otherwise.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `git -c safe.directory=* -C <dir>`, to which the subcommand is appended.
pub fn git_in(dir: &Path) -> Vec<String> {
    vec![
        "git".to_owned(),
        "-c".to_owned(),
        "safe.directory=*".to_owned(),
        "-C".to_owned(),
        dir.display().to_string(),
    ]
}

/// The first path of the checkout in `dir` that git's ownership check would look at and
/// that `uid` does not own, with its owner; `Ok(None)` when `uid` owns them all.
///
/// Those paths, symlinks followed: `dir` itself, and for the repository git finds from
/// there (in `dir` or a parent directory, as git looks for one) its work tree, its `.git`
/// and, when `.git` is a file (`gitdir: …`, a linked work tree or a submodule), the
/// directory it names. A repository without a work tree found on the way is checked as
/// itself. `Err` names the path that could not be examined (`dir` missing, for one).
pub fn foreign_owner(dir: &Path, uid: u32) -> Result<Option<(PathBuf, u32)>, (PathBuf, io::Error)> {
    let owner = |path: &Path| -> Result<Option<(PathBuf, u32)>, (PathBuf, io::Error)> {
        let meta = fs::metadata(path).map_err(|e| (path.to_owned(), e))?;
        Ok((meta.uid() != uid).then(|| (path.to_owned(), meta.uid())))
    };
    // git works in the physical directory (`-C` then getcwd), so look from there.
    let real = fs::canonicalize(dir).map_err(|e| (dir.to_owned(), e))?;
    if let Some(foreign) = owner(&real)? {
        return Ok(Some(foreign));
    }
    for top in real.ancestors() {
        let dot_git = top.join(".git");
        match fs::metadata(&dot_git) {
            Ok(meta) => {
                let mut paths = vec![top.to_owned(), dot_git.clone()];
                if meta.is_file() {
                    let text = fs::read_to_string(&dot_git).map_err(|e| (dot_git.clone(), e))?;
                    if let Some(target) = text.trim_end().strip_prefix("gitdir:") {
                        paths.push(top.join(target.trim()));
                    }
                }
                for path in paths {
                    if let Some(foreign) = owner(&path)? {
                        return Ok(Some(foreign));
                    }
                }
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((dot_git, e)),
        }
        // A bare repository (or a `.git` directory itself) is a repository too.
        if top.join("HEAD").is_file() && top.join("objects").is_dir() && top.join("refs").is_dir() {
            return owner(top);
        }
    }
    Ok(None)
}

fn with(mut base: Vec<String>, args: &[&str]) -> Vec<String> {
    base.extend(args.iter().map(|a| (*a).to_owned()));
    base
}

/// The pull: fetch the branch, make the checkout exactly the remote branch, drop untracked
/// files. An explicit refspec, so `origin/<branch>` moves even in a single-branch clone of
/// another branch.
pub fn pull_argvs(dir: &Path, branch: &str) -> Vec<Vec<String>> {
    let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
    let remote_branch = format!("origin/{branch}");
    vec![
        with(git_in(dir), &["fetch", "origin", &refspec]),
        with(git_in(dir), &["reset", "--hard", &remote_branch]),
        with(git_in(dir), &["clean", "-fd"]),
    ]
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits. A preview's `rev`
/// must be one before it reaches git or Nix: then it cannot be an option (`--upload-pack`),
/// a ref name that moves, or anything a URL would read differently.
pub fn is_commit_id(rev: &str) -> bool {
    matches!(rev.len(), 40 | 64) && rev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Fetches commit `rev` (a full id, `is_commit_id`) from `origin` into the object store
/// only: no refspec destination, so no branch, remote-tracking ref or work tree moves
/// (git records it in FETCH_HEAD alone). Servers with protocol v2, GitHub's and local
/// remotes among them, hand out a commit by its id.
pub fn fetch_rev_argv(dir: &Path, rev: &str) -> Vec<String> {
    with(git_in(dir), &["fetch", "origin", rev])
}

/// Whether the repository in `dir` holds commit `rev` already (`git cat-file -e`), so a
/// preview of it needs no fetch. Quiet: a missing commit is the usual case, not an error
/// for the log. Any failure to ask counts as "no"; the fetch then says what is wrong.
pub fn has_commit(dir: &Path, rev: &str) -> bool {
    let argv = with(
        git_in(dir),
        &["cat-file", "-e", &format!("{rev}^{{commit}}")],
    );
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .status()
        .is_ok_and(|s| s.success())
}

/// Clones `url` into `into` (a fresh path), following only `branch`.
pub fn clone_argv(url: &str, branch: &str, into: &Path) -> Vec<String> {
    vec![
        "git".to_owned(),
        "clone".to_owned(),
        "--branch".to_owned(),
        branch.to_owned(),
        "--single-branch".to_owned(),
        "--".to_owned(),
        url.to_owned(),
        into.display().to_string(),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneState {
    Ready,
    Missing,
    /// Present but unusable, with the reason.
    Broken(String),
}

/// Whether `dir` is a working clone of `url`.
pub fn clone_state(dir: &Path, url: &str) -> CloneState {
    let empty = fs::read_dir(dir).map(|mut d| d.next().is_none());
    match empty {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return CloneState::Missing,
        Ok(true) => return CloneState::Missing,
        Err(e) => return CloneState::Broken(format!("cannot read it: {e}")),
        Ok(false) => {}
    }
    // Without its own .git, git would find a repository in a parent directory.
    if !dir.join(".git").exists() {
        return CloneState::Broken("it is not a git repository".into());
    }
    match git_line(dir, &["rev-parse", "--verify", "HEAD^{commit}"]) {
        Ok(head) if head.len() >= 40 => {}
        Ok(other) => return CloneState::Broken(format!("HEAD is `{other}`")),
        Err(e) => return CloneState::Broken(format!("`git rev-parse HEAD` failed: {e}")),
    }
    match git_line(dir, &["config", "--get", "remote.origin.url"]) {
        Ok(origin) if origin == url => CloneState::Ready,
        Ok(origin) => CloneState::Broken(format!("its origin is {origin}, not {url}")),
        Err(e) => CloneState::Broken(format!("it has no origin: {e}")),
    }
}

/// The first line of a quick git query's stdout, or its stderr as the error.
fn git_line(dir: &Path, args: &[&str]) -> Result<String, String> {
    let argv = with(git_in(dir), args);
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(err.lines().next().unwrap_or("failed").trim().to_owned())
    }
}

/// Where a new clone is made before it replaces `dir`, so a half-done clone is never
/// mistaken for the checkout.
pub fn clone_tmp(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!(".{name}.cloning"))
}

/// Clears the way for a clone into `tmp`.
pub fn prepare_tmp(tmp: &Path) -> io::Result<()> {
    match fs::remove_dir_all(tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    if let Some(parent) = tmp.parent() {
        fs::create_dir_all(parent)?;
    }
    Ok(())
}

/// Puts the finished clone `tmp` in place of `dir`.
pub fn replace_with(tmp: &Path, dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::rename(tmp, dir)
}

/// Isolated mode at agent start: clone when missing, clone again when broken. Failures are
/// reported, not fatal: the next `pull` tries again.
pub async fn prepare_clone(url: &str, branch: &str, dir: &Path) -> Result<(), String> {
    const CLONE_TIMEOUT: Duration = Duration::from_secs(600);
    let (url_owned, dir_owned) = (url.to_owned(), dir.to_owned());
    let state = tokio::task::spawn_blocking(move || clone_state(&dir_owned, &url_owned))
        .await
        .map_err(|e| e.to_string())?;
    match &state {
        CloneState::Ready => return Ok(()),
        CloneState::Missing => {
            tracing::info!(dir = %dir.display(), url, "cloning the configuration repository")
        }
        CloneState::Broken(why) => {
            tracing::warn!(dir = %dir.display(), "the clone is broken ({why}); cloning again")
        }
    }
    let tmp = clone_tmp(dir);
    prepare_tmp(&tmp).map_err(|e| format!("cannot prepare {}: {e}", tmp.display()))?;
    let argv = clone_argv(url, branch, &tmp);
    let mut git = tokio::process::Command::new(&argv[0]);
    git.args(&argv[1..])
        .stdin(Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true);
    let out = match tokio::time::timeout(CLONE_TIMEOUT, git.output()).await {
        Err(_) => return Err(format!("git clone took longer than {CLONE_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(format!("cannot run git: {e}")),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "git clone {url} failed ({}): {}",
            out.status,
            err.trim()
        ));
    }
    replace_with(&tmp, dir).map_err(|e| format!("cannot put the clone in place: {e}"))?;
    tracing::info!(dir = %dir.display(), "cloned the configuration repository");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::chown;

    fn uid_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().uid()
    }

    /// Whose paths count: the checkout, its `.git`, a `.git` file's target, and the
    /// repository git would find in a parent directory. Checked against another uid than
    /// the owner's, so no root is needed.
    #[test]
    fn foreign_owner_looks_where_git_looks() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let me = uid_of(&root);
        let other = me.wrapping_add(1);

        let checkout = root.join("checkout");
        fs::create_dir_all(checkout.join(".git")).unwrap();
        assert_eq!(foreign_owner(&checkout, me).unwrap(), None);
        assert_eq!(
            foreign_owner(&checkout, other).unwrap(),
            Some((checkout.clone(), me))
        );

        // Not a repository itself: git would use the one above, whose owner then counts.
        let plain = checkout.join("sub");
        fs::create_dir(&plain).unwrap();
        assert_eq!(foreign_owner(&plain, me).unwrap(), None);

        // Missing: an error naming it, not a pass.
        let (path, _) = foreign_owner(&root.join("missing"), me).unwrap_err();
        assert_eq!(path, root.join("missing"));
    }

    /// The same with real owners: a directory of ours whose `.git` (or the git directory a
    /// `.git` file names) belongs to someone else. Needs root for chown; the tests run as
    /// root here and in CI.
    #[test]
    fn foreign_git_dir_inside_an_own_checkout() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if me != 0 {
            eprintln!("skipped: chown to another user needs root");
            return;
        }
        let nobody = 65534;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();

        let checkout = root.join("checkout");
        fs::create_dir_all(checkout.join(".git")).unwrap();
        chown(checkout.join(".git"), Some(nobody), None).unwrap();
        assert_eq!(
            foreign_owner(&checkout, me).unwrap(),
            Some((checkout.join(".git"), nobody))
        );

        // A linked work tree: `.git` is a file naming a git directory elsewhere.
        let linked = root.join("linked");
        let gitdir = root.join("elsewhere.git");
        fs::create_dir_all(&linked).unwrap();
        fs::create_dir_all(&gitdir).unwrap();
        fs::write(linked.join(".git"), "gitdir: ../elsewhere.git\n").unwrap();
        assert_eq!(foreign_owner(&linked, me).unwrap(), None);
        chown(&gitdir, Some(nobody), None).unwrap();
        assert_eq!(
            foreign_owner(&linked, me).unwrap(),
            Some((linked.join("../elsewhere.git"), nobody))
        );

        // A directory of ours inside someone else's repository.
        let theirs = root.join("theirs");
        let inside = theirs.join("hosts");
        fs::create_dir_all(theirs.join(".git")).unwrap();
        fs::create_dir_all(&inside).unwrap();
        chown(&theirs, Some(nobody), None).unwrap();
        assert_eq!(
            foreign_owner(&inside, me).unwrap(),
            Some((theirs.clone(), nobody))
        );

        // Symlinks are followed: a link of ours to their checkout is their checkout.
        let link = root.join("link");
        std::os::unix::fs::symlink(&theirs, &link).unwrap();
        assert_eq!(
            foreign_owner(&link, me).unwrap(),
            Some((theirs.clone(), nobody))
        );
    }
}
