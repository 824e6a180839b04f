#!/usr/bin/env bash
# approute demo: a real Kamailio routes SIP calls from several domains through
# approute to three simulated Asterisk nodes (SIPp) on 127.0.0.1, with a live
# table of nodes, sessions, affinities and decisions, then a summary. It
# installs what is missing, stops everything and cleans up by itself.
#
#   scripts/demo.sh                      # 20 s, python_exec config
#   scripts/demo.sh --duration 40 --kemi # KEMI config
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${APPROUTE_VENV:-$ROOT/.venv}
bash "$ROOT/scripts/setup.sh"
exec "$VENV/bin/python" "$ROOT/python/approute/demo.py" --repo "$ROOT" "$@"
