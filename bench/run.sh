#!/usr/bin/env bash
# `make bench` entry point: leansip vs Kamailio side by side (see bench/bench.py for the knobs, e.g. QUICK=1).
# The server-agnostic SIPp harness that used to be this file (shared Kamailio anchor) is now bench/harness.sh.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" "$HERE/bench.py" "$@"
