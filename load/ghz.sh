#!/usr/bin/env bash
# Unary load with ghz: GetOrderBook (BTC/USD, kraken, depth 20) against a trivial RPC (grpc.health.v1.Health/Check),
# one after the other, with the same concurrency and duration, against one `mds serve` on loopback.
#
# Prints a summary line per call (load/ghz_summary.py), then one JSON line: QPS (ghz's, all calls; ok_qps: OK calls
# only, since ghz ends a -z run by cancelling the calls in flight) and p50/p99 latency (ms) of both calls, and the
# ratio GetOrderBook QPS / trivial QPS (the issue's target: >= 0.9). With a started server it also prints the
# server's CPU per call of each (its front process included). By default the server and ghz get a CPU each
# (GHZ_PIN): unpinned, ghz's own decoding of the larger response takes CPU from the server and lowers
# GetOrderBook's QPS; the CPU ratio is the server's side alone either way.
#
# Usage (from anywhere):  load/ghz.sh   (ghz -c $GHZ_C -z $GHZ_Z per call; the whole run is bounded)
# Environment (all optional):
#   MDS_TARGET   host:port of a running service; when set, no server is started (loopback only is intended)
#   MDS_FEED     feed spec of the started server (default sim:seed=7,rate=2000)
#   GHZ_C        concurrency (default 50)
#   GHZ_Z        duration of each run (default 10s)
#   GHZ_CONNECTIONS  TCP connections ghz spreads the workers over (default 1)
#   GHZ_WARMUP   duration of an unrecorded warm-up run of each call (default 2s; 0 for none)
#   GHZ_ROUNDS   alternating rounds (health, book, health, book, ...; default 1); figures are per-call medians
#   GHZ_PIN      1 (the default where there are 2+ CPUs and taskset, and no MDS_TARGET): the started server (and its
#                front process) runs on CPU 0 and ghz on CPU 1 (taskset; ghz --cpus 1), so the load generator does not
#                spend the server's CPU and the QPS measured is the server's; with MDS_TARGET only ghz is pinned.
#                0: both share every CPU (ghz's own decoding then lowers GetOrderBook's QPS)
# The started server gets free ports and a temporary data directory, and is stopped (SIGTERM) on exit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"
[ -x "$py" ] || py="$(command -v python3)"
bin="$(scripts/tools.sh)"
ghz="$bin/ghz"
grpcurl="$bin/grpcurl"

c="${GHZ_C:-50}"
z="${GHZ_Z:-10s}"
conns="${GHZ_CONNECTIONS:-1}"
warmup="${GHZ_WARMUP:-2s}"
rounds="${GHZ_ROUNDS:-1}"
pin="${GHZ_PIN:-auto}"
if [ "$pin" = "auto" ]; then  # pin only a server this script starts
  if [ -z "${MDS_TARGET:-}" ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then pin=1; else pin=0; fi
fi
server_cmd=()
ghz_cmd=("$ghz")
if [ "$pin" = "1" ]; then
  if [ "$(nproc)" -lt 2 ]; then echo "GHZ_PIN=1 needs 2 CPUs; this machine has $(nproc)" >&2; exit 2; fi
  command -v taskset >/dev/null || { echo "GHZ_PIN=1 needs taskset (util-linux)" >&2; exit 2; }
  server_cmd=(taskset -c 0)
  ghz_cmd=(taskset -c 1 "$ghz" --cpus 1)
elif [ "$pin" != "0" ]; then
  echo "GHZ_PIN must be 0 or 1, got '$pin'" >&2; exit 2
fi
feed="${MDS_FEED:-sim:seed=7,rate=2000}"

work="$(mktemp -d "${TMPDIR:-/tmp}/mds-ghz.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

if [ -n "${MDS_TARGET:-}" ]; then
  target="$MDS_TARGET"
else
  port="$(free_port)"
  mport="$(free_port)"
  "${server_cmd[@]}" "$py" -m server.cli serve --grpc-port "$port" --metrics-port "$mport" --data-dir "$work/data" \
    --feed "$feed" --log-level WARNING >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  target="127.0.0.1:$port"
fi

# Wait (at most 60 s) for the health service to say SERVING.
deadline=$((SECONDS + 60))
until "$grpcurl" -plaintext -max-time 2 "$target" grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"'; do
  if [ -n "$server_pid" ] && ! kill -0 "$server_pid" 2>/dev/null; then
    echo "mds serve exited early:" >&2; cat "$work/server.err" >&2; exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then echo "no SERVING from $target within 60 s" >&2; exit 1; fi
  sleep 0.2
done
sleep 1  # let the simulator fill the books

book_call="marketdata.v1.MarketDataService/GetOrderBook"
book_data='{"symbol":"BTC/USD","venue":"kraken","depth":20}'
health_call="grpc.health.v1.Health/Check"

# ghz's reflection client asks for method symbols (marketdata.v1.MarketDataService.GetOrderBook), which Python's
# grpcio-reflection does not resolve ("Symbol not found"); so GetOrderBook is described by the proto files and the
# health service by a protoset that grpcurl writes from reflection (service symbols resolve).
"$grpcurl" -plaintext -protoset-out "$work/health.protoset" "$target" describe grpc.health.v1.Health >/dev/null
book_desc=(--import-paths protos --proto protos/marketdata/v1/market_data_service.proto)
health_desc=(--protoset "$work/health.protoset")

server_cpu() {  # CPU seconds of the started server and its children (the --grpc-front process); 0 if external
  if [ -z "$server_pid" ]; then echo 0; return; fi
  "$py" -c 'import sys; from load.stream_load import children, cpu_seconds; p = int(sys.argv[1]); print(cpu_seconds(p) + sum(cpu_seconds(c) for c in children(p)))' "$server_pid"
}

run_ghz() {  # call data duration out-file descriptor-args...; also writes the server's CPU seconds to out-file.cpu
  local call="$1" data="$2" dur="$3" out="$4" before
  shift 4
  before="$(server_cpu)"
  "${ghz_cmd[@]}" --insecure "$@" --call "$call" -d "$data" -c "$c" -z "$dur" --connections "$conns" --format json \
    -o "$out" "$target" >/dev/null
  echo "$before $(server_cpu)" >"$out.cpu"
}

if [ "$warmup" != "0" ]; then
  run_ghz "$health_call" '{}' "$warmup" "$work/warm-health.json" "${health_desc[@]}"
  run_ghz "$book_call" "$book_data" "$warmup" "$work/warm-book.json" "${book_desc[@]}"
fi
for r in $(seq 1 "$rounds"); do  # alternate the two calls, so drift on a shared machine hits both
  run_ghz "$health_call" '{}' "$z" "$work/health.$r.json" "${health_desc[@]}"
  run_ghz "$book_call" "$book_data" "$z" "$work/book.$r.json" "${book_desc[@]}"
done

"$py" -m load.ghz_summary --dir "$work" --rounds "$rounds" --concurrency "$c" --duration "$z" \
  --connections "$conns" --pinned "$pin" --target "$target" --server "${MDS_TARGET:+external}${MDS_TARGET:-$feed}"
