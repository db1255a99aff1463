#!/usr/bin/env bash
# Create (or reuse) .venv and install model-bundle with the given extras.
#   bash scripts/setup.sh sklearn,test
# torch is pinned to the local CPU build first when an extra needs it: a bare
# `torch` requirement would otherwise pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-sklearn}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
case ",$extras," in
  *,torch,*|*,all,*|*,bench,*) python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true ;;
esac
python -m pip install -q -e ".[${extras}]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import bundle, onnxruntime, safetensors, cryptography" \
  || { echo "setup failed: core dependencies did not install" >&2; exit 1; }
