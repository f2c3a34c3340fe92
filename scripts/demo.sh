#!/usr/bin/env bash
# README's first command: set up, then run the demo end to end on the embedded default
# (train a small model on the bundled sample -> export -> serve -> gRPC recommendations -> stop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sessionrec demo "$@"
