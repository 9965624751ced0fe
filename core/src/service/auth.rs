//! Users, passwords and sessions.

use super::{OrInternal, Result};
use crate::config::AdminPassword;
use crate::secret::{new_token, sha256_hex};
use crate::storage::Db;
use crate::Core;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use common::AppError;
use common::Viewer;
use protocol::api::Role;
use protocol::Timestamp;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub const MIN_PASSWORD: usize = 12;
pub const MAX_PASSWORD: usize = 1024;

/// Argon2id with the crate's default parameters, off the async threads.
pub async fn hash_password(password: String) -> Result<String> {
    // Waits its turn: hashing is for admins and the CLI, never refused.
    let permit = HASHING
        .clone()
        .acquire_owned()
        .await
        .or_internal("password hashing slot")?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .or_internal("password hashing task")?
    .or_internal("password hashing")
}

/// Compared against when the user does not exist, so that case costs the same time.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(b"nixdeck-dummy-password", &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Holds its `HASHING` permit until the check is done.
async fn verify_password(hash: String, password: String, permit: OwnedSemaphorePermit) -> bool {
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A random password for generated accounts: 20 characters from an unambiguous alphabet.
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn check_password_rules(password: &str) -> Result<()> {
    let len = password.chars().count();
    if len < MIN_PASSWORD {
        return Err(AppError::Invalid(format!(
            "The password needs at least {MIN_PASSWORD} characters."
        )));
    }
    if len > MAX_PASSWORD {
        return Err(AppError::Invalid(format!(
            "The password may have at most {MAX_PASSWORD} characters."
        )));
    }
    Ok(())
}

/// How the first `admin` got its password (`ensure_admin`).
#[derive(Debug, PartialEq, Eq)]
pub enum AdminCreated {
    /// From NIXDECK_ADMIN_PASSWORD.
    Given,
    /// From a file that was there already (the operator's, or one an earlier start wrote
    /// before it could create the user).
    FromFile(PathBuf),
    /// Generated and written to this file (mode 0600).
    Generated(PathBuf),
}

/// On first start (no users), create `admin` with the password from `source`. A generated
/// password goes to the file only, never to stdout or the log: a service's output ends up
/// in journals and CI logs that more people read than should log in as admin.
pub async fn ensure_admin(db: &Db, source: &AdminPassword) -> Result<Option<AdminCreated>> {
    if db.count_users().await.or_internal("counting users")? > 0 {
        return Ok(None);
    }
    let (password, created) = match source {
        AdminPassword::Given(p) => (p.clone(), AdminCreated::Given),
        AdminPassword::File(path) => match read_password_file(path)? {
            Some(p) => (p, AdminCreated::FromFile(path.clone())),
            None => {
                let p = generate_password();
                // Written before the user exists: if writing fails, no admin is created
                // whose password nobody has; if creating the user fails, the next start
                // reads the same password back from the file.
                write_new_secret_file(path, &p)?;
                (p, AdminCreated::Generated(path.clone()))
            }
        },
    };
    check_password_rules(&password)?;
    let hash = hash_password(password).await?;
    db.insert_user("admin", &hash, "admin")
        .await
        .or_internal("creating the admin user")?;
    Ok(Some(created))
}

/// The password in `path` without its line break; None when the file does not exist.
fn read_password_file(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).or_internal(&format!("reading {}", path.display())),
    }
}

/// Create `path` (it must not exist: an existing file is never overwritten) readable and
/// writable by this user only, and write `secret` to it.
fn write_new_secret_file(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write;
    let context = format!("writing the admin password to {}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).or_internal(&context)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .or_internal(&context)
}

/// A session that was just created: the cookie value (never stored) and its CSRF token.
pub struct NewSession {
    pub cookie_value: String,
    pub csrf_token: String,
    /// The user's role, so a page that logged in can show the right buttons at once.
    pub role: Role,
    /// The user's colour theme, for the same page.
    pub theme: protocol::api::Theme,
}

/// Check credentials and open a session with a fresh id. Unknown user and wrong password
/// get the same error after the same work.
///
/// Under a flood: a name that cannot exist is refused before anything else; an attempt is
/// counted before its password is checked (`LoginLimiter`), so parallel requests get no
/// more guesses than serial ones; at most `HASHING` passwords are checked at once (each
/// Argon2 run holds about 19 MiB), the rest get 503 with Retry-After; and refused attempts
/// are tallied into one audit row per minute and kind instead of a row each.
pub async fn login(
    core: &Core,
    username: &str,
    password: &str,
    totp: Option<&str>,
    address: Option<std::net::IpAddr>,
) -> Result<NewSession> {
    use super::limits::{too_many, Source, Verdict};
    let ip = address.map(|a| a.to_string());
    let source = address.map(Source::of);
    if super::users::check_username(username).is_err() {
        core.refusals
            .note(LOGIN_REFUSED, None, ip.as_deref(), "invalid_username");
        return Err(AppError::Unauthorized);
    }
    let refused = |e: AppError| {
        core.refusals
            .note(LOGIN_REFUSED, Some(username), ip.as_deref(), e.code());
        e
    };
    if let Some(s) = &source {
        core.limits
            .check_address(s)
            .await
            .map_err(|w| refused(too_many(w)))?;
    }
    let attempt = core
        .limits
        .begin_login(username, source)
        .await
        .map_err(|w| refused(too_many(w)))?;
    let (result, verdict) = check_login(core, username, password, totp, ip.as_deref()).await;
    core.limits.finish_login(attempt, verdict).await;
    let result = match (result, &source) {
        (Err(e), Some(s)) if verdict == Verdict::Failure => {
            // Spraying many accounts from one source runs out here.
            Err(match core.limits.fail_address(s).await {
                Ok(()) => e,
                Err(wait) => too_many(wait),
            })
        }
        (result, _) => result,
    };
    if verdict == Verdict::NotChecked && result.is_err() {
        if let Err(e) = &result {
            core.refusals
                .note(LOGIN_REFUSED, Some(username), ip.as_deref(), e.code());
        }
        return result;
    }
    super::audit::write(
        &core.db,
        username,
        ip.as_deref(),
        "login",
        None,
        super::audit::outcome(&result),
        None,
    )
    .await;
    result
}

/// The audit action of tallied login refusals.
const LOGIN_REFUSED: &str = "login.refused";

/// Password checks (Argon2) running at once: about one per core. Each holds ~19 MiB, and
/// the blocking pool would otherwise run hundreds at a time under a flood.
static HASHING: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(Semaphore::new(cores.clamp(1, 8)))
});

/// How long a login turned away for lack of capacity is told to wait.
const BUSY_RETRY_S: u64 = 1;

async fn check_login(
    core: &Core,
    username: &str,
    password: &str,
    totp: Option<&str>,
    ip: Option<&str>,
) -> (Result<NewSession>, super::limits::Verdict) {
    match verify_credentials(core, username, password, totp, ip).await {
        (Ok(user), verdict) => (open_session(core, username, user, ip).await, verdict),
        (Err(e), verdict) => (Err(e), verdict),
    }
}

/// The password and, with 2FA, the code: the user's row when both are right.
async fn verify_credentials(
    core: &Core,
    username: &str,
    password: &str,
    totp: Option<&str>,
    ip: Option<&str>,
) -> (
    Result<Option<crate::storage::UserRow>>,
    super::limits::Verdict,
) {
    use super::limits::Verdict;
    let user = match core.db.user(username).await.or_internal("loading user") {
        Ok(u) => u,
        Err(e) => return (Err(e), Verdict::NotChecked),
    };
    let (hash, usable) = match &user {
        Some(u) => (u.password_hash.clone(), !u.disabled),
        None => (DUMMY_HASH.clone(), false),
    };
    let Ok(permit) = HASHING.clone().try_acquire_owned() else {
        return (
            Err(AppError::Unavailable {
                retry_after_s: BUSY_RETRY_S,
            }),
            Verdict::NotChecked,
        );
    };
    let password_ok =
        password.len() <= MAX_PASSWORD && verify_password(hash, password.to_owned(), permit).await;
    // The second factor is asked for only after a right password; a wrong one counts as a
    // failed login, like a wrong password.
    let verdict = if password_ok && usable {
        super::totp::second_factor(core, username, totp).await
    } else {
        Err(AppError::Unauthorized)
    };
    match verdict {
        Ok(()) => (Ok(user), Verdict::Success),
        Err(AppError::TotpRequired) => (Err(AppError::TotpRequired), Verdict::NotChecked),
        Err(e) => {
            tracing::info!(user = username, ip = ip.unwrap_or("-"), "login failed");
            (Err(e), Verdict::Failure)
        }
    }
}

/// `POST /api/account/reauth`: the logged-in user proves who they are again (password,
/// and the TOTP or a recovery code with 2FA), so the actions that ask for a recent
/// authentication (`require_recent_auth`) go ahead for the next `NIXDECK_REAUTH_WINDOW_S`.
/// Counted like a login: the same limits per (account, source) and the same hashing cap.
pub async fn reauthenticate(
    core: &Core,
    viewer: &Viewer,
    password: &str,
    totp: Option<&str>,
) -> Result<()> {
    require_login(viewer)?;
    let attempt = begin_attempt(core, viewer).await?;
    let (checked, verdict) =
        verify_credentials(core, &viewer.username, password, totp, viewer.ip.as_deref()).await;
    core.limits.finish_login(attempt, verdict).await;
    let result = match checked {
        Ok(_) => core
            .db
            .set_authenticated(&viewer.session_hash, Timestamp::now())
            .await
            .or_internal("re-authenticating"),
        // The user is logged in: "not logged in" would mislead.
        Err(AppError::Unauthorized) => Err(AppError::Invalid(
            "That password (or code) is not right.".into(),
        )),
        Err(e) => Err(e),
    };
    super::audit::record(core, viewer, "reauth", None, result).await
}

/// A logged-in user proving who they are again (re-authentication, a new TOTP setup) is
/// counted like a login, per (account, source): a stolen session gets no extra guesses.
pub(super) async fn begin_attempt(
    core: &Core,
    viewer: &Viewer,
) -> Result<super::limits::LoginAttempt> {
    use super::limits::{too_many, Source};
    let source = viewer
        .ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .map(Source::of);
    core.limits
        .begin_login(&viewer.username, source)
        .await
        .map_err(too_many)
}

/// The request comes from a person's login, not an API token: for re-authentication, TOTP
/// changes and everything behind `require_recent_auth`. A script has no password to prove
/// again, and a token that could re-authenticate would be as good as the password.
pub fn require_login(viewer: &Viewer) -> Result<()> {
    match &viewer.api_token {
        None => Ok(()),
        Some(name) => Err(AppError::Forbidden(format!(
            "this needs a person logged in to the dashboard; API tokens (here {name:?}) cannot do it"
        ))),
    }
}

/// Token rotation, user management and Merge & Deploy need the user to have proved who
/// they are within `NIXDECK_REAUTH_WINDOW_S`: a session left open, or a stolen cookie,
/// cannot do them long after the login.
pub fn require_recent_auth(core: &Core, viewer: &Viewer) -> Result<()> {
    require_login(viewer)?;
    let age = Timestamp::now().secs() - viewer.authenticated_at;
    if age <= core.config.reauth_window_s as i64 {
        Ok(())
    } else {
        Err(AppError::ReauthRequired)
    }
}

/// Merge & Deploy (its start and its confirmation): a person must have proved who they
/// are recently (`require_recent_auth`); an API token may, as its role allows. A token has
/// no password to prove again, and is itself the script's proof, made for it by an admin,
/// capped in role, expiring and revocable; the issue's `nixdeck ctl deploy` needs this.
pub fn require_recent_auth_or_token(core: &Core, viewer: &Viewer) -> Result<()> {
    if viewer.api_token.is_some() {
        return Ok(());
    }
    require_recent_auth(core, viewer)
}

/// Whether `password` is the user's (a user that is missing or disabled has none). For a
/// logged-in user proving again who they are (`totp::setup`); the caller counts the attempt.
/// Like a login, it waits for no Argon2 slot: 503 when all are busy.
pub async fn password_matches(core: &Core, username: &str, password: &str) -> Result<bool> {
    let user = core.db.user(username).await.or_internal("loading user")?;
    let Some(user) = user.filter(|u| !u.disabled) else {
        return Ok(false);
    };
    let Ok(permit) = HASHING.clone().try_acquire_owned() else {
        return Err(AppError::Unavailable {
            retry_after_s: BUSY_RETRY_S,
        });
    };
    Ok(password.len() <= MAX_PASSWORD
        && verify_password(user.password_hash, password.to_owned(), permit).await)
}

async fn open_session(
    core: &Core,
    username: &str,
    user: Option<crate::storage::UserRow>,
    ip: Option<&str>,
) -> Result<NewSession> {
    let session = NewSession {
        cookie_value: new_token(),
        csrf_token: new_token(),
        role: user
            .map(|u| super::stored_role(&u.username, &u.role))
            .unwrap_or_default(),
        theme: super::users::theme(core, username).await?,
    };
    core.db
        .insert_session(
            &sha256_hex(&session.cookie_value),
            username,
            &session.csrf_token,
            ip,
        )
        .await
        .or_internal("creating session")?;
    tracing::info!(user = username, ip = ip.unwrap_or("-"), "login");
    Ok(session)
}

/// The viewer behind a session cookie, if the session is alive. Idle and absolute
/// timeouts come from the configuration; `last_seen_at` is written at most once a minute.
pub async fn session(core: &Core, cookie_value: &str) -> Result<Option<Viewer>> {
    let id_hash = sha256_hex(cookie_value);
    let Some(row) = core
        .db
        .session(&id_hash)
        .await
        .or_internal("loading session")?
    else {
        return Ok(None);
    };
    let now = Timestamp::now().secs();
    let idle_limit = (core.config.session_idle_min * 60) as i64;
    let max_age = (core.config.session_max_h * 3600) as i64;
    if now - row.last_seen_at > idle_limit || now - row.created_at > max_age {
        core.db
            .delete_session(&id_hash)
            .await
            .or_internal("ending session")?;
        return Ok(None);
    }
    if now - row.last_seen_at >= 60 {
        core.db
            .touch_session(&id_hash, Timestamp(now))
            .await
            .or_internal("touching session")?;
    }
    Ok(Some(Viewer {
        role: super::stored_role(&row.username, &row.role),
        username: row.username,
        csrf_token: row.csrf_token,
        ip: None,
        session_hash: id_hash,
        authenticated_at: row.authenticated_at,
        api_token: None,
    }))
}

pub async fn logout(core: &Core, cookie_value: &str) -> Result<()> {
    core.db
        .delete_session(&sha256_hex(cookie_value))
        .await
        .or_internal("deleting session")
}

/// Whether the session behind this cookie still exists (open sockets re-check this).
pub async fn session_alive(core: &Core, cookie_value: &str) -> bool {
    matches!(session(core, cookie_value).await, Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::db_test;

    async fn admin_hash(db: &Db) -> String {
        db.user("admin").await.unwrap().unwrap().password_hash
    }

    fn checks(hash: &str, password: &str) -> bool {
        Argon2::default()
            .verify_password(password.as_bytes(), &PasswordHash::new(hash).unwrap())
            .is_ok()
    }

    db_test! {
        #[tokio::test]
        async fn a_generated_admin_password_goes_to_a_new_private_file_only(backend) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("admin-password");
            let source = AdminPassword::File(file.clone());
            let first = Db::connect(&backend.fresh_url(&dir.path().join("a")).await)
                .await
                .unwrap();
            assert_eq!(
                ensure_admin(&first, &source).await.unwrap(),
                Some(AdminCreated::Generated(file.clone()))
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&file).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            let written = std::fs::read_to_string(&file).unwrap();
            let password = written.trim_end();
            assert!(password.len() >= MIN_PASSWORD);
            assert!(checks(&admin_hash(&first).await, password));
            // Users exist: nothing happens, the file stays as it is.
            assert_eq!(ensure_admin(&first, &source).await.unwrap(), None);
            assert_eq!(std::fs::read_to_string(&file).unwrap(), written);

            // A fresh database with the file already there: its password is used, and the
            // file is not overwritten.
            let second = Db::connect(&backend.fresh_url(&dir.path().join("b")).await)
                .await
                .unwrap();
            assert_eq!(
                ensure_admin(&second, &source).await.unwrap(),
                Some(AdminCreated::FromFile(file.clone()))
            );
            assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
            assert!(checks(&admin_hash(&second).await, password));
        }
    }
}
