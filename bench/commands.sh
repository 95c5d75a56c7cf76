#!/usr/bin/env bash
# The commands benchmark: PAIRS (command, agent) pairs queued through the admin API across
# AGENTS simulated agents, leased and completed by them (`received`, `succeeded`), no
# duplicate delivery, every target `succeeded` at the end (crates/loadgen, `--commands`).
# A release `muster-server` on a fresh SQLite database, or on PostgreSQL when
# DATABASE_URL=postgres://... names an empty database.
#
# usage: bench/commands.sh [PAIRS] [AGENTS] [PER_COMMAND]   (default 100000 10000 1000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PAIRS="${1:-100000}"; AGENTS="${2:-10000}"; PER="${3:-1000}"
PORT="${MUSTER_LOAD_PORT:-38310}"

cargo build --release -q -p muster-server -p muster-loadgen
server=$PWD/target/release/muster-server
loadgen=$PWD/target/release/muster-loadgen
ulimit -n 65536 2>/dev/null || true

scratch=$(mktemp -d /tmp/muster-commands.XXXXXX)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT
url="${DATABASE_URL:-sqlite://$scratch/muster.db}"

"$server" admin --database-url "$url" tenant create bench --json >"$scratch/tenant.json"
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$scratch/tenant.json" "$1"; }
tenant_id=$(field tenant_id)
(umask 077; field enrolment_token >"$scratch/enrol-token"; field admin_token >"$scratch/admin-token")

"$server" serve --listen "127.0.0.1:$PORT" --database-url "$url" 2>>"$scratch/server.log" &
server_pid=$!
for _ in $(seq 100); do
  python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "http://127.0.0.1:$PORT/readyz" 2>/dev/null && break
  sleep 0.2
done

echo "=== commands: $PAIRS pairs, $AGENTS agents, $PER per command, $(nproc) cores, $(uname -r)"
"$loadgen" --server "http://127.0.0.1:$PORT" --tenant-id "$tenant_id" \
  --enrol-token-file "$scratch/enrol-token" --admin-token-file "$scratch/admin-token" \
  --agents "$AGENTS" --commands "$PAIRS" --per-command "$PER" --concurrency 64 ${MUSTER_LOAD_ARGS:-}
