//! The login page. It works without JavaScript (a plain form POST that the server answers
//! with a redirect); once hydrated it posts JSON and shows errors inline.

use leptos::prelude::*;

#[component]
pub fn LoginPage() -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let username = NodeRef::<leptos::html::Input>::new();
    let password = NodeRef::<leptos::html::Input>::new();

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
                totp: None,
                next: None,
            };
            pending.set(true);
            error.set(None);
            leptos::task::spawn_local(async move {
                let result = match gloo_net::http::Request::post("/api/login").json(&body) {
                    Ok(req) => req.send().await.map(|r| r.status()),
                    Err(e) => Err(e),
                };
                pending.set(false);
                match result {
                    Ok(200) => {
                        let _ = window().location().set_href("/");
                    }
                    Ok(401) => error.set(Some("Wrong username or password.".into())),
                    Ok(429) => error.set(Some(
                        "Too many attempts. Wait a minute and try again.".into(),
                    )),
                    Ok(status) => error.set(Some(format!("Login failed (HTTP {status})."))),
                    Err(e) => error.set(Some(format!("Cannot reach the dashboard: {e}"))),
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (ev, username, password);
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
