# The two commands of the README. Everything else lives in scripts/.
.PHONY: run test setup fmt lint bench bench-browser

run:
	scripts/run.sh

test:
	scripts/test.sh

setup:
	scripts/setup.sh

# The benchmarks of docs/BENCHMARKS.md (release builds; figures only, never a pass/fail on timing).
# Sizes: AGENTS, BROWSERS, DURATION (see docs/BENCHMARKS.md).
bench:
	bench/run.sh
	cargo bench -p nixdeck --bench figures

# P4 (login → dashboard) and P3 in headless Chromium, on a release build.
bench-browser:
	bench/browser.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy -p protocol -p common -p nixdeck-core -p app -p nixdeck -p nixdeck-agent -p testkit -p fleet-sim --all-targets -- -D warnings
	cargo clippy -p app --features hydrate --target wasm32-unknown-unknown -- -D warnings
	cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings
