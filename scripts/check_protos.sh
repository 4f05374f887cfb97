#!/usr/bin/env bash
# Contract checks for protos/ (what CI runs):
#   1. buf lint      (STANDARD rules, buf.yaml), and buf format (canonical layout of the .proto files)
#   2. buf breaking  (FILE rules) against every commit that changed protos/
#   3. python scripts/gen_protos.py --check  (the committed clients/python/src/marketdata is current)
# buf comes from npm (@bufbuild/buf, pinned in package.json / package-lock.json); it is installed
# here if node_modules lacks it. Exits non-zero if any step fails; all steps run regardless.
#
# Environment:
#   PYTHON                 interpreter with the dev tools (grpcio-tools, mypy-protobuf);
#                          default: $VIRTUAL_ENV's, else .venv/bin/python, else python3 / python.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

failed=()

step() { printf '\n== %s\n' "$*"; }

# --- buf from npm ------------------------------------------------------------------------------
step "buf: ensure installed (npm)"
if [[ ! -x node_modules/.bin/buf ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: install Node.js (>= 18) to get buf" >&2
    exit 2
  fi
  if [[ -f package-lock.json ]]; then
    if ! npm ci --no-audit --no-fund; then
      # e.g. a registry mirror lacking one of buf's per-platform packages; package.json pins buf exactly.
      echo "warning: npm ci failed; falling back to npm install --no-save" >&2
      npm install --no-save --no-audit --no-fund || exit 2
    fi
  else
    npm install --no-audit --no-fund || exit 2
  fi
fi
BUF=(node_modules/.bin/buf)
echo "buf $("${BUF[@]}" --version)"

# --- lint ----------------------------------------------------------------------------------------
step "buf lint"
if "${BUF[@]}" lint; then
  echo "ok"
else
  failed+=("buf lint")
fi

# --- format --------------------------------------------------------------------------------------
step "buf format --diff --exit-code"
if "${BUF[@]}" format --diff --exit-code; then
  echo "ok"
else
  echo "run: npx buf format -w" >&2
  failed+=("buf format")
fi

# --- breaking ------------------------------------------------------------------------------------
# A published contract never breaks: compare with every earlier commit that changed protos/ (there are
# few), not just with the branch tip, so a break is caught whichever commit made it.
step "buf breaking (against every commit that changed protos/)"
if ! git rev-parse --git-dir >/dev/null 2>&1; then
  echo "skipped: not a git checkout"
else
  checked=0
  for sha in $(git log --format=%H -- protos buf.yaml); do
    if ! git ls-tree -r --name-only "$sha" -- protos | grep -q '\.proto$'; then
      continue
    fi
    checked=$((checked + 1))
    if ! "${BUF[@]}" breaking --against ".git#ref=${sha}"; then
      echo "breaking change against ${sha}" >&2
      failed+=("buf breaking vs ${sha:0:12}")
    fi
  done
  echo "compared with ${checked} earlier contract version(s)"
fi

# --- generated code drift ------------------------------------------------------------------------
step "python scripts/gen_protos.py --check"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" && -x "${VIRTUAL_ENV}/bin/python" ]]; then
    PYTHON="${VIRTUAL_ENV}/bin/python"
  elif [[ -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
  elif command -v python3 >/dev/null 2>&1; then
    PYTHON=python3
  else
    PYTHON=python
  fi
fi
if "$PYTHON" scripts/gen_protos.py --check; then
  :
else
  failed+=("gen_protos --check")
fi

echo
if ((${#failed[@]})); then
  printf 'check_protos: FAILED: %s\n' "${failed[*]}"
  exit 1
fi
echo "check_protos: all checks passed"
