//! User accounts: roles, passwords, disabling. The functions over a `Db` and an actor name
//! serve the CLI (`nixdeck user …`, actor `cli`, no address); the ones over a `Core` and a
//! `Viewer` serve the Users page, check the admin role first, and audit the viewer's
//! address.

use super::auth::{check_password_rules, generate_password, hash_password};
use super::{audit, require_admin, OrInternal, Result};
use crate::storage::{is_unique_violation, Db, UserRow};
use crate::Core;
use common::{AppError, Viewer};
use protocol::api::{Role, Theme, UserInfo};

pub fn check_username(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid(
            "A username has 1 to 64 characters: lower-case letters, digits, '.', '_' and '-'."
                .into(),
        ))
    }
}

pub fn parse_role(role: &str) -> Result<Role> {
    Role::parse(role).ok_or_else(|| {
        AppError::Invalid(format!(
            "Unknown role {role:?}; use viewer, operator or admin."
        ))
    })
}

/// The given password after the rules, or a generated one (and whether it was generated).
pub fn password_or_generated(given: Option<String>) -> Result<(String, bool)> {
    match given {
        Some(p) => {
            check_password_rules(&p)?;
            Ok((p, false))
        }
        None => Ok((generate_password(), true)),
    }
}

/// Each change is audited with `actor` (a username, or `cli`) and no address: the CLI's
/// doors. The Users page's (`add_by` and the others below) pass the viewer's address.
pub async fn add(db: &Db, actor: &str, username: &str, role: &str, password: &str) -> Result<()> {
    add_from(db, actor, None, username, role, password).await
}

/// `add`, audited with the address the change came from.
async fn add_from(
    db: &Db,
    actor: &str,
    ip: Option<&str>,
    username: &str,
    role: &str,
    password: &str,
) -> Result<()> {
    let result = insert(db, username, role, password).await;
    audit::write(
        db,
        actor,
        ip,
        "user.add",
        Some(username),
        audit::outcome(&result),
        Some(format!("role {role}")),
    )
    .await;
    result
}

async fn insert(db: &Db, username: &str, role: &str, password: &str) -> Result<()> {
    check_username(username)?;
    let role = parse_role(role)?;
    check_password_rules(password)?;
    let hash = hash_password(password.to_owned()).await?;
    match db.insert_user(username, &hash, role.as_str()).await {
        Ok(()) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(AppError::conflict(
            "exists",
            format!("User {username} already exists."),
        )),
        Err(e) => Err(e).or_internal("adding user"),
    }
}

/// A new password; every session of the user ends.
pub async fn set_password(db: &Db, actor: &str, username: &str, password: &str) -> Result<()> {
    set_password_from(db, actor, None, username, password).await
}

async fn set_password_from(
    db: &Db,
    actor: &str,
    ip: Option<&str>,
    username: &str,
    password: &str,
) -> Result<()> {
    let result = change_password(db, username, password).await;
    audit::write(
        db,
        actor,
        ip,
        "user.passwd",
        Some(username),
        audit::outcome(&result),
        None,
    )
    .await;
    result
}

async fn change_password(db: &Db, username: &str, password: &str) -> Result<()> {
    check_password_rules(password)?;
    let hash = hash_password(password.to_owned()).await?;
    if !db
        .set_password(username, &hash)
        .await
        .or_internal("setting password")?
    {
        return Err(AppError::NotFound(format!("user {username}")));
    }
    db.delete_sessions_of(username)
        .await
        .or_internal("ending sessions")?;
    Ok(())
}

/// Disable (sessions end at once, and open sockets close within 5 s) or enable a user.
pub async fn set_disabled(db: &Db, actor: &str, username: &str, disabled: bool) -> Result<()> {
    set_disabled_from(db, actor, None, username, disabled).await
}

async fn set_disabled_from(
    db: &Db,
    actor: &str,
    ip: Option<&str>,
    username: &str,
    disabled: bool,
) -> Result<()> {
    let result = change_disabled(db, username, disabled).await;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    audit::write(
        db,
        actor,
        ip,
        action,
        Some(username),
        audit::outcome(&result),
        None,
    )
    .await;
    result
}

async fn change_disabled(db: &Db, username: &str, disabled: bool) -> Result<()> {
    if !db
        .set_disabled(username, disabled)
        .await
        .or_internal("updating user")?
    {
        return Err(AppError::NotFound(format!("user {username}")));
    }
    if disabled {
        db.delete_sessions_of(username)
            .await
            .or_internal("ending sessions")?;
    }
    Ok(())
}

pub async fn list(db: &Db) -> Result<Vec<(UserRow, i64)>> {
    db.users().await.or_internal("listing users")
}

/// Every user, for the Users page (admins only).
pub async fn list_for(core: &Core, viewer: &Viewer) -> Result<Vec<UserInfo>> {
    require_admin(viewer)?;
    Ok(list(&core.db)
        .await?
        .into_iter()
        .map(|(u, created)| UserInfo {
            role: super::stored_role(&u.username, &u.role),
            username: u.username,
            disabled: u.disabled,
            created_at: protocol::Timestamp(created),
        })
        .collect())
}

/// Add a user from the Users page (admins only).
pub async fn add_by(
    core: &Core,
    viewer: &Viewer,
    username: &str,
    role: &str,
    password: &str,
) -> Result<()> {
    require_admin(viewer)?;
    super::auth::require_recent_auth(core, viewer)?;
    add_from(
        &core.db,
        &viewer.username,
        viewer.ip.as_deref(),
        username,
        role,
        password,
    )
    .await
}

/// Disable or enable a user from the Users page (admins only; never oneself).
pub async fn set_disabled_by(
    core: &Core,
    viewer: &Viewer,
    username: &str,
    disabled: bool,
) -> Result<()> {
    require_admin(viewer)?;
    super::auth::require_recent_auth(core, viewer)?;
    if disabled && username == viewer.username {
        return Err(AppError::Invalid("You cannot disable yourself.".into()));
    }
    set_disabled_from(
        &core.db,
        &viewer.username,
        viewer.ip.as_deref(),
        username,
        disabled,
    )
    .await
}

/// A new generated password, shown once (admins only); the user's sessions end.
pub async fn reset_password(core: &Core, viewer: &Viewer, username: &str) -> Result<String> {
    require_admin(viewer)?;
    super::auth::require_recent_auth(core, viewer)?;
    let password = generate_password();
    set_password_from(
        &core.db,
        &viewer.username,
        viewer.ip.as_deref(),
        username,
        &password,
    )
    .await?;
    Ok(password)
}

/// The colour theme the pages use for `username`: the stored one, `system` for a name
/// with no row, or one the database holds that this build does not know.
pub async fn theme(core: &Core, username: &str) -> Result<Theme> {
    let stored = core
        .db
        .user_theme(username)
        .await
        .or_internal("reading the theme")?;
    Ok(stored.and_then(|t| Theme::parse(&t)).unwrap_or_default())
}

/// Keep the viewer's own colour theme (any role: it changes nothing but their pages).
pub async fn set_theme(core: &Core, viewer: &Viewer, theme: Theme) -> Result<Theme> {
    let found = core
        .db
        .set_user_theme(&viewer.username, theme.as_str())
        .await
        .or_internal("setting the theme")?;
    if !found {
        return Err(AppError::NotFound(format!("user {}", viewer.username)));
    }
    Ok(theme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("Alice").is_err());
        assert!(check_username("").is_err());
        assert!(check_username("a b").is_err());
        for role in Role::ALL {
            assert_eq!(parse_role(role.as_str()).ok(), Some(role));
        }
        assert!(parse_role("root").is_err());
        assert!(parse_role("Admin").is_err(), "wire names only");
        assert!(password_or_generated(Some("short".into())).is_err());
        let (p, generated) = password_or_generated(None).unwrap();
        assert!(generated && p.len() >= 12);
    }
}
