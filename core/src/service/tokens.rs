//! Personal API tokens: a script acts as a user without a browser session.
//!
//! - A token is `ndk_` and 256 random bits (64 hex digits), shown once; only its SHA-256
//!   is stored, which is enough for a secret of that entropy (passwords use Argon2id).
//!   The prefix makes a leaked token recognisable (secret scanners, log greps).
//! - A token carries a role no higher than its owner's when it is made (403 otherwise),
//!   and acts with the lower of that role and the owner's role *now*: lowering a user's
//!   role caps their tokens at once; disabling or deleting the user ends them.
//! - Tokens are made by a person (the Account page, or `nixdeck token create` on the
//!   server): a request that itself came with a token may not make one. Nor may it reach
//!   what needs a recent re-authentication (`auth::require_recent_auth`), TOTP changes or
//!   the re-authentication itself: a script has no password to prove, and a token that
//!   could re-authenticate would be a password. The one exception is Merge & Deploy
//!   (`auth::require_recent_auth_or_token`): deploying from CI is what tokens are for.
//! - The last use is written at most once a minute per token, so a busy script does not
//!   write on every request.

use super::{audit, require_admin, stored_role, OrInternal, Result};
use crate::secret::{new_token, sha256_hex};
use crate::storage::{is_unique_violation, ApiTokenRow, Db};
use crate::Core;
use common::{AppError, Viewer};
use protocol::api::{ApiTokenCreated, ApiTokenInfo, CreateApiToken, Role};
use protocol::Timestamp;

/// What every token starts with.
pub const PREFIX: &str = "ndk_";
/// The longest lifetime a token may be given, in days (ten years); "never" is spelled by
/// giving none.
pub const MAX_DAYS: u32 = 3650;
/// A token's last use is written when the stored one is older than this.
const TOUCH_EVERY_S: i64 = 60;
const MAX_NAME: usize = 64;

/// A new token: the prefix and 64 hex digits.
fn generate() -> String {
    format!("{PREFIX}{}", new_token())
}

/// What is stored for `token`.
pub fn hash(token: &str) -> String {
    sha256_hex(token)
}

/// Whether `token` has the shape of one of ours; anything else is refused unread.
fn well_formed(token: &str) -> bool {
    token
        .strip_prefix(PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The role a new token may have: at most its owner's.
pub fn cap(requested: Role, owner: Role) -> Result<Role> {
    if owner.at_least(requested) {
        Ok(requested)
    } else {
        Err(AppError::Forbidden(format!(
            "a token's role cannot be above its owner's ({owner}); ask for {owner} or less"
        )))
    }
}

/// The role a request with a token acts with: the lower of the token's and its owner's
/// current role.
pub fn effective_role(token: Role, owner: Role) -> Role {
    token.min(owner)
}

pub fn check_name(name: &str) -> Result<()> {
    let len = name.chars().count();
    if len == 0 || len > MAX_NAME || name.chars().any(char::is_control) || name.trim() != name {
        return Err(AppError::Invalid(format!(
            "A token's name has 1 to {MAX_NAME} printable characters, without spaces at either end."
        )));
    }
    Ok(())
}

/// The expiry of a token that lives `days` from `now`; None: never expires.
pub fn expiry(now: i64, days: Option<u32>) -> Result<Option<i64>> {
    match days {
        None => Ok(None),
        Some(d) if (1..=MAX_DAYS).contains(&d) => Ok(Some(now + i64::from(d) * 86_400)),
        Some(_) => Err(AppError::Invalid(format!(
            "A token expires in 1 to {MAX_DAYS} days, or never."
        ))),
    }
}

fn info(row: ApiTokenRow, now: i64) -> ApiTokenInfo {
    ApiTokenInfo {
        role: stored_role(&row.username, &row.role),
        expired: row.expires_at.is_some_and(|at| at <= now),
        id: row.id,
        username: row.username,
        name: row.name,
        created_at: Timestamp(row.created_at),
        expires_at: row.expires_at.map(Timestamp),
        last_used_at: row.last_used_at.map(Timestamp),
    }
}

/// Make a token for `owner`, audited as `actor` from `ip`. The rules of every door: the
/// name, the role cap, a unique name per owner. `expires_at` is Unix seconds.
pub async fn mint(
    db: &Db,
    actor: &str,
    ip: Option<&str>,
    owner: &str,
    name: &str,
    role: Role,
    expires_at: Option<i64>,
) -> Result<ApiTokenCreated> {
    let result = insert(db, owner, name, role, expires_at).await;
    let detail = match &result {
        Ok(_) => format!("{name:?} ({role}) for {owner}"),
        Err(e) => e.to_string(),
    };
    let target = result.as_ref().map(|c| c.id.as_str()).unwrap_or(owner);
    audit::write(
        db,
        actor,
        ip,
        "token.create",
        Some(target),
        audit::outcome(&result),
        Some(detail),
    )
    .await;
    result
}

async fn insert(
    db: &Db,
    owner: &str,
    name: &str,
    role: Role,
    expires_at: Option<i64>,
) -> Result<ApiTokenCreated> {
    check_name(name)?;
    let user = db
        .user(owner)
        .await
        .or_internal("loading the token's owner")?
        .ok_or_else(|| AppError::NotFound(format!("user {owner}")))?;
    if user.disabled {
        return Err(AppError::Invalid(format!(
            "User {owner} is disabled; a token of theirs would not work."
        )));
    }
    let role = cap(role, stored_role(owner, &user.role))?;
    let token = generate();
    let row = ApiTokenRow {
        id: new_token()[..16].to_owned(),
        username: owner.to_owned(),
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        created_at: Timestamp::now().secs(),
        expires_at,
        last_used_at: None,
    };
    match db.insert_api_token(&row, &hash(&token)).await {
        Ok(()) => Ok(ApiTokenCreated { id: row.id, token }),
        Err(e) if is_unique_violation(&e) => Err(AppError::conflict(
            "exists",
            format!("{owner} already has a token named {name:?}."),
        )),
        Err(e) => Err(e).or_internal("storing a token"),
    }
}

/// `POST /api/tokens`: a token for the logged-in user (never from a request that itself
/// came with a token).
pub async fn create(core: &Core, viewer: &Viewer, req: CreateApiToken) -> Result<ApiTokenCreated> {
    if viewer.api_token.is_some() {
        let refused: Result<ApiTokenCreated> = Err(AppError::Forbidden(
            "tokens are made by a person: log in to the dashboard, or use `nixdeck token create`"
                .into(),
        ));
        return audit::record(core, viewer, "token.create", None, refused).await;
    }
    let expires_at = expiry(Timestamp::now().secs(), req.expires_in_days)?;
    mint(
        &core.db,
        &viewer.username,
        viewer.ip.as_deref(),
        &viewer.username,
        &req.name,
        req.role,
        expires_at,
    )
    .await
}

/// `GET /api/tokens`: the caller's own tokens; everyone's for an admin asking for `all`.
pub async fn list(core: &Core, viewer: &Viewer, all: bool) -> Result<Vec<ApiTokenInfo>> {
    if all {
        require_admin(viewer)?;
    }
    let owner = (!all).then_some(viewer.username.as_str());
    list_of(&core.db, owner).await
}

/// One user's tokens, or everyone's (`None`): for the CLI and `list`.
pub async fn list_of(db: &Db, owner: Option<&str>) -> Result<Vec<ApiTokenInfo>> {
    let now = Timestamp::now().secs();
    Ok(db
        .api_tokens(owner)
        .await
        .or_internal("listing tokens")?
        .into_iter()
        .map(|row| info(row, now))
        .collect())
}

/// `DELETE /api/tokens/{id}`: one's own token, or anyone's for an admin. Another user's
/// token is "not found" to a non-admin, so ids do not tell whose they are.
pub async fn revoke(core: &Core, viewer: &Viewer, id: &str) -> Result<()> {
    let result = async {
        let row = core.db.api_token(id).await.or_internal("loading a token")?;
        match row {
            Some(row) if row.username == viewer.username || viewer.role.at_least(Role::Admin) => {
                delete(&core.db, id).await
            }
            _ => Err(AppError::NotFound(format!("token {id}"))),
        }
    }
    .await;
    audit::record(core, viewer, "token.revoke", Some(id), result).await
}

/// `nixdeck token revoke`.
pub async fn revoke_cli(db: &Db, id: &str) -> Result<()> {
    let result = delete(db, id).await;
    audit::write(
        db,
        "cli",
        None,
        "token.revoke",
        Some(id),
        audit::outcome(&result),
        None,
    )
    .await;
    result
}

async fn delete(db: &Db, id: &str) -> Result<()> {
    if db
        .delete_api_token(id)
        .await
        .or_internal("revoking a token")?
    {
        Ok(())
    } else {
        Err(AppError::NotFound(format!("token {id}")))
    }
}

/// The viewer behind `Authorization: Bearer <token>`, or None when the token is unknown,
/// revoked, expired, or its owner is disabled or gone. The caller answers None with 401.
pub async fn authenticate(core: &Core, token: &str) -> Result<Option<Viewer>> {
    if !well_formed(token) {
        return Ok(None);
    }
    let Some(found) = core
        .db
        .api_token_by_hash(&hash(token))
        .await
        .or_internal("loading a token")?
    else {
        return Ok(None);
    };
    let now = Timestamp::now().secs();
    let row = found.token;
    if row.expires_at.is_some_and(|at| at <= now) {
        return Ok(None);
    }
    if row.last_used_at.is_none_or(|at| now - at >= TOUCH_EVERY_S) {
        // A failed write costs the request nothing but a stale "last used".
        if let Err(e) = core.db.touch_api_token(&row.id, now).await {
            tracing::warn!(token = row.id, "recording a token's use: {e}");
        }
    }
    let role = effective_role(
        stored_role(&row.username, &row.role),
        stored_role(&row.username, &found.owner_role),
    );
    Ok(Some(Viewer {
        username: row.username,
        role,
        // No cookie, so nothing to forge across sites: bearer requests need no CSRF token.
        csrf_token: String::new(),
        ip: None,
        session_hash: String::new(),
        // Never recent: `require_login` refuses tokens first, this is the second line.
        authenticated_at: 0,
        api_token: Some(row.name),
    }))
}

/// Whether the token still works (open sockets re-check this, like a session).
pub async fn alive(core: &Core, token: &str) -> bool {
    matches!(authenticate(core, token).await, Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{db_test, TestBackend};

    #[test]
    fn a_token_role_is_capped_at_its_owners() {
        use Role::*;
        for owner in Role::ALL {
            for requested in Role::ALL {
                let capped = cap(requested, owner);
                if requested <= owner {
                    assert_eq!(capped, Ok(requested), "{owner} asks for {requested}");
                } else {
                    let err = capped.unwrap_err();
                    assert_eq!(err.status(), 403, "{owner} asks for {requested}");
                    assert!(err.to_string().contains(owner.as_str()), "{err}");
                }
            }
        }
        // At use, the lower of the two: an admin token of a user lowered to viewer.
        assert_eq!(effective_role(Admin, Viewer), Viewer);
        assert_eq!(effective_role(Viewer, Admin), Viewer);
        assert_eq!(effective_role(Operator, Admin), Operator);
    }

    #[test]
    fn tokens_are_random_prefixed_and_stored_as_their_sha256() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && well_formed(&a), "{a}");
        assert_eq!(a.len(), PREFIX.len() + 64);
        // The stored form is SHA-256 (a known vector), not the token.
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(hash(&a), a);
        assert!(!hash(&a).contains(&a[PREFIX.len()..]));
        for bad in ["", "ndk_", "abc", &a[PREFIX.len()..], &format!("{a}0")] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_and_lifetimes() {
        assert!(check_name("ci deploys").is_ok());
        for bad in ["", " ci", "ci\n", &"x".repeat(65)] {
            assert_eq!(check_name(bad).unwrap_err().status(), 422, "{bad:?}");
        }
        assert_eq!(expiry(100, None), Ok(None));
        assert_eq!(expiry(100, Some(1)), Ok(Some(100 + 86_400)));
        assert!(expiry(100, Some(0)).is_err());
        assert!(expiry(100, Some(MAX_DAYS + 1)).is_err());
    }

    async fn core_with_users(backend: &TestBackend, dir: &std::path::Path) -> Core {
        let core = crate::service::test_core(backend, dir, &[], &["nixdeck"]).await;
        for (user, role) in [("ann", "operator"), ("bob", "viewer")] {
            core.db.insert_user(user, "x", role).await.unwrap();
        }
        core
    }

    db_test! {
        /// Stored, found by the token, refused once expired, revoked or its owner disabled,
        /// and capped when the owner's role drops.
        #[tokio::test]
        async fn a_token_works_until_it_expires_is_revoked_or_its_owner_is_disabled(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = core_with_users(&backend, dir.path()).await;
            let db = &core.db;
            let made = mint(db, "cli", None, "ann", "ci", Role::Operator, None)
                .await
                .unwrap();
            let viewer = authenticate(&core, &made.token).await.unwrap().unwrap();
            assert_eq!(
                (
                    viewer.username.as_str(),
                    viewer.role,
                    viewer.api_token.as_deref()
                ),
                ("ann", Role::Operator, Some("ci"))
            );
            let listed = list_of(db, Some("ann")).await.unwrap();
            assert_eq!(listed.len(), 1);
            assert!(listed[0].last_used_at.is_some(), "the first use is written");
            assert_eq!(
                mint(db, "cli", None, "ann", "ci", Role::Viewer, None)
                    .await
                    .unwrap_err()
                    .status(),
                409,
                "one name per owner"
            );
            assert_eq!(
                mint(db, "cli", None, "bob", "up", Role::Operator, None)
                    .await
                    .unwrap_err()
                    .status(),
                403
            );

            // The owner's role drops: the token acts as a viewer.
            crate::storage::on_pool!(db, pool => sqlx::query("UPDATE users SET role = 'viewer' WHERE username = 'ann'").execute(pool).await.map(|_| ()).unwrap());
            let lowered = authenticate(&core, &made.token).await.unwrap().unwrap();
            assert_eq!(lowered.role, Role::Viewer);

            crate::service::users::set_disabled(db, "cli", "ann", true)
                .await
                .unwrap();
            assert!(authenticate(&core, &made.token).await.unwrap().is_none());
            crate::service::users::set_disabled(db, "cli", "ann", false)
                .await
                .unwrap();
            assert!(alive(&core, &made.token).await);

            revoke_cli(db, &made.id).await.unwrap();
            assert!(!alive(&core, &made.token).await);
            assert_eq!(revoke_cli(db, &made.id).await.unwrap_err().status(), 404);

            // Expired a second ago: refused, and listed as expired.
            let old = mint(
                db,
                "cli",
                None,
                "ann",
                "old",
                Role::Viewer,
                Some(Timestamp::now().secs() - 1),
            )
            .await
            .unwrap();
            assert!(!alive(&core, &old.token).await);
            assert!(list_of(db, Some("ann")).await.unwrap()[0].expired);

            // A deleted owner takes their tokens along.
            let bobs = mint(db, "cli", None, "bob", "b", Role::Viewer, None)
                .await
                .unwrap();
            assert!(alive(&core, &bobs.token).await);
            crate::storage::on_pool!(db, pool => sqlx::query("DELETE FROM users WHERE username = 'bob'").execute(pool).await.map(|_| ()).unwrap());
            assert!(!alive(&core, &bobs.token).await);
        }
    }

    db_test! {
        /// A request with a token may not make tokens, re-authenticate, or pass the recent-login
        /// check, whatever its role.
        #[tokio::test]
        async fn a_token_cannot_make_tokens_or_reach_reauthenticated_actions(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = core_with_users(&backend, dir.path()).await;
            let made = mint(&core.db, "cli", None, "ann", "ci", Role::Operator, None)
                .await
                .unwrap();
            let viewer = authenticate(&core, &made.token).await.unwrap().unwrap();
            let req = CreateApiToken {
                name: "more".into(),
                role: Role::Viewer,
                expires_in_days: None,
            };
            assert_eq!(create(&core, &viewer, req).await.unwrap_err().status(), 403);
            assert!(crate::service::auth::require_recent_auth(&core, &viewer).is_err());
            let fresh = Viewer {
                authenticated_at: Timestamp::now().secs(),
                ..viewer.clone()
            };
            assert_eq!(
                crate::service::auth::require_recent_auth(&core, &fresh)
                    .unwrap_err()
                    .status(),
                403,
                "a token is refused even with a recent time"
            );
            assert_eq!(
                crate::service::auth::reauthenticate(&core, &viewer, "x", None)
                    .await
                    .unwrap_err()
                    .status(),
                403
            );
            // Merge & Deploy is the exception: a token passes, a stale session does not.
            assert!(crate::service::auth::require_recent_auth_or_token(&core, &viewer).is_ok());
            let stale_session = Viewer {
                api_token: None,
                authenticated_at: 0,
                ..viewer.clone()
            };
            assert!(crate::service::auth::require_recent_auth_or_token(&core, &stale_session).is_err());
        }
    }
}
