#!/usr/bin/env bash
# A real Apache Kafka broker for the tests: KRaft, one node that is both broker and controller, on
# 127.0.0.1. Its jars come from Maven Central (scripts/kafka/pom.xml); nothing else is downloaded.
#
#   scripts/kafka.sh fetch                          resolve the jars with mvn (once; then instant) and
#                                                   print the lib folder
#   scripts/kafka.sh run   <dir> <port> [<cport>]   write <dir>/server.properties, format <dir>/data
#                                                   (first time) and run the broker in the foreground
#   scripts/kafka.sh start <dir> <port> [<cport>]   the same in the background (own process group),
#                                                   pid in <dir>/kafka.pid, output in <dir>/kafka.out;
#                                                   waits until the port listens, prints the pid
#   scripts/kafka.sh stop  <dir>                    stop what `start` started (TERM, then KILL)
#
# <port> is the client (PLAINTEXT) port, <cport> the controller port (default <port> + 1).
# Environment:
#   MDS_CACHE         cache root (default ~/.cache/mds); jars go to $MDS_CACHE/kafka/libs
#   KAFKA_HEAP_OPTS   default -Xms128m -Xmx512m
#   KAFKA_JVM_OPTS    extra JVM options (default: serial GC, C1 only: a small, fast-starting test broker)
# Logging is quiet: log4j2 WARN and up goes to <dir>/logs/server.log; stdout/stderr carry little.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM="$ROOT/scripts/kafka/pom.xml"
CACHE="${MDS_CACHE:-$HOME/.cache/mds}/kafka"
LIBS="$CACHE/libs"

usage() {
  sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

pom_stamp() {
  sha256sum "$POM" | cut -d' ' -f1
}

fetch() {
  local stamp
  stamp="$(pom_stamp)"
  if [[ -f "$LIBS/.stamp" && "$(cat "$LIBS/.stamp")" == "$stamp" ]]; then
    echo "$LIBS"
    return 0
  fi
  command -v mvn >/dev/null || { echo "kafka.sh: mvn (Apache Maven) is needed" >&2; exit 2; }
  command -v java >/dev/null || { echo "kafka.sh: java (17+) is needed" >&2; exit 2; }
  mkdir -p "$CACHE"
  # One fetch at a time (CI and a test harness may both ask); the loser finds the stamp afterwards.
  exec 9>"$CACHE/.fetch.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if [[ -f "$LIBS/.stamp" && "$(cat "$LIBS/.stamp")" == "$stamp" ]]; then
    echo "$LIBS"
    return 0
  fi
  local tmp="$CACHE/libs.tmp.$$"
  rm -rf "$tmp"
  echo "kafka.sh: fetching Kafka jars from Maven Central into $LIBS" >&2
  if ! mvn -B -q -ntp -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >&2; then
    rm -rf "$tmp"
    echo "kafka.sh: mvn could not resolve the Kafka jars" >&2
    exit 1
  fi
  echo "$stamp" >"$tmp/.stamp"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  echo "$LIBS"
}

java_opts() {
  # shellcheck disable=SC2206  # word splitting of the option strings is intended
  JAVA_OPTS=(${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
             ${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData}
             -Djava.awt.headless=true
             "-Dlog4j2.configurationFile=$1/log4j2.properties"
             "-Dkafka.logs.dir=$1/logs")
}

write_config() {
  local dir="$1" port="$2" cport="$3"
  mkdir -p "$dir/data" "$dir/logs"
  cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka.sh: a single-node KRaft test broker on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${cport}
listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${cport}
advertised.listeners=PLAINTEXT://127.0.0.1:${port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=${dir}/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=1
EOF
  cat >"$dir/log4j2.properties" <<EOF
# Written by scripts/kafka.sh: warnings and errors only, to logs/server.log.
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${dir}/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = FILE
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
EOF
}

format_storage() {
  local dir="$1" libs="$2"
  if [[ -f "$dir/data/meta.properties" ]]; then
    return 0
  fi
  # A cluster id is 16 random bytes, base64url without padding (what `kafka-storage random-uuid` prints).
  local cluster_id
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  java_opts "$dir"
  java "${JAVA_OPTS[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
    --cluster-id="$cluster_id" --config "$dir/server.properties" --ignore-formatted >"$dir/format.out" 2>&1 \
    || { cat "$dir/format.out" >&2; echo "kafka.sh: storage format failed" >&2; exit 1; }
}

prepare() {
  local dir="$1" port="$2" cport="$3"
  [[ "$port" =~ ^[0-9]+$ && "$cport" =~ ^[0-9]+$ ]] || { echo "kafka.sh: ports must be numbers" >&2; exit 2; }
  LIB_DIR="$(fetch)"
  write_config "$dir" "$port" "$cport"
  format_storage "$dir" "$LIB_DIR"
  java_opts "$dir"
}

cmd="${1:-}"
case "$cmd" in
  fetch)
    fetch
    ;;
  run)
    [[ $# -ge 3 ]] || usage
    dir="$(mkdir -p "$2" && cd "$2" && pwd)"
    port="$3"
    cport="${4:-$((port + 1))}"
    prepare "$dir" "$port" "$cport"
    exec java "${JAVA_OPTS[@]}" -cp "$LIB_DIR/*" kafka.Kafka "$dir/server.properties"
    ;;
  start)
    [[ $# -ge 3 ]] || usage
    dir="$(mkdir -p "$2" && cd "$2" && pwd)"
    port="$3"
    cport="${4:-$((port + 1))}"
    if [[ -f "$dir/kafka.pid" ]] && kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
      echo "kafka.sh: already running (pid $(cat "$dir/kafka.pid"))" >&2
      exit 1
    fi
    prepare "$dir" "$port" "$cport"
    setsid java "${JAVA_OPTS[@]}" -cp "$LIB_DIR/*" kafka.Kafka "$dir/server.properties" \
      >"$dir/kafka.out" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/kafka.pid"
    for _ in $(seq 1 600); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "$pid"
        exit 0
      fi
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "kafka.sh: the broker exited; see $dir/kafka.out and $dir/logs/server.log" >&2
        tail -n 20 "$dir/kafka.out" >&2 || true
        exit 1
      fi
      sleep 0.1
    done
    echo "kafka.sh: the broker did not listen on $port within 60 s; stopping it" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
    exit 1
    ;;
  stop)
    [[ $# -ge 2 ]] || usage
    pidfile="$2/kafka.pid"
    [[ -f "$pidfile" ]] || { echo "kafka.sh: no $pidfile" >&2; exit 0; }
    pid="$(cat "$pidfile")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; exit 0; }
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    ;;
  *)
    usage
    ;;
esac
