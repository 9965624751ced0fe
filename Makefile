# The two commands of the README. Everything else lives in scripts/.
.PHONY: run test setup fmt lint deny bench bench-browser screenshots

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

# The README's pictures (docs/screenshots/), from the real app; not part of `make test`.
screenshots:
	scripts/screenshots.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy -p protocol -p common -p nixdeck-core -p app -p nixdeck -p nixdeck-agent -p testkit -p fleet-sim --all-targets -- -D warnings
	cargo clippy -p app --features hydrate --target wasm32-unknown-unknown -- -D warnings
	cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings

# Supply chain (deny.toml; docs/SECURITY.md, "Supply chain"): licenses, bans and sources
# always; RustSec advisories only where a local copy of the advisory database is, because
# it is a git repository on GitHub and CI and the dev machines reach only package
# registries. DENY_FETCH=1 clones or updates it first (where GitHub is reachable) and then
# requires it. A copy older than 90 days fails the check rather than pass on old news.
ADVISORY_DBS := $(or $(CARGO_HOME),$(HOME)/.cargo)/advisory-dbs
deny:
	cargo deny --locked check --hide-inclusion-graph licenses bans sources
	@if [ -n "$(DENY_FETCH)" ]; then cargo deny fetch db; fi
	@if ls -d $(ADVISORY_DBS)/advisory-db-*/crates >/dev/null 2>&1; then \
	  echo "cargo deny --offline --locked check advisories"; \
	  cargo deny --offline --locked check advisories; \
	else \
	  echo "deny: RustSec advisories NOT checked: no advisory database in $(ADVISORY_DBS)"; \
	  echo "      (make deny DENY_FETCH=1 where GitHub is reachable; docs/SECURITY.md)"; \
	fi
