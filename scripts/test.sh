#!/usr/bin/env bash
# One command: set up, lint and type-check, then run the whole test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "sklearn,torch,tensorflow,compress,migrate,store,boosting,test,lint,serve-test" || exit 1
# tests/serve drives the page in a real headless browser: Debian's chromium + chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
      || echo "could not install chromium/chromium-driver: the browser test will skip" >&2
  else
    echo "chromium/chromedriver missing and not root: the browser test will skip" >&2
  fi
fi
# The gates run before pytest (seconds, not minutes) and each failure is named; both
# run, so one run reports every gate that failed.
gates_failed=()
echo "== ruff check ." >&2
.venv/bin/ruff check . || gates_failed+=("ruff check .")
echo "== ruff format --check ." >&2
.venv/bin/ruff format --check . || gates_failed+=("ruff format --check .")
echo "== mypy (strict; files from pyproject: bundle/ tests/)" >&2
.venv/bin/mypy || gates_failed+=("mypy")
if [ "${#gates_failed[@]}" -gt 0 ]; then
  printf 'gate failed: %s\n' "${gates_failed[@]}" >&2
  exit 1
fi
# The onnxruntime matrix (tests marked `matrix`): one cached venv per release, from the
# registry; a failure here fails the run unless MODEL_BUNDLE_SKIP_MATRIX=1.
if [ "${MODEL_BUNDLE_SKIP_MATRIX:-0}" != "1" ]; then
  .venv/bin/python scripts/runtime_matrix.py oldest newest || exit 1
fi
# Spark's JVM (tests/integrations/test_spark.py skips without java; CI must not).
if ! command -v java >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && apt-get install -y -qq default-jre-headless; } >/dev/null \
      || echo "warning: could not install default-jre-headless; the Spark tests will skip" >&2
  else
    echo "warning: no java; install default-jre-headless (Java 17+) or the Spark tests skip" >&2
  fi
fi
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
