#!/usr/bin/env bash
# Installs what the service needs (a virtualenv in .venv, the packages, the compiled engine) and starts
# `mds serve`: the simulator feed, embedded storage under ./data, gRPC on 127.0.0.1:50051, metrics on 9100.
# Extra arguments go to `mds serve` (e.g. --feed file:tardis-jsonl:PATH?speed=10x).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e clients/python -e .
# The build type-checks what the compiled modules import (server/storage imports protobuf): its stubs too.
python -m pip install --quiet "mypy>=2.4" "setuptools>=77" types-protobuf
python scripts/build_native.py > build-native.log 2>&1 || { cat build-native.log; exit 1; }
exec mds serve "$@"
