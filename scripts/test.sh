#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs the checks and tests.
# Usage: scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# quickfix (the 'fix' extra) compiles from source for about 7 minutes the first time; pip caches the wheel.
python -m pip install --quiet -e clients/python -e '.[dev,fix]'

echo "== tools: grpcurl and ghz (go install)"
if tools_bin=$(scripts/tools.sh); then
  PATH="$tools_bin:$PATH"
  export PATH
else
  echo "warning: grpcurl and ghz could not be installed; the grpcurl test will say it skipped" >&2
fi

echo "== Kafka test broker jars (Maven Central; cached)"
scripts/kafka.sh fetch >/dev/null

echo "== contracts: buf lint, buf breaking, generated code up to date"
scripts/check_protos.sh

echo "== ruff"
ruff check .
echo "== mypy --strict"
mypy

run_pytest() {
  set +e
  python -m pytest "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests" >&2
    return 1
  fi
  return "$rc"
}

echo "== pytest tests/engine, the wire and RowBinary encoders and the replay codec, interpreted"
python scripts/build_native.py --clean
run_pytest tests/engine tests/service/test_wire.py tests/service/test_replay_codec.py tests/storage/test_rowbinary.py "$@"

echo "== build the compiled engine (mypyc)"
python scripts/build_native.py > build-native.log 2>&1 || { cat build-native.log; exit 1; }
tail -n 1 build-native.log

echo "== pytest, compiled engine (what the service runs)"
run_pytest "$@"
