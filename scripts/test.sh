#!/usr/bin/env bash
# One command: set up, then run the whole test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "sklearn,torch,tensorflow,compress,test" || exit 1
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
