#!/usr/bin/env bash
# Static checks, one section per tool; the first finding fails the script
# (scripts/test.sh runs it right after setup, so a finding fails CI).
#
#   scripts/lint.sh
#
# To add a tool: a new section below, `section "what"` then the command,
# which must exit non-zero on a finding.
#
# C++: clang-format-14 and clang-tidy-14 (.ci/install-deps installs them;
# CLANG_FORMAT / CLANG_TIDY name others). The style is .clang-format; to
# apply it to a file: `clang-format-14 -i FILE`. clang-tidy's checks are
# .clang-tidy; it reads the compile commands of build/cpp (configured here
# if missing, as scripts/test.sh configures it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
JOBS=${APPROUTE_JOBS:-2}
CLANG_FORMAT=${CLANG_FORMAT:-clang-format-14}
CLANG_TIDY=${CLANG_TIDY:-clang-tidy-14}

section() { echo "== lint: $*"; }

section "source layout: includes point down the layers (scripts/check_layers.py)"
python3 scripts/check_layers.py

section "C++ format ($CLANG_FORMAT --dry-run -Werror, .clang-format)"
mapfile -t cxx_files < <(git ls-files -- 'libapproute/*.h' 'libapproute/*.cc' 'bindings/*.h' 'bindings/*.cc' \
  'tests/cpp/*.h' 'tests/cpp/*.cc' 'tests/fuzz/*.h' 'tests/fuzz/*.cc' 'bench/*.cc' \
  'examples/cpp/*.h' 'examples/cpp/*.cc')
"$CLANG_FORMAT" --dry-run -Werror "${cxx_files[@]}"
echo "${#cxx_files[@]} files formatted as .clang-format says"

section "C++ static analysis ($CLANG_TIDY, .clang-tidy) over libapproute/src"
if [ ! -f build/cpp/compile_commands.json ]; then
  cmake -S . -B build/cpp -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DAPPROUTE_BUILD_TESTS=ON -DAPPROUTE_BUILD_BENCH=ON >/dev/null
fi
mapfile -t tidy_files < <(git ls-files -- 'libapproute/src/*.cc')
# One file per run, $JOBS at a time; xargs fails if any run does
# (.clang-tidy makes every warning an error).
printf '%s\n' "${tidy_files[@]}" | xargs -P "$JOBS" -n 1 "$CLANG_TIDY" -p build/cpp --quiet
echo "${#tidy_files[@]} files without a clang-tidy finding"
