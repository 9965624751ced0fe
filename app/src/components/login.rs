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
            leptos::task::spawn_local(async move {
                let result = match gloo_net::http::Request::post("/api/login").json(&body) {
                    Ok(req) => match req.send().await {
                        Ok(resp) => {
                            let code = resp
                                .json::<protocol::api::ApiError>()
                                .await
                                .map(|e| e.code)
                                .unwrap_or_default();
                            Ok((resp.status(), code))
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                pending.set(false);
                match result
                    .as_ref()
                    .map(|(status, code)| (*status, code.as_str()))
                {
                    Ok((200, _)) => {
                        let _ = window().location().set_href("/");
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
