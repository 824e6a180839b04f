#!/usr/bin/env bash
# Instructions per route()+end(), baseline revision vs the working tree, side
# by side (callgrind counts instructions: repeatable on a busy 2-core box).
#
#   bench/compare_ir.sh [BASE_REV]      # default: HEAD~1
#
# Builds libapproute at BASE_REV in a temporary worktree and in build/ir,
# links bench/route_ir.cc against both, runs each case under callgrind
# (20,000 measured calls after 2,000 warm-up ones) and prints the ratio.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${1:-HEAD~1}
WORK=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$WORK/base" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git -C "$ROOT" worktree add -q --detach "$WORK/base" "$BASE"
build() {  # src dir, build dir
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$2" -j "${APPROUTE_JOBS:-2}" --target approute >/dev/null
}
build "$WORK/base" "$WORK/base-build"
build "$ROOT" "$ROOT/build/ir"
LIBS="$(pkg-config --libs libxxhash) -lyaml-cpp -lcrypto $(ls /usr/lib/x86_64-linux-gnu/libabsl_*.so | sed 's#.*/lib\(absl_[a-z0-9_]*\)\.so#-l\1#' | tr '\n' ' ')"
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
printf "%-28s %10s %10s %7s\n" "case (shared region)" "$BASE" "tree" "ratio"
for c in "round_robin 8" "least_loaded 64" "least_loaded 64 affinity"; do
  b=$(ir "$WORK/ir_base" $c); n=$(ir "$WORK/ir_new" $c)
  printf "%-28s %10s %10s %7s\n" "$c" "$b" "$n" "$(awk -v b="$b" -v n="$n" 'BEGIN {printf "%.3f", n / b}')"
done
