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
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "scikit-build-core>=0.10" "pybind11>=3" "pytest>=7" "hypothesis>=6" "PyYAML>=5" "matplotlib>=3.5" "prometheus-client>=0.16" "promql-parser>=0.12"
# The linters of scripts/lint.sh, pinned: a new release may find new things.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  "ruff==0.17.6" "mypy==2.4.1" "types-PyYAML==6.0.12.20261122"
# Incremental: scikit-build-core keeps its CMake tree in build/<wheel tag>.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation "$ROOT"
echo "approute installed in $VENV ($("$VENV/bin/python" -c 'import approute; print(approute.__version__)'))"
