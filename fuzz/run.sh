#!/usr/bin/env bash
# Coverage-guided fuzzing of bundle.verify / bundle.load for N inputs (atheris).
#   bash fuzz/run.sh [N] [more libFuzzer flags...]        default N = 100000
# Installs atheris into .venv if it is missing (it is in the `dev` extra). New
# interesting inputs go to $FUZZ_WORK (default: a fresh temporary directory), the
# seeds in fuzz/corpus are read only, and a crash is written to fuzz/crashes/ --
# add it there as a reproducer: tests/test_fuzz_corpus.py replays every file of both.
# Known, already reported bugs are counted rather than stopping the run; FUZZ_STRICT=1
# makes them crashes too.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
shift || true
py=.venv/bin/python
if ! "$py" -c "import atheris" 2>/dev/null; then
  "$py" -m pip install -q "atheris>=2.3"
fi
work="${FUZZ_WORK:-$(mktemp -d -t fuzz-verify-corpus.XXXXXX)}"
# the harness rewrites one small file per input: keep it in RAM when there is a tmpfs
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
mkdir -p "$work" fuzz/crashes
echo "fuzzing $n inputs; new corpus entries in $work" >&2
exec "$py" fuzz/fuzz_verify.py -runs="$n" -max_len=16384 -timeout=30 -rss_limit_mb=4096 \
  -dict=fuzz/bundle.dict -artifact_prefix=fuzz/crashes/ -print_final_stats=1 "$@" \
  "$work" fuzz/corpus
