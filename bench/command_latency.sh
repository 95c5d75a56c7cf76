#!/usr/bin/env bash
# Time from a command's creation (the admin API's answer) to the agent starting it, for an
# online agent: a release `muster-server serve` on a fresh SQLite database and one real agent
# (`muster-server agent run`, heartbeat every 60 s, so only the long-poll nudge can bring a
# command sooner). COUNT `script` commands (`true`, priority 1: the agent defers priorities 2..5
# while the host is busy, which on a shared machine would measure the load, not the delivery)
# are created one after the other; for each,
# the admin API is polled every 5 ms until the target is `running` or later. Prints p50, p90,
# p99 and max (the polling adds up to 5 ms).
#
# usage: bench/command_latency.sh [COUNT]   (default 100)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
COUNT="${1:-100}"
PORT="${MUSTER_LOAD_PORT:-38320}"

cargo build --release -q -p muster-server
server=$PWD/target/release/muster-server
scratch=$(mktemp -d /tmp/muster-latency.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT
url="sqlite://$scratch/muster.db"

"$server" admin --database-url "$url" tenant create bench --json >"$scratch/tenant.json"
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$scratch/tenant.json" "$1"; }

"$server" serve --listen "127.0.0.1:$PORT" --database-url "$url" 2>>"$scratch/server.log" &
pids+=($!)
cat >"$scratch/agent.toml" <<TOML
[agent]
heartbeat_interval = 60
collection_interval = 600
inventory_interval = 3600
splay = 0
state_dir = "$scratch/state"
log_level = "warn"

[api]
base_url = "http://127.0.0.1:$PORT/api"
tenant_id = "$(field tenant_id)"
auth_token = "$(field enrolment_token)"

[security]
allowed_command_types = ["script"]
TOML
"$server" agent run --config "$scratch/agent.toml" 2>>"$scratch/agent.log" &
pids+=($!)

python3 - "http://127.0.0.1:$PORT" "$(field admin_token)" "$COUNT" <<'PY'
import json, sys, time, urllib.request

base, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)

deadline = time.time() + 60
while True:
    try:
        agents = call("GET", "/api/admin/agents")
        if agents["total"] == 1:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("the agent did not enrol within 60 s")
    time.sleep(0.2)
agent = agents["agents"][0]["id"]
time.sleep(2)  # its first jobs done and its long poll open

started = ("running", "succeeded", "failed", "timed_out")
latencies = []
for _ in range(count):
    created = call("POST", "/api/admin/commands",
                   {"agent_id": agent, "type": "script", "command": "true", "timeout_s": 30,
                    "priority": 1})
    t0 = time.monotonic()
    while True:
        state = call("GET", "/api/admin/commands/%d" % created["id"])["targets"][0]["state"]
        if state in started:
            latencies.append((time.monotonic() - t0) * 1000)
            break
        if state in ("rejected", "expired", "cancelled"):
            sys.exit("command %d ended %s" % (created["id"], state))
        if time.monotonic() - t0 > 30:
            sys.exit("command %d not started within 30 s" % created["id"])
        time.sleep(0.005)
    # let it finish before the next one
    while call("GET", "/api/admin/commands/%d" % created["id"])["targets"][0]["state"] == "running":
        time.sleep(0.005)
latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
print("commands: %d, creation -> running: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms"
      % (len(latencies), pick(0.5), pick(0.9), pick(0.99), latencies[-1]))
PY
