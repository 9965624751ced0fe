# Sourced by the benchmarks that drive one dashboard through its REST API as the admin
# (bench/nix.sh, bench/agent_memory.sh): the dashboard's start, the login, the API calls,
# and stopping what they started. Expects PORT, OUT and bin (the directory of the
# binaries); sets url, password, pids (append the agents' pids) and server_pid.

url="http://127.0.0.1:$PORT"
password=bench-admin-password
pids=()
server_pid=

bench_cleanup() {
  for p in "${pids[@]}" $server_pid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap bench_cleanup EXIT

# The dashboard on a fresh SQLite database in $OUT, asking for a heartbeat every 5 s;
# returns once /healthz answers (or after 30 s: the first API call then says what is wrong).
start_dashboard() {
  NIXDECK_LISTEN="127.0.0.1:$PORT" NIXDECK_DATABASE_URL="sqlite://$OUT/bench.db" \
    NIXDECK_ADMIN_PASSWORD="$password" NIXDECK_HEARTBEAT_INTERVAL_S=5 \
    NIXDECK_SITE_ROOT=target/site RUST_LOG=warn \
    "$bin/nixdeck" >>"$OUT/nixdeck.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do curl -sf -o /dev/null "$url/healthz" && break; sleep 0.1; done
}

# Signs in as the admin: the session's cookie in $jar, its CSRF token in $csrf.
login() {
  jar="$OUT/cookies"
  csrf=$(curl -sf -c "$jar" -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$password\"}" "$url/api/login" |
    field 'd["csrf_token"]')
}

api() { # method path [json]
  curl -sf -b "$jar" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
    -H "Origin: $url" -X "$1" "$url$2" ${3:+-d "$3"}
}

# A Python expression of the JSON on stdin, `d`.
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
