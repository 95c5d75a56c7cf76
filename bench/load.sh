#!/usr/bin/env bash
# The server under the load of a simulated fleet (crates/loadgen): AGENTS agents at the agent's
# default schedule (heartbeat 60 s, telemetry 10 min, inventory 60 min, splay 30 s) for
# DURATION, against a release `muster-server` on a fresh database. Prints, per endpoint,
# accepted requests/s, p50/p99/max latency and errors, and the server's and the generator's
# CPU and RSS; the JSON result is kept beside the database.
#
# usage: bench/load.sh [AGENTS] [DURATION] [sqlite|postgres|both]   (default 150000 10m sqlite)
#
# Enrolment (registration plus each agent's first, full inventory) happens before the timed
# load and is reported apart. MUSTER_LOAD_DIR=DIR keeps the SQLite database and the
# enrolments file in DIR, so a rerun skips enrolment (PostgreSQL is always a fresh throwaway
# cluster, started as .ci/postgres.sh does, on MUSTER_PG_PORT, default 55440; needs root).
# MUSTER_LOAD_ARGS adds loadgen flags (e.g. "--ramp 60s" for a fleet restarted together).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
AGENTS="${1:-150000}"; DURATION="${2:-10m}"; BACKEND="${3:-sqlite}"
# Below the ephemeral range (32768-60999), which the generator's own connections use.
PORT="${MUSTER_LOAD_PORT:-19300}"
case "$BACKEND" in sqlite|postgres|both) ;; *) echo "backend: sqlite, postgres or both" >&2; exit 64 ;; esac

cargo build --release -q -p muster-server -p muster-loadgen
server=$PWD/target/release/muster-server
loadgen=$PWD/target/release/muster-loadgen
# A connection per request in flight, on both sides.
ulimit -n 65536 2>/dev/null || true

scratch=$(mktemp -d /tmp/muster-load.XXXXXX)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT

# run_load NAME DATABASE_URL DIR: tenant (once per database), server, load, stop.
run_load() {
  local name=$1 url=$2 dir=$3
  mkdir -p "$dir"
  if [ ! -s "$dir/tenant.json" ]; then
    "$server" admin --database-url "$url" tenant create load --json >"$dir/tenant.json"
    rm -f "$dir/enrolments.json"
  fi
  local tenant_id
  tenant_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tenant_id"])' "$dir/tenant.json")
  (umask 077; python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["enrolment_token"])' \
    "$dir/tenant.json" >"$dir/enrol-token")

  "$server" serve --listen "127.0.0.1:$PORT" --database-url "$url" 2>>"$dir/server.log" &
  server_pid=$!
  local ready=
  for _ in $(seq 300); do
    kill -0 "$server_pid" 2>/dev/null || break
    python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://127.0.0.1:$PORT/readyz" 2>/dev/null && { ready=1; break; }
    sleep 0.2
  done
  [ -n "$ready" ] || { echo "the server did not start; see $dir/server.log" >&2; tail -3 "$dir/server.log" >&2; exit 1; }

  echo "=== $name: $AGENTS agents, $DURATION, $(nproc) cores, $(uname -r)"
  local status=0
  # shellcheck disable=SC2086  # MUSTER_LOAD_ARGS is a list of flags
  "$loadgen" --server "http://127.0.0.1:$PORT" --tenant-id "$tenant_id" \
    --enrol-token-file "$dir/enrol-token" --enrolments "$dir/enrolments.json" \
    --agents "$AGENTS" --duration "$DURATION" --server-pid "$server_pid" \
    --output "$dir/result.json" ${MUSTER_LOAD_ARGS:-} || status=$?
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  echo "(database and enrolments: $(du -sh "$dir" | cut -f1) in $dir)"
  return "$status"
}

result=0
if [ "$BACKEND" = sqlite ] || [ "$BACKEND" = both ]; then
  dir=${MUSTER_LOAD_DIR:-$scratch/sqlite}
  run_load sqlite "sqlite://$dir/muster.db" "$dir" || result=$?
fi
if [ "$BACKEND" = postgres ] || [ "$BACKEND" = both ]; then
  export MUSTER_PG_PORT="${MUSTER_PG_PORT:-55440}"
  # Starts the cluster (fsync off, as for the tests), exports MUSTER_TEST_DATABASE_URL and
  # replaces our EXIT trap with its own stop; ours is chained back in.
  . .ci/postgres.sh
  trap 'cleanup; pg_stop' EXIT
  run_load postgres "$MUSTER_TEST_DATABASE_URL" "$scratch/postgres" || result=$?
fi
exit "$result"
