#!/usr/bin/env bash
# The agent idle at its default schedule, side by side with a seed-style Python agent
# (psutil + requests + schedule, 1-second loop) and prometheus-node-exporter (Debian), all
# reporting to / running beside a local fake API on 127.0.0.1. Prints RSS, threads, CPU ticks
# and voluntary context switches over the window (default 120 s after a 15 s warm-up).
# usage: bench/idle.sh [WINDOW_S] [WARMUP_S]      (needs root for apt-get if node_exporter is missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WINDOW="${1:-120}"; WARMUP="${2:-15}"
VENV="${MUSTER_BENCH_VENV:-target/bench-venv}"
PORT=38080
cargo build --release -q -p muster-agent
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/python" -c 'import psutil, requests, schedule' 2>/dev/null || "$VENV/bin/pip" install -q psutil requests schedule
command -v prometheus-node-exporter >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter >/dev/null; }

. bench/lib.sh
start_fake_api "$PORT"
cat > "$WORK/agent.toml" <<TOML
[agent]
state_dir = "$WORK/state"
pid_file = "$WORK/agent.pid"
log_level = "warn"
[api]
base_url = "http://127.0.0.1:$PORT/api"
auth_token = "bench-enrolment-token"
tenant_id = "bench"
TOML
target/release/muster-agent run --config "$WORK/agent.toml" 2>"$WORK/agent.log" & agent=$!; pids+=($agent)
(cd bench && exec "../$VENV/bin/python" seed_agent.py "http://127.0.0.1:$PORT/api") & seed=$!; pids+=($seed)
prometheus-node-exporter --web.listen-address=127.0.0.1:39100 2>/dev/null & nodeexp=$!; pids+=($nodeexp)
echo "binary: $(stat -c %s target/release/muster-agent) bytes (stripped release)"
python3 bench/idle.py "$WARMUP" "$WINDOW" muster-agent=$agent python-seed=$seed node_exporter=$nodeexp
