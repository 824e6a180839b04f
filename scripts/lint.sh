#!/usr/bin/env bash
# Static checks, one section per tool; any finding fails (scripts/test.sh
# runs this right after setup, so a finding fails CI).
#   scripts/lint.sh                 # every section
#   scripts/lint.sh python cpp-tidy # some sections
# Sections: layers, cpp-format, cpp-tidy, python. To add a tool: a new
# section whose command exits non-zero on a finding.
#
# Configuration: .clang-format and .clang-tidy (C++; clang-format-14 and
# clang-tidy-14 from .ci/install-deps, CLANG_FORMAT / CLANG_TIDY name
# others; `clang-format-14 -i FILE` applies the style), pyproject.toml
# ([tool.ruff], [tool.mypy]; the linters are pip-installed in the venv by
# scripts/setup.sh, versions pinned there). clang-tidy reads build/cpp's
# compile commands (configured here if missing, as scripts/test.sh does).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${APPROUTE_VENV:-$ROOT/.venv}
JOBS=${APPROUTE_JOBS:-2}
CLANG_FORMAT=${CLANG_FORMAT:-clang-format-14}
CLANG_TIDY=${CLANG_TIDY:-clang-tidy-14}
SECTIONS=${*:-layers cpp-format cpp-tidy python}

for section in $SECTIONS; do
  case "$section" in
    layers)
      echo "== lint: source layout, includes point down the layers (scripts/check_layers.py)"
      python3 scripts/check_layers.py
      ;;
    cpp-format)
      echo "== lint: C++ format ($CLANG_FORMAT --dry-run -Werror, .clang-format)"
      mapfile -t cxx_files < <(git ls-files -- 'libapproute/*.h' 'libapproute/*.cc' 'bindings/*.h' 'bindings/*.cc' \
        'tests/cpp/*.h' 'tests/cpp/*.cc' 'tests/fuzz/*.h' 'tests/fuzz/*.cc' 'bench/*.cc' \
        'examples/cpp/*.h' 'examples/cpp/*.cc')
      "$CLANG_FORMAT" --dry-run -Werror "${cxx_files[@]}"
      echo "${#cxx_files[@]} files formatted as .clang-format says"
      ;;
    cpp-tidy)
      echo "== lint: C++ static analysis ($CLANG_TIDY, .clang-tidy) over libapproute/src"
      if [ ! -f build/cpp/compile_commands.json ]; then
        cmake -S . -B build/cpp -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
          -DAPPROUTE_BUILD_TESTS=ON -DAPPROUTE_BUILD_BENCH=ON >/dev/null
      fi
      mapfile -t tidy_files < <(git ls-files -- 'libapproute/src/*.cc')
      # One file per run, $JOBS at a time; xargs fails if any run does
      # (.clang-tidy makes every warning an error).
      printf '%s\n' "${tidy_files[@]}" | xargs -P "$JOBS" -n 1 "$CLANG_TIDY" -p build/cpp --quiet
      echo "${#tidy_files[@]} files without a clang-tidy finding"
      ;;
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
