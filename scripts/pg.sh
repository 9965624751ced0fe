#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests: `scripts/pg.sh start` makes a new cluster in
# a temporary folder, starts it listening on a Unix socket in that folder only (no TCP
# port, so it never clashes with another server or another run), and prints its URL;
# `scripts/pg.sh stop URL` (or `stop` with NIXDECK_TEST_POSTGRES_URL set) stops it and
# removes the folder. The tests make a database of their own on it
# (core/src/storage/testing.rs). scripts/setup.sh installs PostgreSQL.
#
#   export NIXDECK_TEST_POSTGRES_URL=$(scripts/pg.sh start)
#   cargo test -p nixdeck-core storage
#   scripts/pg.sh stop
#
# Durability is off (fsync, synchronous_commit, full_page_writes): the cluster lives for
# one test run, and each test creates a database, which would otherwise wait on fsync.
# Each test database is a copy of template1, about 10 MB: `make test` leaves some 2 GB in
# the folder until `stop` removes it.
set -euo pipefail

# Debian keeps the server's programs off PATH, in /usr/lib/postgresql/VERSION/bin (the
# newest wins); elsewhere (a Nix shell, another distribution) they are on PATH.
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$bin" ] && command -v initdb >/dev/null; then
  bin=$(dirname "$(command -v initdb)")
fi
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "pg.sh: PostgreSQL is not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi

# initdb and postgres refuse to run as root: as root, run them as the `postgres` user that
# Debian's package creates.
as_owner=()
if [ "$(id -u)" = 0 ]; then
  as_owner=(runuser -u postgres --)
fi

case "${1:-}" in
  start)
    dir=$(mktemp -d /tmp/nixdeck-pg.XXXXXX)
    chmod 755 "$dir"
    [ ${#as_owner[@]} -gt 0 ] && chown postgres: "$dir"
    "${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
      --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c max_connections=300 \
          -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      start >/dev/null || {
      cat "$dir/server.log" >&2
      exit 1
    }
    echo "postgres://postgres@localhost/postgres?host=$dir"
    ;;
  stop)
    url="${2:-${NIXDECK_TEST_POSTGRES_URL:-}}"
    dir="${url##*host=}"
    dir="${dir%%&*}"
    case "$dir" in
      /tmp/nixdeck-pg.*) ;;
      *)
        echo "pg.sh stop: not a URL that pg.sh start printed: $url" >&2
        exit 1
        ;;
    esac
    if [ -d "$dir/data" ]; then
      "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: scripts/pg.sh start | stop [URL]" >&2
    exit 2
    ;;
esac
