#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang-14, ASan + UBSan, in build/asan, the
# directory of the sanitizer test run too; incremental)
# and runs each for a bounded time, then the Python harness of the Kamailio
# templates and rules. A crash, a sanitizer finding or a failed property
# fails the script; libFuzzer writes the input to build/asan/artifacts/.
#
#   tests/fuzz/run.sh                 # CI: APPROUTE_FUZZ_TIME seconds each (default 60)
#   APPROUTE_FUZZ_RUNS=10000000 tests/fuzz/run.sh config   # one harness, N executions
#
# Seeds: tests/fuzz/corpus/<harness>/ (committed); what the fuzzer finds goes
# to build/asan/fuzz-corpus/<harness>/ (kept between runs, not committed).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
VENV=${APPROUTE_VENV:-$ROOT/.venv}
JOBS=${APPROUTE_JOBS:-2}
TIME=${APPROUTE_FUZZ_TIME:-60}
RUNS=${APPROUTE_FUZZ_RUNS:-}
ONLY=${1:-}
B=build/asan

limit=(-max_total_time="$TIME")
[ -n "$RUNS" ] && limit=(-runs="$RUNS")

cpp=(sip_uri config status_report)
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

if [ -z "$ONLY" ] || [ "$ONLY" != kamailio ]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DAPPROUTE_BUILD_TESTS=ON -DAPPROUTE_BUILD_FUZZ=ON -DAPPROUTE_SANITIZE=address,undefined >/dev/null
  targets=()
  for h in "${cpp[@]}"; do want "$h" && targets+=("${h}_fuzz"); done
  cmake --build "$B" -j "$JOBS" --target "${targets[@]}"
fi

mkdir -p "$B/artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for h in "${cpp[@]}"; do
  want "$h" || continue
  mkdir -p "$B/fuzz-corpus/$h"
  echo "== fuzz $h (${limit[*]})"
  rc=0
  "$B/tests/fuzz/${h}_fuzz" "${limit[@]}" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$B/artifacts/${h}-" "$B/fuzz-corpus/$h" "tests/fuzz/corpus/$h" >"$B/fuzz-$h.log" 2>&1 || rc=$?
  grep -E "^(Done |stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|==[0-9]+==|SUMMARY|property failed)" "$B/fuzz-$h.log" || true
  [ "$rc" -eq 0 ] || { tail -40 "$B/fuzz-$h.log"; echo "fuzz $h: FAILED (input in $B/artifacts/)"; exit 1; }
done

if want kamailio; then
  echo "== fuzz kamailio templates and rules"
  mkdir -p "$B/fuzz-corpus/kamailio"
  if "$VENV/bin/python" -c "import atheris" 2>/dev/null; then
    rc=0
    "$VENV/bin/python" tests/fuzz/kamailio_fuzz.py "${limit[@]}" -print_final_stats=1 \
      -artifact_prefix="$B/artifacts/kamailio-" "$B/fuzz-corpus/kamailio" tests/fuzz/corpus/kamailio \
      >"$B/fuzz-kamailio.log" 2>&1 || rc=$?
    grep -E "^(Done |stat::number_of_executed_units|stat::average_exec_per_sec)" "$B/fuzz-kamailio.log" || true
    [ "$rc" -eq 0 ] || { tail -40 "$B/fuzz-kamailio.log"; echo "fuzz kamailio: FAILED (input in $B/artifacts/)"; exit 1; }
  else
    echo "(atheris not installed: hypothesis instead)"
    APPROUTE_FUZZ_HYPOTHESIS=${APPROUTE_FUZZ_EXAMPLES:-20000} "$VENV/bin/python" tests/fuzz/kamailio_fuzz.py
  fi
fi
