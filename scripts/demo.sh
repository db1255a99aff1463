#!/usr/bin/env bash
# One command: set up, then train -> export signed -> verify -> load in a fresh process -> predict.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh sklearn
exec .venv/bin/python examples/demo.py "$@"
