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
                let result = match gloo_net::http::Request::post("/api/login").json(&body) {
                    Ok(req) => match req.send().await {
                        Ok(resp) => Ok((resp.status(), resp.text().await.unwrap_or_default())),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let code = |body: &str| {
                    serde_json::from_str::<protocol::api::ApiError>(body)
                        .map(|e| e.code)
                        .unwrap_or_default()
                };
                let result = result.map(|(status, body)| match status {
                    200 => (200, body),
                    _ => (status, code(&body)),
                });
                pending.set(false);
                match result
                    .as_ref()
                    .map(|(status, code)| (*status, code.as_str()))
                {
                    // Straight into the dashboard without reloading the app: the session
                    // cookie is set; the page learns its CSRF token and role here, as a
                    // server-rendered page would from the shell's meta tags.
                    Ok((200, body)) => {
                        match serde_json::from_str::<protocol::api::LoginResponse>(body) {
                            Ok(login) => {
                                set_meta("csrf-token", &login.csrf_token);
                                set_meta("viewer-role", &login.role);
                                navigate("/", Default::default());
                            }
                            Err(_) => {
                                let _ = window().location().set_href("/");
                            }
                        }
                    }
                    Ok((401, "totp_required")) => {
                        needs_totp.set(true);
                        error.set(Some(
                            "Enter the code from your authenticator app, or a recovery code."
                                .into(),
                        ));
                    }
                    Ok((401, _)) if needs_totp.get_untracked() => {
                        error.set(Some("Wrong username, password or code.".into()))
                    }
                    Ok((401, _)) => error.set(Some("Wrong username or password.".into())),
                    Ok((429, _)) => error.set(Some(
                        "Too many attempts. Wait a minute and try again.".into(),
                    )),
                    Ok((status, _)) => error.set(Some(format!("Login failed (HTTP {status})."))),
                    Err(e) => error.set(Some(format!("Cannot reach the dashboard: {e}"))),
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
