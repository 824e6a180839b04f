#!/usr/bin/env bash
# Instructions per route()+end(), baseline revision vs the working tree, side
# by side (callgrind counts instructions: repeatable on a busy 2-core box).
#
#   bench/compare_ir.sh [BASE_REV]          # default: HEAD~1
#   bench/compare_ir.sh BASE_REV pools      # placements in 64/256/1024-node pools
#
# Builds libapproute at BASE_REV in a temporary worktree and in build/ir,
# links bench/route_ir.cc against both, runs each case under callgrind
# (20,000 measured calls after 2,000 warm-up ones) and prints the ratio.
# `pools`: no affinity, every built-in strategy in $STRATEGIES (default:
# all eight) at $SIZES (default 64, 256 and 1,024) nodes; besides the instruction counts,
# wall-clock median and p99 per call (50,000 calls timed one by one, base
# and tree alternated $RUNS times (default 3), the median of the runs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${1:-HEAD~1}
MODE=${2:-}
WORK=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$WORK/base" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git -C "$ROOT" worktree add -q --detach "$WORK/base" "$BASE"
build() {  # src dir, build dir
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$2" -j "${APPROUTE_JOBS:-2}" --target approute >/dev/null
}
build "$WORK/base" "$WORK/base-build"
build "$ROOT" "$ROOT/build/ir"
LIBS="$(pkg-config --libs libxxhash) -lyaml-cpp -lcrypto -lhiredis $(ls /usr/lib/x86_64-linux-gnu/libabsl_*.so | sed 's#.*/lib\(absl_[a-z0-9_]*\)\.so#-l\1#' | tr '\n' ' ')"
link() {  # include dir, lib, out
  g++ -std=c++20 -O2 -I"$1" "$ROOT/bench/route_ir.cc" "$2" -o "$3" -Wl,--start-group $LIBS -Wl,--end-group
}
link "$WORK/base/libapproute/include" "$WORK/base-build/libapproute/libapproute.a" "$WORK/ir_base"
link "$ROOT/libapproute/include" "$ROOT/build/ir/libapproute/libapproute.a" "$WORK/ir_new"
ir() {  # binary, args...
  local bin=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg" --toggle-collect='Loop*' "$bin" "$@" >/dev/null 2>&1
  callgrind_annotate "$WORK/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print int($1 / 22000)}'
}
if [ "$MODE" = pools ]; then
  med() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
  printf "%-26s %9s %9s %6s | %9s %9s | %9s %9s\n" "case (shared, no affinity)" "IR base" "IR tree" "ratio" \
    "med base" "med tree" "p99 base" "p99 tree"
  for n in ${SIZES:-64 256 1024}; do
    for s in ${STRATEGIES:-round_robin weighted_round_robin random weighted_random priority hash least_loaded p2c}; do
      b=$(ir "$WORK/ir_base" "$s" "$n"); t=$(ir "$WORK/ir_new" "$s" "$n")
      : >"$WORK/tb"; : >"$WORK/tt"
      for _ in $(seq "${RUNS:-3}"); do
        "$WORK/ir_base" "$s" "$n" time >>"$WORK/tb"; "$WORK/ir_new" "$s" "$n" time >>"$WORK/tt"
      done
      printf "%-26s %9s %9s %6s | %7sns %7sns | %7sns %7sns\n" "$s $n" "$b" "$t" \
        "$(awk -v b="$b" -v n="$t" 'BEGIN {printf "%.3f", n / b}')" \
        "$(cut -d' ' -f1 "$WORK/tb" | med)" "$(cut -d' ' -f1 "$WORK/tt" | med)" \
        "$(cut -d' ' -f2 "$WORK/tb" | med)" "$(cut -d' ' -f2 "$WORK/tt" | med)"
    done
  done
  exit 0
fi
printf "%-28s %10s %10s %7s\n" "case (shared region)" "$BASE" "tree" "ratio"
for c in "round_robin 8" "least_loaded 64" "least_loaded 64 affinity" "least_loaded 64 usage"; do
  b=$(ir "$WORK/ir_base" $c); n=$(ir "$WORK/ir_new" $c)
  printf "%-28s %10s %10s %7s\n" "$c" "$b" "$n" "$(awk -v b="$b" -v n="$n" 'BEGIN {printf "%.3f", n / b}')"
done
