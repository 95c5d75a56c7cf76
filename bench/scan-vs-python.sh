#!/usr/bin/env bash
# A full `muster-agent scan` (hardware + software + processes + services, no telemetry wait)
# against a seed-style Python collector (psutil + dpkg-query), in the same run on the same
# machine. Prints wall ms, CPU ms and peak RSS (medians) and the CPU ratio.
# usage: bench/scan-vs-python.sh [RUNS]   (default 30)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS="${1:-30}"
VENV="${MUSTER_BENCH_VENV:-target/bench-venv}"

cargo build --release -q -p muster-agent
mkdir -p target/bench
gcc -O2 -static -o target/bench/rusage bench/rusage.c 2>/dev/null || gcc -O2 -o target/bench/rusage bench/rusage.c
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import psutil' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q psutil
fi
echo "machine: $(nproc) cores, $(uname -r), $("$VENV/bin/python" --version), psutil $("$VENV/bin/python" -c 'import psutil; print(psutil.__version__)')"
echo "packages: $(dpkg-query -W 2>/dev/null | wc -l) dpkg, processes: $(ls -d /proc/[0-9]* | wc -l)"
python3 bench/measure.py target/bench/rusage "$RUNS" \
  "muster-agent=target/release/muster-agent scan --only hardware,software,processes,services" \
  "python-seed=$VENV/bin/python bench/seed_collector.py"
