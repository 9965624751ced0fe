#!/usr/bin/env bash
# Several nixdeck replicas on one throw-away PostgreSQL (docs/SCALING.md, figures in
# docs/BENCHMARKS.md): starts the cluster (scripts/pg.sh) and REPLICAS servers on it with
# bench/run.sh's settings, runs fleet-sim against them through bench/run.sh (STEPS=ext),
# sampling the replicas' CPU and RSS and PostgreSQL's CPU (the postmaster and its
# connections), then stops everything, the cluster included, whatever happens.
#
#   REPLICAS=3 AGENTS=3000 BROWSERS=20 DURATION=60 bench/replicas.sh
#       agents and browsers spread round-robin over the replicas; prints run.sh's table and
#       the CPU of the replicas (summed) and of PostgreSQL per 1 000 agents and per event
#   MODE=failover AGENTS=10000 BROWSERS=20 bench/replicas.sh
#       two replicas, A and B: every agent is given A's URL then B's (it starts on A and
#       moves to B when its link is lost), the browsers are on B. Once the fleet is steady,
#       bench/failover_watch.py kills A with SIGKILL and reads B's GET /api/hosts until
#       every host is online there with a heartbeat sent after the kill; fleet-sim times
#       until every agent is registered again (on B)
#   PROCS=3 AGENTS=40000 BROWSERS=100 REPLICAS=3 bench/replicas.sh
#       fleet-sim as 3 processes, each under the open-file limit (bench/run.sh)
#
# Also: WARMUP, PROFILE (release), OUT (a new /tmp/nixdeck-replicas.* by default),
# HEARTBEAT_S (5: the interval the servers ask for and the agents keep), BASE_PORT (3951:
# replica k listens on BASE_PORT+k), WATCH_S (failover: how long B is read, 40).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-load}
if [ "$MODE" = failover ]; then REPLICAS=2; fi
REPLICAS=${REPLICAS:-2}
AGENTS=${AGENTS:-3000}
BROWSERS=${BROWSERS:-20}
PROFILE=${PROFILE:-release}
HEARTBEAT_S=${HEARTBEAT_S:-5}
BASE_PORT=${BASE_PORT:-3951}
OUT=${OUT:-$(mktemp -d /tmp/nixdeck-replicas.XXXXXX)}
export AGENTS BROWSERS PROFILE OUT
mkdir -p "$OUT"

# bench/run.sh's dashboard settings (its header): the same admin and enrollment token, so
# that fleet-sim signs in and enrolls its agents on every replica.
password=bench-admin-password
enroll=bench-enroll-token-0123456789abcdef
bin=target/$PROFILE
if [ "$PROFILE" = release ]; then
  cargo build --release -p nixdeck -p fleet-sim
else
  cargo build -p nixdeck -p fleet-sim
fi

pg_url=
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  [ -n "$pg_url" ] && scripts/pg.sh stop "$pg_url"
}
trap cleanup EXIT
trap 'exit 143' INT TERM # so that the EXIT trap runs on a signal too

pg_url=$(scripts/pg.sh start)
pg_dir=${pg_url##*host=}
db_pid=$(head -n1 "$pg_dir/data/postmaster.pid")

ulimit -n "$(ulimit -Hn)"
urls=()
for k in $(seq 1 "$REPLICAS"); do
  port=$((BASE_PORT + k - 1))
  # One at a time: the first creates the schema, the admin and the shared secret key.
  NIXDECK_MAX_SOCKETS_PER_USER=$((BROWSERS + 16)) NIXDECK_ENROLL_TOKEN_USES=0 \
    NIXDECK_LISTEN="127.0.0.1:$port" NIXDECK_DATABASE_URL="$pg_url" \
    NIXDECK_SECRET_KEY_FILE="$OUT/secret.key" NIXDECK_ADMIN_PASSWORD="$password" \
    NIXDECK_ENROLL_TOKEN="$enroll" NIXDECK_HEARTBEAT_INTERVAL_S="$HEARTBEAT_S" \
    NIXDECK_SITE_ROOT=target/site RUST_LOG="${RUST_LOG:-warn}" \
    "$bin/nixdeck" >>"$OUT/replica-$k.log" 2>&1 &
  pids+=($!)
  urls+=("http://127.0.0.1:$port")
  for _ in $(seq 1 300); do curl -sf -o /dev/null "${urls[-1]}/healthz" && break; sleep 0.1; done
  curl -sf -o /dev/null "${urls[-1]}/healthz" || { echo "replica $k did not start; see $OUT/replica-$k.log" >&2; exit 1; }
done
echo "replicas: ${urls[*]} (pids ${pids[*]}); PostgreSQL $pg_url (postmaster $db_pid)" >&2

join() { local IFS=,; echo "$*"; }
export DB_PID=$db_pid
if [ "$MODE" = failover ]; then
  # Browsers on B only, sampled: B; the agents start on A.
  URLS=${urls[1]} AGENT_URLS=$(join "${urls[@]}") SERVER_PIDS=${pids[1]} STORM_HOLD_S=${WATCH_S:-40} \
    STORM_CMD="NIXDECK_ADMIN_PASSWORD=$password python3 bench/failover_watch.py ${urls[1]} ${pids[0]} $AGENTS ${WATCH_S:-40} >$OUT/failover-watch.json" \
    STEPS=ext-storm bench/run.sh
  jq -r '"the survivor'"'"'s view: every host online with a heartbeat sent after the kill after \(.whole_after_s) s (not yet at \(.whole_not_before_s) s); fewest hosts online at any read \(.min_online), after the view was whole \(.min_online_after_whole)"' "$OUT/failover-watch.json"
  report=$OUT/external-storm.json
else
  URLS=$(join "${urls[@]}") SERVER_PIDS=$(join "${pids[@]}") STEPS=ext bench/run.sh
  report=$OUT/external.json
fi

# The cost of fan-out: CPU (% of one core) per 1 000 agents, and CPU time (µs) per
# heartbeat ingested and per event a browser read.
jq -r --argjson n "$REPLICAS" '
  (.server.cpu_pct // 0) as $s | (.db_cpu_pct // 0) as $d
  | "\($n) replicas: CPU \($s|round) % of a core (replicas, summed), PostgreSQL \($d|round) %; per 1 000 agents: replicas \($s / .agents * 1000 * 10|round/10) %, PostgreSQL \($d / .agents * 1000 * 10|round/10) %; per heartbeat: replicas \($s * 10000 / .heartbeats_per_s|round) µs, PostgreSQL \($d * 10000 / .heartbeats_per_s|round) µs; per event read: replicas \($s * 10000 / ([.events_per_s, 1]|max)|round) µs, PostgreSQL \($d * 10000 / ([.events_per_s, 1]|max)|round) µs"' "$report"

for k in $(seq 1 "$REPLICAS"); do
  alive=alive
  kill -0 "${pids[k - 1]}" 2>/dev/null || alive="not running"
  echo "replica $k: $alive; $(grep -c 'replica bus' "$OUT/replica-$k.log" || true) bus warnings, $(grep -c ' ERROR ' "$OUT/replica-$k.log" || true) errors ($OUT/replica-$k.log)"
done
