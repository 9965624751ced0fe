//! The wasm entry: hydrate the server-rendered page. Everything else lives in `app`.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // The lazy variant: pages in separate wasm chunks (`Lazy` routes) hydrate once their
    // chunk has loaded.
    leptos::mount::hydrate_lazy(app::App);
}

/// Room in the read-only data segment for the split (`cargo leptos build --split`). The
/// splitter gives each wasm chunk its own part of `.rodata`, each part padded to its
/// alignment, and keeps the whole segment in `nixdeck.wasm` when the parts no longer fit in
/// the original segment, which moved every chunk's strings into the first download (14 kB
/// brotli; docs/BENCHMARKS.md, "why a lazy page cost 14 kB"). No code reads these bytes, so
/// the splitter places them in no part, and they are that room; `#[used]` keeps the linker
/// from dropping them. `scripts/wasm-size.sh` fails when the fallback happens again.
#[used]
static SPLIT_ROOM: [u8; 8192] = [0; 8192];
