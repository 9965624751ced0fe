//! Random tokens and their hashes, and the server's secret key.
//!
//! Tokens are 256-bit random values; only their SHA-256 is stored, which is enough for
//! high-entropy secrets (passwords use Argon2id instead).
//!
//! The secret key (`SecretKey`, from the key file `--secret-key-file`) protects what the
//! database must keep but must not show: TOTP secrets are sealed with XChaCha20-Poly1305
//! (a random 192-bit nonce per value, the owner's name as associated data), and recovery
//! codes are stored as HMAC-SHA256 with a random salt per code. A copy of the database
//! without the key file reveals neither.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

/// 32 random bytes as 64 hex characters.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// Equality that takes the same time wherever the inputs differ (`subtle`; a length
/// difference shows, which tokens of a fixed length do not mind).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// What marks a sealed value (and its format: `v1:` + base64 of nonce ‖ ciphertext ‖ tag).
const SEALED_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The server's 256-bit key. Three keys are derived from it (HMAC-SHA256 over a label),
/// so no key serves two purposes: one seals, one keys the recovery-code hashes, and one
/// makes the check value the database keeps to recognise its key (`check_value`).
pub struct SecretKey {
    seal: XChaCha20Poly1305,
    mac: [u8; 32],
    check: String,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// Why a sealed value did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not in the sealed format (e.g. a value written before values were sealed).
    NotSealed,
    /// Sealed, but not by this key (or not for this owner, or altered).
    WrongKey,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenError::NotSealed => "the stored value is not sealed",
            OpenError::WrongKey => {
                "the stored value does not open with this key (a different key file, or an \
                 altered value)"
            }
        })
    }
}

impl std::error::Error for OpenError {}

impl SecretKey {
    pub fn from_bytes(master: &[u8; 32]) -> SecretKey {
        let seal_key = hmac(master, &[b"nixdeck seal v1"]);
        SecretKey {
            seal: XChaCha20Poly1305::new(&seal_key.into()),
            mac: hmac(master, &[b"nixdeck recovery codes v1"]),
            check: hex::encode(hmac(master, &[b"nixdeck key check v1"])),
        }
    }

    /// A new random key (tests, and `load_or_create`).
    pub fn random() -> SecretKey {
        SecretKey::from_bytes(&random_key())
    }

    /// The key in a key file's text: 64 hex digits (surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        let mut master = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut master).map_err(|_| {
            "it must hold 64 hex digits (a 256-bit key, e.g. from `openssl rand -hex 32`)"
                .to_owned()
        })?;
        Ok(SecretKey::from_bytes(&master))
    }

    /// Read the key file; when it is missing and `create` allows, write a new random key
    /// there first (mode 0600, its folder created). An existing file is never replaced,
    /// also not when two servers start at once: the key is written to a temporary file
    /// and linked into place only if the name is still free. Answers whether the file was
    /// created.
    pub fn load_or_create(path: &Path, create: bool) -> anyhow::Result<(SecretKey, bool)> {
        use anyhow::Context;
        let shown = path.display();
        let created = match std::fs::read_to_string(path) {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => write_new_key(path)
                .with_context(|| format!("creating the secret key file {shown}"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "the secret key file {shown} is missing, and the database holds secrets \
                 sealed with it: restore the file (or name it with --secret-key-file / \
                 NIXDECK_SECRET_KEY_FILE); a new key would not open them"
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("reading the secret key file {shown}"))
            }
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the secret key file {shown}"))?;
        warn_if_readable_by_others(path);
        let key = SecretKey::parse(&text)
            .map_err(|why| anyhow::anyhow!("the secret key file {shown} is not usable: {why}"))?;
        Ok((key, created))
    }

    /// Stored by the database to recognise its key; reveals nothing about the key.
    pub fn check_value(&self) -> &str {
        &self.check
    }

    /// `plaintext` sealed for `owner` (bound to it: the sealed value opens for no one
    /// else), with a fresh random nonce.
    pub fn seal(&self, owner: &str, plaintext: &str) -> String {
        use base64::Engine;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: owner.as_bytes(),
        };
        // Encryption fails only for messages of many GiB.
        let ciphertext = self
            .seal
            .encrypt(&nonce.into(), payload)
            .expect("sealing a short value");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
        )
    }

    /// Open what `seal` made for `owner`.
    pub fn open(&self, owner: &str, sealed: &str) -> Result<String, OpenError> {
        use base64::Engine;
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(OpenError::NotSealed)?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::WrongKey)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError::WrongKey);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::WrongKey)?;
        let payload = Payload {
            msg: ciphertext,
            aad: owner.as_bytes(),
        };
        let plain = self
            .seal
            .decrypt(&nonce.into(), payload)
            .map_err(|_| OpenError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| OpenError::WrongKey)
    }

    /// Whether a stored value is in the sealed format (values from before sealing are not).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(SEALED_PREFIX)
    }

    /// HMAC-SHA256 of `salt` and `value` under the recovery-code key, as hex.
    pub fn keyed_hash(&self, salt: &str, value: &str) -> String {
        hex::encode(hmac(&self.mac, &[salt.as_bytes(), b"\0", value.as_bytes()]))
    }
}

/// A new random salt (128 bits, hex).
pub fn new_salt() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn random_key() -> [u8; 32] {
    let mut master = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut master);
    master
}

/// Write a new key to `path` unless a file is there by then; true if this call wrote it.
fn write_new_key(path: &Path) -> std::io::Result<bool> {
    use std::io::Write;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(format!("{}\n", hex::encode(random_key())).as_bytes())?;
        file.sync_all()
    });
    // Linking fails if the name is taken: the key already there is kept.
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    });
    let _ = std::fs::remove_file(&tmp);
    let linked = linked?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The new name survives a crash only once its folder is on disk too.
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(linked)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "the secret key file {} can be read by other users; `chmod 600` it",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn comparisons() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_owner() {
        let key = SecretKey::random();
        let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        let sealed = key.seal("alice", secret);
        assert!(SecretKey::is_sealed(&sealed), "{sealed}");
        assert!(!sealed.contains(secret));
        // A fresh nonce each time: the same secret never looks the same twice.
        assert_ne!(key.seal("alice", secret), sealed);
        assert_eq!(key.open("alice", &sealed).as_deref(), Ok(secret));
        // Another key, another owner, an altered or unsealed value: an error, no panic.
        assert_eq!(
            SecretKey::random().open("alice", &sealed),
            Err(OpenError::WrongKey)
        );
        assert_eq!(key.open("bob", &sealed), Err(OpenError::WrongKey));
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(key.open("alice", &altered), Err(OpenError::WrongKey));
        for junk in ["v1:", "v1:!!", "v1:AAAA"] {
            assert_eq!(key.open("alice", junk), Err(OpenError::WrongKey), "{junk}");
        }
        assert_eq!(key.open("alice", secret), Err(OpenError::NotSealed));
    }

    #[test]
    fn keyed_hashes_need_the_key_and_the_salt() {
        let key = SecretKey::from_bytes(&[7; 32]);
        let h = key.keyed_hash("salt", "code");
        assert_eq!(
            h,
            SecretKey::from_bytes(&[7; 32]).keyed_hash("salt", "code")
        );
        assert_eq!(h.len(), 64);
        assert_ne!(h, key.keyed_hash("other", "code"));
        assert_ne!(
            h,
            SecretKey::from_bytes(&[8; 32]).keyed_hash("salt", "code")
        );
        assert_ne!(h, sha256_hex("code"));
        assert_ne!(new_salt(), new_salt());
    }

    #[test]
    fn the_key_file_is_made_once_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secret.key");
        let (first, created) = SecretKey::load_or_create(&path, true).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        let (again, created) = SecretKey::load_or_create(&path, true).unwrap();
        assert!(!created);
        assert_eq!(again.check_value(), first.check_value());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        // Only the key file is left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        // A taken name is kept even by the writer itself.
        assert!(!write_new_key(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn a_missing_or_broken_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.key");
        let err = SecretKey::load_or_create(&missing, false).unwrap_err();
        assert!(format!("{err:#}").contains("is missing"), "{err:#}");
        assert!(!missing.exists());
        let broken = dir.path().join("broken.key");
        std::fs::write(&broken, "not a key\n").unwrap();
        let err = SecretKey::load_or_create(&broken, true).unwrap_err();
        assert!(format!("{err:#}").contains("64 hex digits"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&broken).unwrap(), "not a key\n");
        // A key of the operator's own (`openssl rand -hex 32`) is read as it is.
        let own = dir.path().join("own.key");
        std::fs::write(&own, format!("{}\n", "ab".repeat(32))).unwrap();
        let (key, created) = SecretKey::load_or_create(&own, true).unwrap();
        assert!(!created);
        assert_eq!(
            key.check_value(),
            SecretKey::from_bytes(&[0xab; 32]).check_value()
        );
    }
}
