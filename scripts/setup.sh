#!/usr/bin/env bash
# Set up everything sessionrec needs on a fresh machine (Python 3.11 + pip + Debian base):
# a virtual environment in .venv with the pinned packages, the project installed editable, and the
# Debian packages the tests use. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.sessionrec-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU wheel from local disk.
    .venv/bin/python -m pip install --quiet -e ".[test]"
    touch "$stamp"
fi

# Debian packages used by tests: a real Prometheus (autoscaling-metric test), curl (the chart's
# liveness probe, run against the real server) and redis-server (the guest session history of
# recommend_session and the Redis Streams event tests; tests start their own on a free loopback port,
# the packaged service is not used).
if [ "${SESSIONREC_SKIP_APT:-0}" != 1 ] && ! { command -v prometheus && command -v curl && command -v redis-server; } >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus curl redis-server >/dev/null) \
            || echo "setup: could not install prometheus, curl and redis-server (their tests will say so)" >&2
    fi
fi
