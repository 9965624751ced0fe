//! The login page. It works without JavaScript (a plain form POST that the server answers
//! with a redirect); once hydrated it posts JSON and shows errors inline.

use leptos::prelude::*;

#[component]
pub fn LoginPage() -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let username = NodeRef::<leptos::html::Input>::new();
    let password = NodeRef::<leptos::html::Input>::new();
    let totp = NodeRef::<leptos::html::Input>::new();
    // Shown once the server says the account has a second factor.
    let needs_totp = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    let navigate = leptos_router::hooks::use_navigate();
    // While the operator types, get the dashboard's code compiled (see `warm_up`).
    #[cfg(feature = "hydrate")]
    Effect::new(|_| crate::warm_up::when_idle());

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        #[cfg(feature = "hydrate")]
        {
            ev.prevent_default();
            let (Some(user), Some(pass)) = (username.get(), password.get()) else {
                return;
            };
            let body = protocol::api::LoginRequest {
                username: user.value(),
                password: pass.value(),
                totp: totp.get().map(|t| t.value()).filter(|v| !v.is_empty()),
                next: None,
            };
            pending.set(true);
            error.set(None);
            let navigate = navigate.clone();
            leptos::task::spawn_local(async move {
                let answer = post_login(&body).await;
                pending.set(false);
                let refusal = match answer {
                    // Straight into the dashboard without reloading the app: the session
                    // cookie is set; the page learns its CSRF token and role here, as a
                    // server-rendered page would from the shell's meta tags.
                    Ok(Ok(login)) => {
                        set_meta("csrf-token", &login.csrf_token);
                        set_meta("viewer-role", login.role.as_str());
                        crate::components::theme::apply_theme(login.theme);
                        // The session cookie is set: the snapshot can travel while the
                        // dashboard is built.
                        crate::socket::preconnect();
                        navigate("/", Default::default());
                        return;
                    }
                    Ok(Err(refusal)) => refusal,
                    Err(e) => {
                        error.set(Some(format!("Cannot reach the dashboard: {e}")));
                        return;
                    }
                };
                match (refusal.0, refusal.1.as_str()) {
                    // Logged in, but the answer was not understood: load the page afresh.
                    (200, _) => {
                        let _ = window().location().set_href("/");
                    }
                    (401, "totp_required") => {
                        needs_totp.set(true);
                        error.set(Some(
                            "Enter the code from your authenticator app, or a recovery code."
                                .into(),
                        ));
                    }
                    (401, _) if needs_totp.get_untracked() => {
                        error.set(Some("Wrong username, password or code.".into()))
                    }
                    (401, _) => error.set(Some("Wrong username or password.".into())),
                    (429, _) => error.set(Some(
                        "Too many attempts. Wait a minute and try again.".into(),
                    )),
                    (status, _) => error.set(Some(format!("Login failed (HTTP {status})."))),
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (ev, username, password, totp, needs_totp);
    };

    view! {
        <main class="login">
            <form class="login-form" method="post" action="/api/login" on:submit=on_submit>
                <h1 class="brand">"nixdeck"</h1>
                <label>
                    "Username"
                    <input name="username" node_ref=username autocomplete="username" required />
                </label>
                <label>
                    "Password"
                    <input
                        name="password"
                        type="password"
                        node_ref=password
                        autocomplete="current-password"
                        required
                    />
                </label>
                <Show when=move || needs_totp.get()>
                    <label>
                        "Code"
                        <input name="totp" node_ref=totp inputmode="numeric" autocomplete="one-time-code" autofocus />
                    </label>
                </Show>
                <input type="hidden" name="next" value="/" />
                <button type="submit" disabled=move || pending.get()>
                    {move || if pending.get() { "Logging in…" } else { "Log in" }}
                </button>
                <p class="form-error" role="alert">
                    {move || error.get()}
                </p>
            </form>
        </main>
    }
}

/// POST `/api/login`: the session's CSRF token and role, or the refusal's status and
/// error code.
#[cfg(feature = "hydrate")]
async fn post_login(
    body: &protocol::api::LoginRequest,
) -> Result<Result<protocol::api::LoginResponse, (u16, String)>, gloo_net::Error> {
    let resp = gloo_net::http::Request::post("/api/login")
        .json(body)?
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    Ok(match serde_json::from_str(&text) {
        Ok(login) if status == 200 => Ok(login),
        _ => Err((
            status,
            serde_json::from_str::<protocol::api::ApiError>(&text)
                .map(|e| e.code)
                .unwrap_or_default(),
        )),
    })
}

/// Set (or add) `<meta name=… content=…>` in the document's head.
#[cfg(feature = "hydrate")]
fn set_meta(name: &str, content: &str) {
    let doc = document();
    let meta = doc
        .query_selector(&format!("meta[name={name}]"))
        .ok()
        .flatten()
        .or_else(|| {
            let meta = doc.create_element("meta").ok()?;
            let _ = meta.set_attribute("name", name);
            doc.head()?.append_child(&meta).ok()?;
            Some(meta)
        });
    if let Some(meta) = meta {
        let _ = meta.set_attribute("content", content);
    }
}
