# The two commands of the README. Everything else lives in scripts/.
.PHONY: run test setup fmt lint

run:
	scripts/run.sh

test:
	scripts/test.sh

setup:
	scripts/setup.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy -p protocol -p nixdeck -p nixdeck-agent --all-targets -- -D warnings
	cargo clippy -p app --features hydrate --target wasm32-unknown-unknown -- -D warnings
	cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings
