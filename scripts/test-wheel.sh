#!/usr/bin/env bash
# Tests the wheel as an operator gets it: builds it (scripts/wheel.sh),
# installs dist/*.whl into a fresh venv of /usr/bin/python3 in a temporary
# directory, and checks, against that install only:
#
#   1. the extension links nothing outside the wheel but glibc, libstdc++ and
#      libgcc_s (ldd on the installed _core*.so), auditwheel agrees (a
#      manylinux tag), and it exports no symbol of its private libcrypto;
#   2. the Python tests pass, run from a directory where the source tree's
#      python/ is not importable (a pytest plugin fails the run if approute
#      is imported from anywhere but the venv);
#   3. the sdist holds what a build needs (building it is left out of CI:
#      a full compile; `pip wheel dist/approute-*.tar.gz` does it);
#   4. one Kamailio end-to-end test passes: Kamailio's embedded python finds
#      the package through APPROUTE_SITE_DIRS, as docs/install.md says.
#
#   scripts/test-wheel.sh             # build, install, test
#   scripts/test-wheel.sh --no-build  # test the wheel already in dist/
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD_VENV=${APPROUTE_VENV:-$ROOT/.venv}
E2E_TEST="tests/e2e/test_kamailio_e2e.py::test_same_domain_lands_on_one_node_whichever_worker"

if [ "${1:-}" != "--no-build" ]; then
  bash scripts/wheel.sh
fi
mapfile -t wheels < <(ls dist/approute-*-cp3*-manylinux_*.whl 2>/dev/null)
if [ ${#wheels[@]} -ne 1 ]; then
  echo "test-wheel: expected exactly one wheel in dist/, found ${#wheels[@]}" >&2
  exit 1
fi
WHEEL="$ROOT/${wheels[0]}"

echo "== test-wheel: sdist contents"
mapfile -t sdists < <(ls dist/approute-*.tar.gz 2>/dev/null)
if [ ${#sdists[@]} -ne 1 ]; then
  echo "test-wheel: expected exactly one sdist in dist/, found ${#sdists[@]}" >&2
  exit 1
fi
listing=$(tar tzf "${sdists[0]}" | cut -d/ -f2- | sort)
for f in PKG-INFO pyproject.toml VERSION CMakeLists.txt cmake/StaticDeps.cmake cmake/approuteConfig.cmake.in \
         libapproute/CMakeLists.txt bindings/CMakeLists.txt bindings/core.cc python/approute/__init__.py \
         examples/kamailio/approute_handler.py README.md; do
  grep -qxF "$f" <<<"$listing" || { echo "test-wheel: ${sdists[0]} lacks $f" >&2; exit 1; }
done
if grep -qE '^(build|dist|\.venv)/.' <<<"$listing"; then
  echo "test-wheel: ${sdists[0]} holds build output:" >&2
  grep -E '^(build|dist|\.venv)/.' <<<"$listing" | head >&2
  exit 1
fi
echo "  $(basename "${sdists[0]}"): $(grep -c . <<<"$listing") files, no build output"

TMP=$(mktemp -d /tmp/approute-test-wheel.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
VENV="$TMP/venv"
echo "test-wheel: fresh venv $VENV, pip install $(basename "$WHEEL")[test,simulate]"
/usr/bin/python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL[test,simulate]"

# Everything below runs from $TMP: neither the source tree nor its python/
# is on sys.path.
cd "$TMP"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CORE=$("$VENV/bin/python" -c 'import approute._core as c; print(c.__file__)')
case "$CORE" in
  "$VENV"/*) ;;
  *) echo "test-wheel: approute._core imported from $CORE, not from $VENV" >&2; exit 1 ;;
esac
if (cd / && /usr/bin/python3 -c 'import approute' 2>/dev/null); then
  echo "test-wheel: /usr/bin/python3 imports an approute of its own: the e2e test" \
       "would not show that Kamailio uses the venv's" >&2
  exit 1
fi

echo "== test-wheel: shared libraries of $(basename "$CORE")"
# Base libraries: glibc's, libstdc++, libgcc_s (every manylinux policy allows them).
base='^(linux-vdso\.so\.1|ld-linux-x86-64\.so\.2|libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libstdc\+\+\.so\.6|libgcc_s\.so\.1)$'
bad=()
n_wheel=0
while read -r name arrow path _; do
  [ -n "$name" ] || continue
  if [ "$arrow" != "=>" ]; then path=$name; name=$(basename "$name"); fi
  [ "$path" = "not" ] || path=$(realpath -m "$path")   # "not found" stays as is
  if [[ "$name" =~ $base ]]; then
    continue
  elif [[ "$path" == "$SITE"/approute.libs/* ]]; then
    n_wheel=$((n_wheel + 1))
  else
    bad+=("$name => $path")
  fi
done <<<"$(ldd "$CORE")"
echo "  $n_wheel libraries from the wheel's approute.libs/; base: $(ldd "$CORE" | awk '{print $1}' \
  | xargs -n1 basename | grep -E "$base" | sort | tr '\n' ' ')"
if [ ${#bad[@]} -ne 0 ]; then
  echo "test-wheel: _core links libraries that are neither base nor in the wheel:" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
# And at run time: a process that loaded the extension maps no system copy of them.
mapped=$("$VENV/bin/python" -c '
import approute, approute._core
for line in open("/proc/self/maps"):
    path = line.split()[-1]
    if path.startswith("/") and "/approute.libs/" not in path and any(
            n in path for n in ("libabsl_", "libyaml-cpp", "libxxhash", "libapproute")):
        print(path)' | sort -u)
if [ -n "$mapped" ]; then
  echo "test-wheel: importing approute maps system libraries:" >&2
  echo "$mapped" >&2
  exit 1
fi
leaked=$(nm -D --defined-only "$CORE" | awk '{print $3}' | grep -E '^(EVP_|OPENSSL_|CRYPTO_|HMAC|SHA[0-9]|XXH)' || true)
if [ -n "$leaked" ]; then
  echo "test-wheel: _core exports symbols of its static libcrypto/xxHash:" >&2
  echo "$leaked" | head -20 >&2
  exit 1
fi
show=$("$BUILD_VENV/bin/auditwheel" show "$WHEEL" 2>&1)
echo "$show" | grep -A1 'consistent' | tr -s ' \n' ' ' | sed 's/^/  auditwheel: /'; echo
if ! echo "$show" | grep -q 'platform tag: "manylinux_'; then
  echo "$show" >&2
  echo "test-wheel: auditwheel show does not give the wheel a manylinux tag" >&2
  exit 1
fi
for f in approute_handler.py kamailio.cfg approute-kamailio.yaml router.yaml; do
  [ -f "$VENV/share/approute/kamailio/$f" ] || { echo "test-wheel: $VENV/share/approute/kamailio/$f missing" >&2; exit 1; }
done
"$VENV/bin/approute" --help >/dev/null

# Fails the run unless every approute module came from the venv.
cat > "$SITE/approute_wheel_origin.py" <<'EOF'
import os
import sys

import pytest


def pytest_collection_finish(session):
    prefix = os.path.realpath(sys.prefix) + os.sep
    wrong = sorted("%s: %s" % (name, getattr(mod, "__file__", None))
                   for name, mod in list(sys.modules.items())
                   if (name == "approute" or name.startswith("approute."))
                   and not os.path.realpath(getattr(mod, "__file__", None) or "/").startswith(prefix))
    if "approute" not in sys.modules or wrong:
        raise pytest.UsageError("approute not imported from %s: %s" % (prefix, wrong or "not imported"))
    session.config.pluginmanager.get_plugin("terminalreporter").write_line(
        "approute under test: %s" % sys.modules["approute"].__file__)
EOF

PYTEST=("$VENV/bin/python" -m pytest -q -p no:cacheprovider -p approute_wheel_origin
        --rootdir "$TMP" -c "$ROOT/pyproject.toml")
echo "== test-wheel: Python tests against the installed wheel"
"${PYTEST[@]}" "$ROOT/tests/python"
echo "== test-wheel: Kamailio end-to-end test against the installed wheel"
APPROUTE_E2E_REQUIRED=1 "${PYTEST[@]}" "$ROOT/$E2E_TEST"
echo "test-wheel: ok ($(basename "$WHEEL"))"
