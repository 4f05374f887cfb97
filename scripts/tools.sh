#!/usr/bin/env bash
# Installs the Go tools the tests and load scripts use (grpcurl, ghz) with `go install`, into
# $(go env GOPATH)/bin, and prints that directory. Idempotent: an installed tool is kept.
set -euo pipefail
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "go is needed (https://go.dev)" >&2; exit 2; }
bin="$(go env GOPATH)/bin"
if [ ! -x "$bin/grpcurl" ]; then
  go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3 >&2
fi
if [ ! -x "$bin/ghz" ]; then
  go install github.com/bojand/ghz/cmd/ghz@latest >&2
fi
echo "$bin"
