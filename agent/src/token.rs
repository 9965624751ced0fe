//! The bearer token: where it comes from, where an enrolled host token is kept, and a
//! wrapper that keeps it out of logs.

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A token. `Debug` never shows it, so a stray `{:?}` cannot leak it into the journal.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The token itself, only for the Authorization header and the token file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the token, to recognise it again without storing it.
    fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the configured token lives.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// `--token`: fixed for the life of the process.
    Inline(Secret),
    /// `--token-file`: re-read before every connection, so an operator can fix a rejected
    /// token without restarting the agent.
    File(PathBuf),
}

/// The token to connect with, plus what enrollment taught us.
#[derive(Debug)]
pub struct Credentials {
    source: TokenSource,
    state_dir: PathBuf,
    /// A host token received by enrollment that overrides the configured token.
    enrolled: Option<Secret>,
}

impl Credentials {
    /// With `--token`, a host token that an earlier run received by enrolling with this very
    /// token is picked up from the state dir: the enrollment token can never act for a host
    /// that already has a host token, so reusing it after a restart would only get 401s.
    pub fn new(source: TokenSource, state_dir: PathBuf) -> Self {
        let mut enrolled = None;
        if let TokenSource::Inline(configured) = &source {
            let stored = state_dir.join(ENROLLED_TOKEN_FILE);
            let origin = fs::read_to_string(state_dir.join(ENROLLED_FROM_FILE));
            if origin.is_ok_and(|o| o.trim() == configured.fingerprint()) {
                match read_token_file(&stored) {
                    Ok(token) => {
                        tracing::info!(path = %stored.display(), "using the host token stored by enrollment");
                        enrolled = Some(token);
                    }
                    Err(err) => {
                        tracing::warn!(path = %stored.display(), "cannot read the enrolled host token: {err}")
                    }
                }
            }
        }
        Credentials {
            source,
            state_dir,
            enrolled,
        }
    }

    /// The token for the next connection attempt.
    pub fn current(&self) -> io::Result<Secret> {
        if let Some(token) = &self.enrolled {
            return Ok(token.clone());
        }
        match &self.source {
            TokenSource::Inline(token) => Ok(token.clone()),
            TokenSource::File(path) => read_token_file(path),
        }
    }

    /// Keeps the host token from a `registered` reply: into the token file when one is
    /// configured, else into `<state-dir>/token`. It is used from now on even if it cannot
    /// be written (the error is returned so the caller can say so).
    pub fn store_enrolled(&mut self, token: Secret, used: &Secret) -> io::Result<PathBuf> {
        match &self.source {
            TokenSource::File(path) => {
                let path = path.clone();
                // Once the file holds it, re-reading the file picks it up, so the operator
                // can still replace it later; only keep it in memory if the write failed.
                match write_token_file(&path, &token) {
                    Ok(()) => {
                        self.enrolled = None;
                        Ok(path)
                    }
                    Err(err) => {
                        self.enrolled = Some(token);
                        Err(err)
                    }
                }
            }
            TokenSource::Inline(_) => {
                let path = self.state_dir.join(ENROLLED_TOKEN_FILE);
                self.enrolled = Some(token.clone());
                write_token_file(&path, &token)?;
                // Remember which enrollment token it came from, so a later run with the
                // same --token uses it, and a run with a new --token does not.
                write_private_file(
                    &self.state_dir.join(ENROLLED_FROM_FILE),
                    used.fingerprint().as_bytes(),
                )?;
                Ok(path)
            }
        }
    }
}

const ENROLLED_TOKEN_FILE: &str = "token";
const ENROLLED_FROM_FILE: &str = "token.enrolled-from";

/// Reads a token file; surrounding whitespace (a trailing newline from `echo`) is dropped.
pub fn read_token_file(path: &Path) -> io::Result<Secret> {
    let text = fs::read_to_string(path)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("token file {} is empty", path.display()),
        ));
    }
    Ok(Secret::new(token))
}

/// Writes a token file readable only by its owner, atomically (temp file + rename), so a
/// crash never leaves a half-written token behind.
pub fn write_token_file(path: &Path, token: &Secret) -> io::Result<()> {
    let mut text = token.expose().to_owned();
    text.push('\n');
    write_private_file(path, text.as_bytes())
}

fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // mode() only applies on creation; a leftover temp file may have other bits.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/token");
        write_token_file(&path, &Secret::new("abc123")).unwrap();
        assert_eq!(read_token_file(&path).unwrap().expose(), "abc123");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp file left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn token_file_is_trimmed_and_empty_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        fs::write(&path, "  secret-value \n\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap().expose(), "secret-value");
        fs::write(&path, " \n").unwrap();
        assert!(read_token_file(&path).is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = Credentials::new(TokenSource::Inline(s), PathBuf::from("/nonexistent"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn enrolled_token_replaces_inline_token_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let enroll = Secret::new("enroll-token");
        let mut creds = Credentials::new(TokenSource::Inline(enroll.clone()), state.clone());
        assert_eq!(creds.current().unwrap(), enroll);

        let path = creds
            .store_enrolled(Secret::new("host-token"), &enroll)
            .unwrap();
        assert_eq!(path, state.join("token"));
        assert_eq!(creds.current().unwrap().expose(), "host-token");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // Restart with the same enrollment token: the stored host token wins.
        let again = Credentials::new(TokenSource::Inline(enroll), state.clone());
        assert_eq!(again.current().unwrap().expose(), "host-token");
        // Restart with a different token (say, a rotated host token): that one wins.
        let rotated = Credentials::new(TokenSource::Inline(Secret::new("new-host")), state);
        assert_eq!(rotated.current().unwrap().expose(), "new-host");
    }

    #[test]
    fn enrolled_token_is_written_to_the_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.token");
        fs::write(&file, "enroll-token\n").unwrap();
        let mut creds = Credentials::new(TokenSource::File(file.clone()), dir.path().join("s"));
        let used = creds.current().unwrap();
        assert_eq!(used.expose(), "enroll-token");
        assert_eq!(
            creds
                .store_enrolled(Secret::new("host-token"), &used)
                .unwrap(),
            file
        );
        assert_eq!(creds.current().unwrap().expose(), "host-token");
        assert_eq!(fs::read_to_string(&file).unwrap(), "host-token\n");
    }
}
