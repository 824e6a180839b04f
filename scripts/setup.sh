#!/usr/bin/env bash
# Installs what approute needs on Debian 12 and builds it into a virtualenv of
# /usr/bin/python3 — the interpreter Kamailio's app_python3 embeds — so the
# same package serves the tests, the CLI and Kamailio.
#
#   scripts/setup.sh            # venv at .venv (override with APPROUTE_VENV)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${APPROUTE_VENV:-$ROOT/.venv}

bash "$ROOT/.ci/install-deps"
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv "$VENV"
fi
echo "setup: build and test tools into $VENV (pip)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "scikit-build-core>=0.10" "pybind11>=3" "pytest>=7" "hypothesis>=6" "PyYAML>=5" "matplotlib>=3.5" "prometheus-client>=0.16" "promql-parser>=0.12" "pytest-timeout>=2.1"
# The linters of scripts/lint.sh, pinned: a new release may find new things.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "ruff==0.17.6" "mypy==2.4.1" "types-PyYAML==6.0.12.20261122"
# Incremental: scikit-build-core keeps its CMake tree in build/<wheel tag>.
# pip is quiet while it compiles, so show the build's own [n/N] steps (the
# full output is kept in a log, shown in part if the build fails).
if [ -d "$ROOT/build" ] && compgen -G "$ROOT/build/cp*" > /dev/null; then
  echo "setup: building approute (C++ core and Python bindings); incremental: only what changed is compiled"
else
  echo "setup: building approute (C++ core and Python bindings) for the first time; about 3 minutes on 2 cores"
fi
LOG=$(mktemp "${TMPDIR:-/tmp}/approute-build.XXXXXX")
set +e
"$VENV/bin/python" -m pip install -v --disable-pip-version-check --no-build-isolation "$ROOT" 2>&1 \
  | tee "$LOG" \
  | sed -u -nE -e 's#^ *\[([0-9]+/[0-9]+)\] Building CXX object .*\.dir/(.*)\.o$#  [\1] compiling \2#p' \
               -e 's#^ *\[([0-9]+/[0-9]+)\] Linking CXX .* ([^ ]*/)?([^ /]+)$#  [\1] linking \3#p'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  tail -n 40 "$LOG" >&2
  echo "setup: the build failed (exit $rc); the full output is in $LOG" >&2
  exit "$rc"
fi
rm -f "$LOG"
echo "approute installed in $VENV ($("$VENV/bin/python" -c 'import approute; print(approute.__version__)'))"
echo "the command line: $VENV/bin/approute (or scripts/approute, or 'source $VENV/bin/activate' for approute)"
