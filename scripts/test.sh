#!/usr/bin/env bash
# Runs the linters (scripts/lint.sh) and every test: C++ (GoogleTest, via
# ctest), the same under ASan+UBSan and the threads test under TSan, bounded
# fuzz runs (tests/fuzz/run.sh), the find_package example,
# Python (pytest) and end-to-end (real Kamailio + SIPp on 127.0.0.1), then
# the wheel and sdist (scripts/wheel.sh), tested as installed in a fresh venv
# (scripts/test-wheel.sh).
# Installs what it needs first (scripts/setup.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${APPROUTE_VENV:-$ROOT/.venv}
JOBS=${APPROUTE_JOBS:-2}
# Each stage is announced with the run's elapsed time, so a slow stage shows.
stage() { printf '== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
trap 'stage "end (status $?)"' EXIT

stage "setup"
bash scripts/setup.sh

stage "lint (scripts/lint.sh: layers, C++ format and static analysis, Python; a finding fails)"
bash scripts/lint.sh

stage "C++ build and tests"
cmake -S . -B build/cpp -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DAPPROUTE_BUILD_TESTS=ON -DAPPROUTE_BUILD_BENCH=ON >/dev/null
cmake --build build/cpp -j "$JOBS"
# setup.sh installed redis-server: a test that cannot find it fails instead of skipping.
APPROUTE_REDIS_REQUIRED=1 ctest --test-dir build/cpp --output-on-failure -j "$JOBS"

# Sanitizer builds: own build dirs, reused between runs (incremental). A
# finding aborts the test (-fno-sanitize-recover, halt_on_error), so it fails.
# One clang-14 build (build/asan) serves the ASan+UBSan test run and the
# fuzzers (tests/fuzz/run.sh uses the same directory and flags).
stage "C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (build/asan, clang-14)"
CC=clang-14 CXX=clang++-14 cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DAPPROUTE_BUILD_TESTS=ON -DAPPROUTE_BUILD_FUZZ=ON -DAPPROUTE_SANITIZE=address,undefined >/dev/null
cmake --build build/asan -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure -j "$JOBS"

stage "threads test under ThreadSanitizer (build/tsan: the library and that test only)"
cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DAPPROUTE_BUILD_TESTS=ON -DAPPROUTE_SANITIZE=thread >/dev/null
cmake --build build/tsan -j "$JOBS" --target approute_threads_test
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build/tsan/tests/cpp/approute_threads_test

stage "bounded fuzz runs (tests/fuzz/run.sh, ${APPROUTE_FUZZ_TIME:-15} s each)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check atheris \
  || echo "atheris did not install: the Kamailio harness runs under hypothesis"
APPROUTE_FUZZ_TIME=${APPROUTE_FUZZ_TIME:-15} bash tests/fuzz/run.sh

stage "find_package(approute) example against the installed library"
rm -rf build/install build/example
cmake --install build/cpp --prefix build/install >/dev/null
cmake -S examples/cpp -B build/example -G Ninja -DCMAKE_PREFIX_PATH="$ROOT/build/install" >/dev/null
cmake --build build/example
build/example/route_calls examples/kamailio/router.yaml

stage "Python and end-to-end tests"
APPROUTE_E2E_REQUIRED=1 APPROUTE_REDIS_REQUIRED=1 "$VENV/bin/python" -m pytest -q tests/python tests/e2e

stage "wheel: build, install in a fresh venv, test the install"
bash scripts/test-wheel.sh
