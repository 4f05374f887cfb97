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
python -m pip install --quiet -e clients/python -e '.[dev]'

echo "== contracts: buf lint, buf breaking, generated code up to date"
scripts/check_protos.sh

echo "== ruff"
ruff check .
echo "== mypy --strict"
mypy

echo "== pytest"
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
