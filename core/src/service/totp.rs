//! Optional TOTP (RFC 6238) per user: enrollment with a QR code, a confirming code, codes
//! accepted once (the last used step is stored), and hashed single-use recovery codes.

use super::{OrInternal, Result};
use crate::secret::{new_token, sha256_hex};
use crate::storage::Db;
use crate::Core;
use common::AppError;
use common::Viewer;
use protocol::api::{RecoveryCodes, TotpSetup};
use protocol::Timestamp;
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

/// Start (or restart) enrollment: a new secret waits for its first code.
pub async fn setup(core: &Core, viewer: &Viewer) -> Result<TotpSetup> {
    let result = new_secret(core, viewer).await;
    super::audit::record(core, viewer, "totp.setup", None, result).await
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
        .set_totp_pending(&viewer.username, &secret)
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

/// Confirm enrollment with a first code; answers the recovery codes, shown once.
pub async fn confirm(core: &Core, viewer: &Viewer, code: &str) -> Result<RecoveryCodes> {
    let result = enable(core, viewer, code).await;
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
    let hashes: Vec<String> = codes.iter().map(|c| sha256_hex(c)).collect();
    core.db
        .confirm_totp(&viewer.username, step, &hashes)
        .await
        .or_internal("enabling TOTP")?;
    Ok(RecoveryCodes {
        recovery_codes: codes,
    })
}

/// At login, after the password: does this account need a second factor, and is `code`
/// it? A TOTP step is accepted once; a recovery code once.
pub async fn second_factor(db: &Db, username: &str, code: Option<&str>) -> Result<()> {
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
        let known = db
            .use_recovery_code(username, &sha256_hex(code))
            .await
            .or_internal("checking a recovery code")?;
        return if known {
            Ok(())
        } else {
            Err(AppError::Unauthorized)
        };
    }
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
