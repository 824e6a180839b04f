#!/usr/bin/env bash
# Instructions per route()+end() of bench_python.py's two loops (plain Python
# and approute on a shared segment), counted by callgrind: repeatable on a
# busy machine, unlike time. Each figure is the difference between a run with
# and without the measured calls, divided by their number.
#
#   bench/python_ir.sh [CALLS]          # default 20000
#   PYTHONPATH=DIR bench/python_ir.sh   # another approute build first on the path
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${APPROUTE_PYTHON:-$ROOT/.venv/bin/python}
CALLS=${1:-20000}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
ir() {  # args for bench_python.py
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg" "$PY" "$ROOT/bench/bench_python.py" --calls "$CALLS" "$@" >/dev/null 2>&1
  callgrind_annotate "$OUT/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
printf "%-10s %10s %22s\n" "router" "in flight" "instructions per call"
for router in plain approute; do
  for in_flight in 0 100; do
    without=$(ir --ir "$router" --in-flight "$in_flight" --ir-skip)
    with=$(ir --ir "$router" --in-flight "$in_flight")
    printf "%-10s %10s %22s\n" "$router" "$in_flight" $(( (with - without) / CALLS ))
  done
done
