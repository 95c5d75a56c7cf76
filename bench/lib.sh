# Shared by the benchmarks that run agents against a local fake agents' API.
# Source it from the repository root, then `start_fake_api PORT`: a scratch directory in
# $WORK, the fake API on 127.0.0.1:PORT, and every process added to `pids` killed (and $WORK
# removed) at exit.
start_fake_api() {
  WORK=$(mktemp -d); pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
  python3 bench/fake_api.py "$1" & pids+=($!)
  sleep 0.5
}
