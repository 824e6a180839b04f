#!/usr/bin/env bash
# Static checks; any finding fails (scripts/test.sh runs this).
#   scripts/lint.sh            # every section
#   scripts/lint.sh python     # one section
# Configuration: pyproject.toml ([tool.ruff], [tool.mypy]). The linters are
# pip-installed in the venv by scripts/setup.sh (versions pinned there).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${APPROUTE_VENV:-$ROOT/.venv}
SECTIONS=${*:-python}

for section in $SECTIONS; do
  case "$section" in
    python)
      echo "== lint: python (ruff, mypy --strict: python/ and tests/)"
      "$VENV/bin/ruff" check python tests bench scripts examples
      "$VENV/bin/mypy"
      ;;
    *)
      echo "lint.sh: unknown section $section" >&2
      exit 2
      ;;
  esac
done
