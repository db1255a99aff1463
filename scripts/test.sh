#!/usr/bin/env bash
# One command: set up, then run the whole test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "sklearn,torch,tensorflow,compress,test" || exit 1
# The onnxruntime matrix (tests marked `matrix`): one cached venv per release, from the
# registry; a failure here fails the run unless MODEL_BUNDLE_SKIP_MATRIX=1.
if [ "${MODEL_BUNDLE_SKIP_MATRIX:-0}" != "1" ]; then
  .venv/bin/python scripts/runtime_matrix.py oldest newest || exit 1
fi
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
