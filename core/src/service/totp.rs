//! Optional TOTP (RFC 6238) per user: enrollment with a QR code, a confirming code, codes
//! accepted once (the last used step is stored), and single-use recovery codes.
//!
//! At rest, secrets are sealed with the server's secret key and recovery codes are stored
//! as salted HMACs under it (`crate::secret`); `prepare_key` loads the key at start,
//! checks it is the database's, and seals what was stored before sealing existed.
//! Starting a setup needs the password, and once TOTP is on also a current code (or a
//! recovery code), so a session alone cannot replace the second factor; confirming one
//! ends the user's other sessions.

use super::limits::Verdict;
use super::{OrInternal, Result};
use crate::secret::{constant_time_eq, new_salt, new_token, sha256_hex, SecretKey};
use crate::storage::Db;
use crate::Core;
use anyhow::Context;
use common::AppError;
use common::Viewer;
use protocol::api::{RecoveryCodes, TotpSetup};
use protocol::Timestamp;
use std::path::Path;
use totp_rs::{Builder, Secret, Totp};

const RECOVERY_CODES: usize = 10;

fn totp(secret_base32: &str, account: &str) -> Result<Totp> {
    let secret = Secret::try_from_base32(secret_base32).or_internal("reading a TOTP secret")?;
    Builder::new()
        .with_secret(secret)
        .with_account_name(account)
        .with_issuer(Some("nixdeck"))
        .build()
        .or_internal("building a TOTP")
}

/// The step a code matches (within one step of now), if any.
fn matching_step(t: &Totp, code: &str) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = Timestamp::now().secs().max(0) as u64;
    t.check(&code, now).map(|step| step as i64)
}

/// Start (or restart) enrollment: a new secret waits for its first code. It needs the
/// user's password, and while TOTP is on a current code or a recovery code too.
pub async fn setup(
    core: &Core,
    viewer: &Viewer,
    password: &str,
    code: Option<&str>,
) -> Result<TotpSetup> {
    let result = match super::auth::require_login(viewer) {
        Ok(()) => reauthenticate(core, viewer, password, code).await,
        Err(e) => Err(e),
    };
    let result = match result {
        Ok(()) => new_secret(core, viewer).await,
        Err(e) => Err(e),
    };
    super::audit::record(core, viewer, "totp.setup", None, result).await
}

/// The user proves again who they are: the password (422 when missing or wrong), then,
/// if TOTP is on, a code (401 `totp_required` when missing, as at login; 422 when wrong).
/// Attempts count with the logins of the same account and address (`LoginLimiter`), so a
/// session gives no extra guesses.
async fn reauthenticate(
    core: &Core,
    viewer: &Viewer,
    password: &str,
    code: Option<&str>,
) -> Result<()> {
    if password.is_empty() {
        return Err(AppError::Invalid(
            "Enter your password to set up two-factor authentication.".into(),
        ));
    }
    let attempt = super::auth::begin_attempt(core, viewer).await?;
    let (result, verdict) = check_again(core, &viewer.username, password, code).await;
    core.limits.finish_login(attempt, verdict).await;
    result
}

async fn check_again(
    core: &Core,
    username: &str,
    password: &str,
    code: Option<&str>,
) -> (Result<()>, Verdict) {
    match super::auth::password_matches(core, username, password).await {
        Ok(true) => {}
        Ok(false) => {
            let wrong = AppError::Invalid("That password is not right.".into());
            return (Err(wrong), Verdict::Failure);
        }
        Err(e) => return (Err(e), Verdict::NotChecked),
    }
    match second_factor(core, username, code).await {
        Ok(()) => (Ok(()), Verdict::Success),
        Err(AppError::Unauthorized) => (
            Err(AppError::Invalid(
                "That code is not right (a code works once; use the next one or a recovery code)."
                    .into(),
            )),
            Verdict::Failure,
        ),
        Err(e) => (Err(e), Verdict::NotChecked),
    }
}

async fn new_secret(core: &Core, viewer: &Viewer) -> Result<TotpSetup> {
    let secret = Secret::generate().to_base32();
    let t = totp(&secret, &viewer.username)?;
    let uri = t.to_url().or_internal("building the otpauth URI")?;
    let qr = qrcode::QrCode::new(uri.as_bytes()).or_internal("rendering the QR code")?;
    let qr_svg = qr
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#1a1b26"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build();
    core.db
        .set_totp_pending(
            &viewer.username,
            &core.secret_key.seal(&viewer.username, &secret),
        )
        .await
        .or_internal("storing the TOTP secret")?;
    use base64::Engine;
    let qr_data_uri = format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(qr_svg.as_bytes())
    );
    Ok(TotpSetup {
        secret,
        otpauth_uri: uri,
        qr_svg,
        qr_data_uri,
    })
}

/// Confirm enrollment with a first code; answers the recovery codes, shown once. Every
/// other session of the user ends.
pub async fn confirm(core: &Core, viewer: &Viewer, code: &str) -> Result<RecoveryCodes> {
    let result = match super::auth::require_login(viewer) {
        Ok(()) => enable(core, viewer, code).await,
        Err(e) => Err(e),
    };
    super::audit::record(core, viewer, "totp.confirm", None, result).await
}

async fn enable(core: &Core, viewer: &Viewer, code: &str) -> Result<RecoveryCodes> {
    let row = core
        .db
        .totp(&viewer.username)
        .await
        .or_internal("loading TOTP")?
        .unwrap_or_default();
    let Some(pending) = row.pending else {
        return Err(AppError::conflict(
            "no_enrollment",
            "Start the two-factor setup first.",
        ));
    };
    let pending = open(core, &viewer.username, &pending)?;
    let step = matching_step(&totp(&pending, &viewer.username)?, code).ok_or_else(|| {
        AppError::Invalid(
            "That code is not right; check your authenticator's clock and try the next one.".into(),
        )
    })?;
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let t = new_token();
            format!("{}-{}", &t[..5], &t[5..10])
        })
        .collect();
    let hashes: Vec<(String, String)> = codes
        .iter()
        .map(|c| {
            let salt = new_salt();
            (recovery_hash(&core.secret_key, &salt, c), salt)
        })
        .collect();
    // The user's other sessions end with it: they were opened with the password alone.
    core.db
        .confirm_totp(&viewer.username, step, &hashes, &viewer.csrf_token)
        .await
        .or_internal("enabling TOTP")?;
    Ok(RecoveryCodes {
        recovery_codes: codes,
    })
}

/// A recovery code's stored hash: HMAC-SHA256 under the secret key over the salt and the
/// code's SHA-256 (so a hash stored as plain SHA-256 before could be keyed in place).
fn recovery_hash(key: &SecretKey, salt: &str, code: &str) -> String {
    key.keyed_hash(salt, &sha256_hex(code))
}

/// A stored (sealed) secret, opened; a failure is logged with its reason and is a 500.
fn open(core: &Core, username: &str, sealed: &str) -> Result<String> {
    core.secret_key
        .open(username, sealed)
        .or_internal(&format!("opening the TOTP secret of {username}"))
}

/// At login, after the password: does this account need a second factor, and is `code`
/// it? A TOTP step is accepted once; a recovery code once.
pub async fn second_factor(core: &Core, username: &str, code: Option<&str>) -> Result<()> {
    let db = &core.db;
    let row = db
        .totp(username)
        .await
        .or_internal("loading TOTP")?
        .unwrap_or_default();
    let Some(secret) = row.secret else {
        return Ok(());
    };
    let code = code
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or(AppError::TotpRequired)?;
    if code.contains('-') {
        return if spend_recovery_code(core, username, code).await? {
            Ok(())
        } else {
            Err(AppError::Unauthorized)
        };
    }
    let secret = open(core, username, &secret)?;
    match matching_step(&totp(&secret, username)?, code) {
        Some(step)
            if db
                .use_totp_step(username, step)
                .await
                .or_internal("recording a TOTP step")? =>
        {
            Ok(())
        }
        _ => Err(AppError::Unauthorized),
    }
}

/// Spend the recovery code `code` if it is one of the user's unused ones.
async fn spend_recovery_code(core: &Core, username: &str, code: &str) -> Result<bool> {
    let stored = core
        .db
        .recovery_codes(username)
        .await
        .or_internal("loading recovery codes")?;
    let inner = sha256_hex(code);
    let Some((hash, _)) = stored
        .iter()
        .find(|(hash, salt)| constant_time_eq(&core.secret_key.keyed_hash(salt, &inner), hash))
    else {
        return Ok(false);
    };
    core.db
        .use_recovery_code(username, hash)
        .await
        .or_internal("spending a recovery code")
}

/// The key setting that recognises the database's secret key (`SecretKey::check_value`).
const KEY_CHECK: &str = "secret_key_check";

/// At start, before serving: the secret key from `path`, checked against the database, and
/// every TOTP secret or recovery code stored before sealing existed sealed or keyed with it.
///
/// The key file is created (mode 0600) only while the database holds nothing that needs a
/// key; otherwise a missing file, or one with another key, stops the start with an error
/// that says so (a new key would lock every TOTP user out, silently).
pub async fn prepare_key(db: &Db, path: &Path) -> anyhow::Result<SecretKey> {
    let stored = db
        .setting(KEY_CHECK)
        .await
        .context("reading the key check")?;
    let keyed = db
        .count_keyed_values()
        .await
        .context("counting sealed secrets")?;
    // Values from before sealing need no key yet: the one made now seals them.
    let unsealed_only = stored.is_none();
    let (key, created) = SecretKey::load_or_create(path, unsealed_only || keyed == 0)?;
    if created {
        tracing::info!("created the secret key file {}", path.display());
    }
    match stored {
        Some(check) if constant_time_eq(&check, key.check_value()) => {}
        Some(_) if keyed > 0 => anyhow::bail!(
            "the secret key file {} holds another key than the one this database's TOTP              secrets and recovery codes were sealed with; restore the original key file (or              point --secret-key-file / NIXDECK_SECRET_KEY_FILE at it)",
            path.display()
        ),
        previous => {
            if previous.is_some() {
                tracing::warn!(
                    "the secret key in {} is new; nothing was sealed with the old one",
                    path.display()
                );
            }
            db.set_setting(KEY_CHECK, key.check_value())
                .await
                .context("storing the key check")?
        }
    }
    seal_unsealed(db, &key).await?;
    Ok(key)
}

/// Seal plain TOTP secrets and key plain SHA-256 recovery codes (rows written before
/// sealing existed). Idempotent: sealed rows are left alone.
async fn seal_unsealed(db: &Db, key: &SecretKey) -> anyhow::Result<()> {
    let (mut secrets, mut pendings) = (Vec::new(), Vec::new());
    for (username, secret, pending) in db.totp_secrets().await.context("loading TOTP secrets")? {
        for (value, out) in [(secret, &mut secrets), (pending, &mut pendings)] {
            if let Some(plain) = value.filter(|v| !SecretKey::is_sealed(v)) {
                let sealed = key.seal(&username, &plain);
                out.push((username.clone(), plain, sealed));
            }
        }
    }
    if !secrets.is_empty() || !pendings.is_empty() {
        db.replace_totp_values(&secrets, &pendings)
            .await
            .context("sealing TOTP secrets")?;
        tracing::info!(
            "sealed {} TOTP secrets stored before sealing existed",
            secrets.len() + pendings.len()
        );
    }
    let codes: Vec<_> = db
        .unsalted_recovery_codes()
        .await
        .context("loading recovery codes")?
        .into_iter()
        .map(|(username, sha256)| {
            let salt = new_salt();
            let keyed = key.keyed_hash(&salt, &sha256);
            (username, sha256, keyed, salt)
        })
        .collect();
    if !codes.is_empty() {
        db.salt_recovery_codes(&codes)
            .await
            .context("keying recovery codes")?;
        tracing::info!(
            "keyed {} recovery codes stored as plain SHA-256",
            codes.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::auth;
    use crate::storage::testing::{db_test, TestBackend};
    use std::sync::Arc;

    const PASSWORD: &str = "ann-password-1";

    /// The URL of the test's database of `backend`: made at the first call for `dir`, then
    /// the same (kept in `dir/database-url`), so a restart finds what was stored.
    async fn url(backend: &TestBackend, dir: &Path) -> String {
        let file = dir.join("database-url");
        if let Ok(url) = std::fs::read_to_string(&file) {
            return url;
        }
        let url = backend.fresh_url(dir).await;
        std::fs::write(&file, &url).unwrap();
        url
    }

    /// A `Core` on the test's database, with the key file `key` in `dir` (a start of the
    /// server).
    async fn start(backend: &TestBackend, dir: &Path, key: &str) -> Core {
        use clap::Parser;
        let db = Db::connect(&url(backend, dir).await).await.unwrap();
        let secret_key = prepare_key(&db, &dir.join(key)).await.unwrap();
        let config = crate::config::Config::parse_from(["nixdeck"]);
        let hub = crate::hub::Hub::new(Vec::new(), 5, None);
        Core {
            db,
            hub: hub.clone(),
            desired: Arc::new(crate::desired::Desired::new(&config.github, hub).unwrap()),
            deploys: Arc::default(),
            unsaved: Arc::default(),
            refusals: Arc::default(),
            enroll_until: None,
            limits: Arc::new(super::super::limits::Limits::new(5)),
            config: Arc::new(config),
            secret_key: Arc::new(secret_key),
            replica: crate::replica_name(),
            leader: super::super::lease::Leader::new(true),
            peers: Default::default(),
        }
    }

    async fn add_user(core: &Core, name: &str) {
        let hash = auth::hash_password(PASSWORD.into()).await.unwrap();
        core.db.insert_user(name, &hash, "viewer").await.unwrap();
    }

    /// A new session of `name`, as the viewer its requests carry.
    async fn log_in(core: &Core, name: &str, code: Option<&str>) -> (String, Viewer) {
        let s = auth::login(core, name, PASSWORD, code, None).await.unwrap();
        let viewer = auth::session(core, &s.cookie_value).await.unwrap().unwrap();
        (s.cookie_value, viewer)
    }

    fn now() -> u64 {
        Timestamp::now().secs() as u64
    }

    /// The code of the step after this one: accepted (one step of skew) and never used yet,
    /// even when the code of this step was.
    fn next_code(setup: &TotpSetup) -> String {
        Totp::from_url(&setup.otpauth_uri)
            .unwrap()
            .generate(now() + 30)
            .to_string()
    }

    /// Enrolled through the service: the setup's answer and the recovery codes.
    async fn enroll(core: &Core, viewer: &Viewer) -> (TotpSetup, Vec<String>) {
        let setup = setup(core, viewer, PASSWORD, None).await.unwrap();
        let code = Totp::from_url(&setup.otpauth_uri)
            .unwrap()
            .generate(now())
            .to_string();
        let codes = confirm(core, viewer, &code).await.unwrap().recovery_codes;
        (setup, codes)
    }

    fn status<T: std::fmt::Debug>(r: Result<T>) -> u16 {
        r.expect_err("refused").status()
    }

    db_test! {
        #[tokio::test]
        async fn a_setup_needs_the_password_and_once_totp_is_on_a_current_code(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = start(&backend, dir.path(), "secret.key").await;
            add_user(&core, "ann").await;
            let (_, ann) = log_in(&core, "ann", None).await;
            // First enrollment: the password, nothing else.
            assert_eq!(status(setup(&core, &ann, "", None).await), 422);
            let wrong = setup(&core, &ann, "not-the-password", None).await;
            assert_eq!(
                wrong,
                Err(AppError::Invalid("That password is not right.".into()))
            );
            assert_eq!(core.db.totp("ann").await.unwrap().unwrap().pending, None);
            let (first, codes) = enroll(&core, &ann).await;

            // TOTP is on: the password alone is asked for a code, as a login is.
            assert_eq!(
                setup(&core, &ann, PASSWORD, None).await,
                Err(AppError::TotpRequired)
            );
            assert_eq!(status(setup(&core, &ann, "", Some("123456")).await), 422);
            let wrong_code = format!(
                "{:06}",
                (next_code(&first).parse::<u32>().unwrap() + 1) % 1_000_000
            );
            assert_eq!(
                status(setup(&core, &ann, PASSWORD, Some(&wrong_code)).await),
                422
            );
            assert_eq!(
                status(setup(&core, &ann, "not-the-password", Some(&next_code(&first))).await),
                422
            );
            assert_eq!(core.db.totp("ann").await.unwrap().unwrap().pending, None);
            // The right password and a current code: a new secret waits for its first code.
            // The same code string twice: computing it again could cross into the next 30 s step
            // and give a new, unused code (the test then flaked on a slow machine).
            let used = next_code(&first);
            let again = setup(&core, &ann, PASSWORD, Some(&used)).await.unwrap();
            assert_ne!(again.secret, first.secret);
            // A code works once, here as at login.
            assert_eq!(status(setup(&core, &ann, PASSWORD, Some(&used)).await), 422);
            // A recovery code instead of the code, once.
            setup(&core, &ann, PASSWORD, Some(&codes[0])).await.unwrap();
            assert_eq!(
                status(setup(&core, &ann, PASSWORD, Some(&codes[0])).await),
                422
            );
        }
    }

    db_test! {
        #[tokio::test]
        async fn wrong_passwords_at_setup_count_with_failed_logins(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = start(&backend, dir.path(), "secret.key").await;
            add_user(&core, "ann").await;
            let (_, ann) = log_in(&core, "ann", None).await;
            for _ in 0..5 {
                assert_eq!(
                    status(setup(&core, &ann, "not-the-password", None).await),
                    422
                );
            }
            // Out of free guesses: the right password waits too, at setup and at login.
            assert_eq!(status(setup(&core, &ann, PASSWORD, None).await), 429);
            let login = auth::login(&core, "ann", PASSWORD, None, None).await;
            assert_eq!(status(login.map(|_| ())), 429);
        }
    }

    db_test! {
        #[tokio::test]
        async fn turning_totp_on_ends_the_users_other_sessions(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = start(&backend, dir.path(), "secret.key").await;
            add_user(&core, "ann").await;
            add_user(&core, "bob").await;
            let (_, ann) = log_in(&core, "ann", None).await;
            let (other, _) = log_in(&core, "ann", None).await;
            let (bob, _) = log_in(&core, "bob", None).await;
            let (setup, _) = enroll(&core, &ann).await;
            assert!(
                !auth::session_alive(&core, &other).await,
                "ann's other session"
            );
            assert!(auth::session_alive(&core, &bob).await, "bob's session");
            // The session that confirmed goes on.
            let next = next_code(&setup);
            let again = super::setup(&core, &ann, PASSWORD, Some(&next)).await;
            assert!(again.is_ok(), "{again:?}");
        }
    }

    db_test! {
        #[tokio::test]
        async fn secrets_are_sealed_at_rest_and_open_after_a_restart(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = start(&backend, dir.path(), "secret.key").await;
            add_user(&core, "ann").await;
            let (_, ann) = log_in(&core, "ann", None).await;
            let pending = setup(&core, &ann, PASSWORD, None).await.unwrap();
            let row = core.db.totp("ann").await.unwrap().unwrap();
            let stored = row.pending.unwrap();
            assert!(SecretKey::is_sealed(&stored), "{stored}");
            assert!(!stored.contains(&pending.secret));
            let code = Totp::from_url(&pending.otpauth_uri)
                .unwrap()
                .generate(now())
                .to_string();
            confirm(&core, &ann, &code).await.unwrap();
            let stored = core.db.totp("ann").await.unwrap().unwrap().secret.unwrap();
            assert!(SecretKey::is_sealed(&stored), "{stored}");
            assert!(!stored.contains(&pending.secret));
            drop(core);

            // Started again with the same key file: the secret opens, logins work.
            let core = start(&backend, dir.path(), "secret.key").await;
            log_in(&core, "ann", Some(&next_code(&pending))).await;
            // Another key file: the start stops with a clear error, and nothing is replaced.
            let db = Db::connect(&url(&backend, dir.path()).await).await.unwrap();
            let err = prepare_key(&db, &dir.path().join("other.key"))
                .await
                .unwrap_err();
            assert!(format!("{err:#}").contains("is missing"), "{err:#}");
            assert!(!dir.path().join("other.key").exists());
            std::fs::write(
                dir.path().join("other.key"),
                format!("{}\n", "11".repeat(32)),
            )
            .unwrap();
            let err = prepare_key(&db, &dir.path().join("other.key"))
                .await
                .unwrap_err();
            assert!(format!("{err:#}").contains("holds another key"), "{err:#}");
            assert_eq!(
                core.db.totp("ann").await.unwrap().unwrap().secret.unwrap(),
                stored
            );
        }
    }

    db_test! {
        #[tokio::test]
        async fn recovery_codes_are_stored_as_salted_keyed_hashes(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = start(&backend, dir.path(), "secret.key").await;
            add_user(&core, "ann").await;
            let (_, ann) = log_in(&core, "ann", None).await;
            let (_, codes) = enroll(&core, &ann).await;
            let stored = core.db.recovery_codes("ann").await.unwrap();
            assert_eq!(stored.len(), 10);
            let salts: std::collections::HashSet<_> = stored.iter().map(|(_, s)| s).collect();
            assert_eq!(salts.len(), 10, "a salt per code");
            for code in &codes {
                assert!(
                    stored.iter().all(|(h, _)| *h != sha256_hex(code)),
                    "a code's plain SHA-256 is not stored"
                );
            }
            // Without the key the hashes are no use: another key knows no code.
            let mut keyless = core.clone();
            keyless.secret_key = Arc::new(SecretKey::random());
            assert_eq!(
                second_factor(&keyless, "ann", Some(&codes[0])).await,
                Err(AppError::Unauthorized)
            );
            // With it each code works once.
            second_factor(&core, "ann", Some(&codes[0])).await.unwrap();
            assert_eq!(
                second_factor(&core, "ann", Some(&codes[0])).await,
                Err(AppError::Unauthorized)
            );
            second_factor(&core, "ann", Some(&codes[1])).await.unwrap();
        }
    }

    db_test! {
        /// A database from before sealing: a plain base32 secret (and a pending one) and recovery
        /// codes as plain SHA-256. The first start seals and keys them; they keep working.
        #[tokio::test]
        async fn secrets_and_codes_stored_before_sealing_are_sealed_at_the_first_start(backend) {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::connect(&url(&backend, dir.path()).await).await.unwrap();
            let hash = auth::hash_password(PASSWORD.into()).await.unwrap();
            db.insert_user("ann", &hash, "viewer").await.unwrap();
            db.insert_user("bob", &hash, "viewer").await.unwrap();
            let secret = Secret::generate().to_base32();
            let bob_pending = Secret::generate().to_base32();
            let codes = ["aaaaa-11111", "bbbbb-22222"];
            // As the previous version wrote them.
            crate::storage::on_pool!(db, pool => {
                sqlx::query("UPDATE users SET totp_secret = $1, totp_last_step = 0 WHERE username = 'ann'")
                    .bind(&secret)
                    .execute(pool)
                    .await
                    .unwrap();
                sqlx::query("UPDATE users SET totp_pending = $1 WHERE username = 'bob'")
                    .bind(&bob_pending)
                    .execute(pool)
                    .await
                    .unwrap();
                for code in codes {
                    sqlx::query(
                        "INSERT INTO recovery_codes (username, code_hash, used) VALUES ('ann', $1, FALSE)",
                    )
                    .bind(sha256_hex(code))
                    .execute(pool)
                    .await
                    .unwrap();
                }
            });
            drop(db);

            let core = start(&backend, dir.path(), "secret.key").await;
            let ann = core.db.totp("ann").await.unwrap().unwrap().secret.unwrap();
            assert!(
                SecretKey::is_sealed(&ann) && !ann.contains(&secret),
                "{ann}"
            );
            assert_eq!(core.secret_key.open("ann", &ann).unwrap(), secret);
            let bob = core.db.totp("bob").await.unwrap().unwrap().pending.unwrap();
            assert_eq!(core.secret_key.open("bob", &bob).unwrap(), bob_pending);
            let keyed = core.db.recovery_codes("ann").await.unwrap();
            assert_eq!(keyed.len(), 2);
            assert!(keyed
                .iter()
                .all(|(h, _)| codes.iter().all(|c| *h != sha256_hex(c))));
            // Idempotent: a second start leaves sealed values alone.
            let core = start(&backend, dir.path(), "secret.key").await;
            assert_eq!(
                core.db.totp("ann").await.unwrap().unwrap().secret.unwrap(),
                ann
            );
            assert_eq!(core.db.recovery_codes("ann").await.unwrap(), keyed);
            // The same secret and the same codes log ann in.
            let code = totp(&secret, "ann").unwrap().generate(now()).to_string();
            log_in(&core, "ann", Some(&code)).await;
            log_in(&core, "ann", Some(codes[0])).await;
            log_in(&core, "ann", Some(codes[1])).await;
        }
    }

    db_test! {
        /// With nothing sealed yet, a lost key file is simply replaced by a new key.
        #[tokio::test]
        async fn a_new_key_is_taken_while_nothing_is_sealed(backend) {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::connect(&url(&backend, dir.path()).await).await.unwrap();
            let first = prepare_key(&db, &dir.path().join("a.key")).await.unwrap();
            let second = prepare_key(&db, &dir.path().join("b.key")).await.unwrap();
            assert_ne!(first.check_value(), second.check_value());
            assert!(dir.path().join("b.key").exists());
        }
    }
}
