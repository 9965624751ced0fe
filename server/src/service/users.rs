//! User accounts: roles, passwords, disabling. Shared by the CLI (and a Users page later).

use super::auth::{check_password_rules, generate_password, hash_password};
use super::{audit, OrInternal, Result};
use crate::storage::{is_unique_violation, Db, UserRow};
use app::AppError;

pub const ROLES: [&str; 3] = ["viewer", "operator", "admin"];

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

pub fn check_role(role: &str) -> Result<()> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(AppError::Invalid(format!(
            "Unknown role {role:?}; use viewer, operator or admin."
        )))
    }
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

/// Each change is audited with `actor` (a username, or `cli`).
pub async fn add(db: &Db, actor: &str, username: &str, role: &str, password: &str) -> Result<()> {
    let result = insert(db, username, role, password).await;
    audit::write(
        db,
        actor,
        None,
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
    check_role(role)?;
    check_password_rules(password)?;
    let hash = hash_password(password.to_owned()).await?;
    match db.insert_user(username, &hash, role).await {
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
    let result = change_password(db, username, password).await;
    audit::write(
        db,
        actor,
        None,
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
    let result = change_disabled(db, username, disabled).await;
    let action = if disabled {
        "user.disable"
    } else {
        "user.enable"
    };
    audit::write(
        db,
        actor,
        None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("Alice").is_err());
        assert!(check_username("").is_err());
        assert!(check_username("a b").is_err());
        assert!(check_role("viewer").is_ok());
        assert!(check_role("root").is_err());
        assert!(password_or_generated(Some("short".into())).is_err());
        let (p, generated) = password_or_generated(None).unwrap();
        assert!(generated && p.len() >= 12);
    }
}
