#!/usr/bin/env bash
# The test command (README's second command; .ci/run calls it): set up, then run the suite.
# Tests marked `slow` (soak, hot swap under load, full-data runs) are separate commands, see README.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -m "not slow" "$@"
