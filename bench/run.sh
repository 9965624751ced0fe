#!/usr/bin/env bash
# The server benchmarks of docs/BENCHMARKS.md (`make bench`): fleet-sim against nixdeck and against the raw
# relay, then memory per idle agent socket and a reconnect storm. Prints figures; never
# fails on them.
#
#   AGENTS=10000 BROWSERS=100 DURATION=60 bench/run.sh
#   STEPS="p1 relay" AGENTS=500 BROWSERS=10 DURATION=20 bench/run.sh   # a subset
#   PROCS=3 AGENTS=40000 …   fleet-sim as 3 processes (each under the open-file limit), each
#                            with a third of the agents and browsers, their measured windows
#                            aligned, one merged report ($OUT/<step>.json; fleet-sim merge)
#   STEPS=ext URLS=http://127.0.0.1:3951,http://127.0.0.1:3952 SERVER_PIDS=pid1,pid2 …
#                            fleet-sim against dashboards started by you (replicas of one
#                            dashboard: agents and browsers spread over them round-robin);
#                            start them with NIXDECK_ADMIN_PASSWORD=bench-admin-password,
#                            NIXDECK_ENROLL_TOKEN=bench-enroll-token-0123456789abcdef,
#                            NIXDECK_ENROLL_TOKEN_USES=0, NIXDECK_MAX_SOCKETS_PER_USER above
#                            the browsers; SERVER_PIDS (optional) are sampled for CPU and RSS,
#                            DB_PID (optional: PostgreSQL's postmaster) for the CPU of it and
#                            its connections; AGENT_URLS (optional) gives the agents their own
#                            URL list, each agent starting at the first (fleet-sim --agent-url)
#   STEPS=ext-storm … STORM_CMD='kill -9 PID'   the same, and once the fleet is steady runs
#                            STORM_CMD and times until every agent is registered again (a
#                            replica's failover: bench/replicas.sh); STORM_HOLD_S (default
#                            0): the fleet stays connected that long after, while STORM_CMD
#                            still reads the dashboards
#   RAMP=100 …               handshakes in flight per fleet-sim process while the fleet first
#                            connects (default 500): new agents enroll one at a time
#   PROFILE=debug …          the debug binaries (a quick try of the script; not the figures)
#
# Steps: p1 (nixdeck), relay (raw-relay, same sizes), slow (nixdeck, SLOW_PCT % of the
# browsers stop reading), p2 (RSS with no agents vs AGENTS idle agents), storm (restart
# the server under AGENTS connected agents, time until all are registered again), history
# (the p1 load with NIXDECK_HISTORY off and on, alternated HISTORY_ROUNDS times, default 2:
# the metrics history's share of the server's CPU; HISTORY_BROWSERS browsers, default 0, so
# that only ingest is measured; DURATION=600 or more holds one write of the coarser tiers,
# which happens every 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS=${AGENTS:-10000}
BROWSERS=${BROWSERS:-100}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-10}
SLOW_PCT=${SLOW_PCT:-5}
STEPS=${STEPS:-"p1 relay slow p2 storm"}
PROCS=${PROCS:-1}
PROFILE=${PROFILE:-release}
PORT=${PORT:-3950}
RELAY_PORT=${RELAY_PORT:-3960}
OUT=${OUT:-$(mktemp -d /tmp/nixdeck-bench.XXXXXX)}
mkdir -p "$OUT"

# Each agent is a socket in the server and in fleet-sim (a PROCS-th of them in each of its
# processes); the dashboards of STEPS=ext are not started here.
ulimit -n "$(ulimit -Hn)"
need=$(((AGENTS + BROWSERS) / PROCS + 256))
[[ " $STEPS " =~ \ (p1|relay|slow|p2|storm|history)\  ]] && need=$((AGENTS + BROWSERS + 256))
if [ "$(ulimit -n)" -lt "$need" ]; then
  echo "open-file limit $(ulimit -n) is below the $need sockets and files needed; raise the hard limit (or PROCS)" >&2
  exit 1
fi

if [ "$PROFILE" = release ]; then
  cargo build --release -p nixdeck -p fleet-sim
else
  cargo build -p nixdeck -p fleet-sim
fi
bin=target/$PROFILE

url="http://127.0.0.1:$PORT"
password=bench-admin-password
enroll=bench-enroll-token-0123456789abcdef
tokens="$OUT/tokens.json"
server_pid=

start_nixdeck() { # $1: heartbeat interval the server asks for
  # fleet-sim's browsers are all one user (the admin): the per-user socket cap must not
  # refuse them; its agents enroll themselves, ten thousand of them.
  NIXDECK_MAX_SOCKETS_PER_USER=$((BROWSERS + 16)) NIXDECK_ENROLL_TOKEN_USES=0 \
  NIXDECK_LISTEN="127.0.0.1:$PORT" NIXDECK_DATABASE_URL="sqlite://$OUT/bench.db" \
    NIXDECK_ADMIN_PASSWORD="$password" NIXDECK_ENROLL_TOKEN="$enroll" \
    NIXDECK_HEARTBEAT_INTERVAL_S="$1" NIXDECK_SITE_ROOT=target/site RUST_LOG=warn,nixdeck::http::ws_browser=info \
    $bin/nixdeck >>"$OUT/nixdeck.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "$url/healthz" && return 0
    sleep 0.1
  done
  echo "nixdeck did not start; see $OUT/nixdeck.log" >&2
  exit 1
}

start_relay() { # $1: heartbeat interval
  $bin/raw-relay --listen "127.0.0.1:$RELAY_PORT" --heartbeat-interval-s "$1" \
    >>"$OUT/relay.log" 2>&1 &
  server_pid=$!
  sleep 0.5
}

stop_server() {
  [ -n "$server_pid" ] || return 0
  kill "$server_pid" 2>/dev/null || true
  # Graceful first (nixdeck saves last-seen data on SIGTERM); never hang the run.
  for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
trap stop_server EXIT

# `browsers=0 sim name …` etc. override the sizes for one run. With PROCS > 1, fleet-sim
# runs as PROCS shards (`--shard P/PROCS`), each with its own tokens file, the server
# sampled by shard 0 only; `fleet-sim merge` makes $OUT/$name.json of their reports.
sim() { # $1: output name; the rest: extra fleet-sim flags
  local name=$1
  shift
  local b=${browsers:-$BROWSERS} d=${duration:-$DURATION} w=${warmup:-$WARMUP} i=${interval:-5}
  local pids_flag=${sample_pids:-$server_pid}
  local sampled=()
  [ -n "$pids_flag" ] && sampled+=(--server-pid "$pids_flag")
  [ -n "${sample_db:-}" ] && sampled+=(--db-pid "$sample_db")
  local args=(--json --url "$url" --agents "$AGENTS" --browsers "$b" --duration-s "$d"
    --warmup-s "$w" --interval-s "$i" --enroll-token "$enroll" --ramp "${RAMP:-500}")
  echo "== $name: fleet-sim ${args[*]:1} (PROCS=$PROCS) $*" >&2
  if [ "$PROCS" = 1 ]; then
    NIXDECK_ADMIN_PASSWORD="$password" $bin/fleet-sim "${args[@]}" --tokens-file "$tokens" \
      "${sampled[@]}" "$@" >"$OUT/$name.json"
    return
  fi
  rm -rf "$OUT/sync-$name" "$OUT/$name"-[0-9]*.json
  local p shards=()
  for p in $(seq 0 $((PROCS - 1))); do
    NIXDECK_ADMIN_PASSWORD="$password" $bin/fleet-sim "${args[@]}" --shard "$p/$PROCS" \
      --sync-dir "$OUT/sync-$name" --samples-file "$OUT/$name-$p.samples" \
      --tokens-file "$OUT/tokens-$p.json" "${sampled[@]}" "$@" >"$OUT/$name-$p.json" &
    shards+=($!)
    sampled=() # the server is sampled by shard 0 only
  done
  for p in "${shards[@]}"; do wait "$p"; done
  $bin/fleet-sim merge --json "$OUT/$name"-[0-9]*.json >"$OUT/$name.json"
  rm -f "$OUT/$name"-[0-9]*.samples
}

has() { [[ " $STEPS " == *" $1 "* ]]; }

# Waits until every shard of a `--storm` run is steady (`ready`, or `ready.P` for each of
# PROCS shards).
wait_ready() {
  for _ in $(seq 1 6000); do
    [ "$(find "$OUT" -maxdepth 1 -name 'ready*' | wc -l)" -ge "$PROCS" ] && return 0
    sleep 0.1
  done
}

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB; $(date -u +%Y-%m-%dT%H:%MZ); results in $OUT" >&2

if has p1; then
  start_nixdeck 5
  sim nixdeck
  stop_server
fi

if has history; then
  for round in $(seq 1 "${HISTORY_ROUNDS:-2}"); do
    for h in false true; do
      NIXDECK_HISTORY=$h start_nixdeck 5
      browsers=${HISTORY_BROWSERS:-0} sim "history-$h-$round"
      stop_server
    done
  done
fi

if has ext || has ext-storm; then
  [ -n "${URLS:-}" ] || { echo "STEPS=ext needs URLS (the dashboards to aim at)" >&2; exit 1; }
  url_saved=$url
  url=$URLS
  ext_flags=(${AGENT_URLS:+--agent-url "$AGENT_URLS"})
  if has ext; then
    sample_pids=${SERVER_PIDS:-} sample_db=${DB_PID:-} sim external "${ext_flags[@]}"
  fi
  if has ext-storm; then
    [ -n "${STORM_CMD:-}" ] || { echo "STEPS=ext-storm needs STORM_CMD" >&2; exit 1; }
    rm -f "$OUT"/ready*
    sample_pids=${SERVER_PIDS:-} sample_db=${DB_PID:-} \
      sim external-storm "${ext_flags[@]}" --storm --ready-file "$OUT/ready" \
      --storm-hold-s "${STORM_HOLD_S:-0}" &
    sim_pid=$!
    wait_ready
    echo "ext-storm: steady; running $STORM_CMD" >&2
    bash -c "$STORM_CMD"
    wait "$sim_pid"
  fi
  url=$url_saved
fi

if has relay; then
  start_relay 5
  url_saved=$url
  url="http://127.0.0.1:$RELAY_PORT"
  sim relay --mode relay
  url=$url_saved
  stop_server
fi

if has slow; then
  start_nixdeck 5
  sim slow --slow-browsers-pct "$SLOW_PCT"
  stop_server
fi

if has p2; then
  # Idle sockets: the server asks for a heartbeat a minute, so nothing else happens. After
  # p1 in the same OUT the hosts are already in the database, so the difference in RSS is
  # the sockets alone (on a fresh database it includes enrolling them).
  start_nixdeck 60
  browsers=0 interval=60 duration=5 warmup=0 sim idle
  stop_server
  start_relay 60
  url_saved=$url
  url="http://127.0.0.1:$RELAY_PORT"
  browsers=0 interval=60 duration=5 warmup=0 sim idle-relay --mode relay
  url=$url_saved
  stop_server
fi

if has storm; then
  start_nixdeck 5
  rm -f "$OUT"/ready*
  browsers=0 duration=5 sim storm --storm --ready-file "$OUT/ready" &
  sim_pid=$!
  wait_ready
  t0=$(date +%s.%N)
  stop_server
  start_nixdeck 5
  echo "storm: nixdeck restarted in $(awk "BEGIN{print $(date +%s.%N) - $t0}") s" >&2
  wait "$sim_pid"
  stop_server
fi

# ---- one table
row() { # $1: file, $2: label
  [ -s "$OUT/$1.json" ] || return 0
  jq -r --arg name "$2" '"| \($name) | \(.agents) | \(.browsers) (\(.slow_browsers) slow) | \(.heartbeats_per_s|floor) | \(.events_per_s|floor) | \(.delivery*1000|round/1000) | \(.latency.p50_ms*100|round/100) | \(.latency.p90_ms*100|round/100) | \(.latency.p99_ms*100|round/100) | \(.latency.max_ms*10|round/10) | \(.browser_drops) (\(.browser_drops_measured)) | \(.server.cpu_pct // 0|round) % | \((.server.rss_kib_max // 0)/1024|round) MiB | \(.sim_cpu_pct // 0|round) % | \(.machine_busy_pct // 0|round) % |"' "$OUT/$1.json"
}
echo
echo "| run | agents | browsers | heartbeats/s | events/s | delivery | p50 ms | p90 ms | p99 ms | max ms | browser drops (in window) | server CPU | server RSS max | fleet-sim CPU | machine busy |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
row nixdeck nixdeck
row external "external (${URLS:-})"
row external-storm "external, before STORM_CMD (${URLS:-})"
row relay raw-relay
row slow "nixdeck, slow browsers"
for f in history-false-1 history-true-1 history-false-2 history-true-2; do row "$f" "$f"; done
if [ -s "$OUT/history-false-1.json" ] && [ -s "$OUT/history-true-1.json" ] && [ ! -s "$OUT/history-true-2.json" ]; then
  jq -rn --slurpfile off "$OUT/history-false-1.json" --slurpfile on "$OUT/history-true-1.json" \
    '"\nserver CPU with history off vs on: \($off[0].server.cpu_pct*10|round/10) % vs \($on[0].server.cpu_pct*10|round/10) % (\((($on[0].server.cpu_pct / $off[0].server.cpu_pct) - 1)*1000|round/10) %)"'
fi
if [ -s "$OUT/history-false-1.json" ] && [ -s "$OUT/history-true-2.json" ]; then
  jq -rn --slurpfile a "$OUT/history-false-1.json" --slurpfile b "$OUT/history-true-1.json" \
    --slurpfile c "$OUT/history-false-2.json" --slurpfile d "$OUT/history-true-2.json" \
    '(($a[0].server.cpu_pct + $c[0].server.cpu_pct) / 2) as $off
     | (($b[0].server.cpu_pct + $d[0].server.cpu_pct) / 2) as $on
     | "\nserver CPU with history off vs on (mean of two runs each): \($off*10|round/10) % vs \($on*10|round/10) % (\((($on / $off) - 1)*1000|round/10) %)"'
fi
if [ -s "$OUT/nixdeck.json" ] && [ -s "$OUT/relay.json" ]; then
  jq -rn --slurpfile n "$OUT/nixdeck.json" --slurpfile r "$OUT/relay.json" \
    '"\nthroughput ratio nixdeck / raw-relay (events read per s): \(($n[0].events_per_s / $r[0].events_per_s)*1000|round/1000)"'
fi
if [ -s "$OUT/nixdeck.json" ] && [ -s "$OUT/slow.json" ]; then
  jq -rn --slurpfile n "$OUT/nixdeck.json" --slurpfile s "$OUT/slow.json" \
    '"reading browsers p99 with slow browsers vs without: \($s[0].latency.p99_ms*100|round/100) ms vs \($n[0].latency.p99_ms*100|round/100) ms (\((($s[0].latency.p99_ms / $n[0].latency.p99_ms) - 1)*1000|round/10) %); server RSS max \(($s[0].server.rss_kib_max // 0)/1024|round) MiB vs \(($n[0].server.rss_kib_max // 0)/1024|round) MiB"'
fi
for f in idle idle-relay; do
  [ -s "$OUT/$f.json" ] && jq -r --arg f "$f" \
    '"\($f): server RSS \(.server.rss_kib_start) KiB with no agent connected, \(.server.rss_kib_agents) KiB with \(.agents_registered) idle agents: \(.server.kib_per_agent*10|round/10) KiB per idle socket"' "$OUT/$f.json"
done
for f in storm external-storm; do
  [ -s "$OUT/$f.json" ] && jq -r --arg f "$f" \
    '"\($f): \(.storm.agents_back)/\(.storm.agents_dropped) agents whose link dropped registered again (of \(.agents)); first after \(.storm.first_back_s) s, p50 \(.storm.p50_s) s, p99 \(.storm.p99_s) s, all after \(.storm.all_back_s) s"' "$OUT/$f.json"
done
echo "raw reports: $OUT/*.json"
