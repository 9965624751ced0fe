#!/usr/bin/env bash
# How long another server takes to lead once the leader is stopped (docs/SCALING.md,
# "Takeover times"; figures in docs/BENCHMARKS.md). Two `nixdeck` servers (the debug
# build, target/debug/nixdeck) on a new database of the PostgreSQL server in
# NIXDECK_TEST_POSTGRES_URL (`scripts/pg.sh start`), default settings; the first one to
# start leads. It is stopped with SIG (default KILL: a crash; TERM: a shutdown, which lets
# go of its leases) and the time until the other logs that it leads is printed. RUNS
# (default 3) rounds; ports 3621 and 3622.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${NIXDECK_TEST_POSTGRES_URL:?set it: export NIXDECK_TEST_POSTGRES_URL=\$(scripts/pg.sh start)}
BIN=${NIXDECK_BIN:-$PWD/target/debug/nixdeck}
SIG=${SIG:-KILL}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for _ in $(seq "${RUNS:-3}"); do
    NAME=lease_takeover_$RANDOM$RANDOM
    psql -X -q -d "$PG" -c "CREATE DATABASE $NAME"
    URL=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$PG" "$NAME")
    export NIXDECK_DATABASE_URL=$URL NIXDECK_SECRET_KEY_FILE=$WORK/secret.key-$NAME \
        NIXDECK_ADMIN_PASSWORD=takeover-password-1 RUST_LOG=info
    NIXDECK_LISTEN=127.0.0.1:3621 "$BIN" >/dev/null 2>"$WORK/a.log" & A=$!
    until grep -qs 'leading: this' "$WORK/a.log"; do sleep 0.05; done
    NIXDECK_LISTEN=127.0.0.1:3622 "$BIN" >/dev/null 2>"$WORK/b.log" & B=$!
    until grep -qs 'leases taken' "$WORK/b.log"; do sleep 0.05; done
    T0=$(date +%s.%N)
    kill "-$SIG" "$A"
    until grep -q 'leading: this' "$WORK/b.log"; do sleep 0.05; done
    T1=$(date +%s.%N)
    awk -v s="$SIG" -v a="$T0" -v b="$T1" 'BEGIN { printf "SIG%s: the other server leads after %.2f s\n", s, b - a }'
    kill -TERM "$B"
    wait "$A" "$B" 2>/dev/null || true
    psql -X -q -d "$PG" -c "DROP DATABASE $NAME"
done
