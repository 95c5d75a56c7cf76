#!/usr/bin/env bash
# A compressed soak: the agent with a 1 s heartbeat, 1 s telemetry and a 10 s inventory
# (3,600× / 600× / 360× its defaults) against a local fake API for MINUTES minutes, its RSS
# sampled every 30 s. An agent that grew per request or per scan would show it here within
# minutes rather than days.
# usage: bench/soak.sh [MINUTES]   (default 5)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MINUTES="${1:-5}"; PORT=38082
cargo build --release -q -p muster-agent
. bench/lib.sh
start_fake_api "$PORT"
cat > "$WORK/agent.toml" <<TOML
[agent]
state_dir = "$WORK/state"
pid_file = "$WORK/agent.pid"
heartbeat_interval = 1
collection_interval = 1
inventory_interval = 10
splay = 0
log_level = "warn"
[api]
base_url = "http://127.0.0.1:$PORT/api"
auth_token = "bench-enrolment-token"
tenant_id = "bench"
TOML
target/release/muster-agent run --config "$WORK/agent.toml" 2>"$WORK/agent.log" & agent=$!; pids+=($agent)
echo "seconds  rss_kib  scans_completed  errors  (from the agent's status.json)"
for ((i = 1; i <= MINUTES * 2; i++)); do
  sleep 30
  rss=$(awk '/^VmRSS:/{print $2}' /proc/$agent/status)
  figures=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["scans_completed"], s["errors"])' "$WORK/state/status.json")
  printf '%7d  %7s  %15s  %6s\n' $((i * 30)) "$rss" ${figures}
done
echo "errors in the agent log: $(grep -ci error "$WORK/agent.log" || true)"
