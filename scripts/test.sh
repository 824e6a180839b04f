#!/usr/bin/env bash
# Runs every test: C++ (GoogleTest, via ctest), the find_package example,
# Python (pytest) and end-to-end (real Kamailio + SIPp on 127.0.0.1), then
# the wheel and sdist (scripts/wheel.sh), tested as installed in a fresh venv
# (scripts/test-wheel.sh).
# Installs what it needs first (scripts/setup.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${APPROUTE_VENV:-$ROOT/.venv}
JOBS=${APPROUTE_JOBS:-2}

echo "== setup"
bash scripts/setup.sh

echo "== C++ build and tests"
cmake -S . -B build/cpp -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DAPPROUTE_BUILD_TESTS=ON -DAPPROUTE_BUILD_BENCH=ON >/dev/null
cmake --build build/cpp -j "$JOBS"
# setup.sh installed redis-server: a test that cannot find it fails instead of skipping.
APPROUTE_REDIS_REQUIRED=1 ctest --test-dir build/cpp --output-on-failure -j "$JOBS"

echo "== find_package(approute) example against the installed library"
rm -rf build/install build/example
cmake --install build/cpp --prefix build/install >/dev/null
cmake -S examples/cpp -B build/example -G Ninja -DCMAKE_PREFIX_PATH="$ROOT/build/install" >/dev/null
cmake --build build/example
build/example/route_calls examples/kamailio/router.yaml

echo "== Python and end-to-end tests"
APPROUTE_E2E_REQUIRED=1 APPROUTE_REDIS_REQUIRED=1 "$VENV/bin/python" -m pytest -q tests/python tests/e2e

echo "== wheel: build, install in a fresh venv, test the install"
bash scripts/test-wheel.sh
