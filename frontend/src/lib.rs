//! The wasm entry: hydrate the server-rendered page. Everything else lives in `app`.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // The lazy variant: pages in separate wasm chunks (`Lazy` routes) hydrate once their
    // chunk has loaded.
    leptos::mount::hydrate_lazy(app::App);
}
