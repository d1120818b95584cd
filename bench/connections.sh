#!/usr/bin/env bash
# Idle connections: what N open connections (one channel each, heartbeats off)
# cost FerryMQ and RabbitMQ in resident memory, measured in the same run.
#
#   bench/connections.sh [--count N] [--write]
#
# Each broker starts fresh; its RSS is read from /proc before the connections and
# while `ferryperf connections` holds them. RabbitMQ needs a file limit above N
# (the node inherits this shell's `ulimit -n`).
# --write puts the table into BENCHMARKS.md between connections:begin/end markers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"
COMMAND="bench/connections.sh${*:+ $*}"
COUNT=10000
WRITE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --count) COUNT=$2; shift 2 ;;
    --write) WRITE=1; shift ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "connections.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
log() { echo "connections.sh: $*" >&2; }
[ "$(ulimit -n)" -gt $((COUNT + 1000)) ] || ulimit -n $((COUNT + 2000)) ||
  { log "need a file limit above $COUNT"; exit 1; }

WORK=$(mktemp -d /tmp/ferrymq-connbench.XXXXXX)
chmod 755 "$WORK"
FERRY_PID="" RABBIT=0
cleanup() {
  set +e
  [ -n "$FERRY_PID" ] && kill -TERM "$FERRY_PID" 2>/dev/null && wait "$FERRY_PID" 2>/dev/null
  [ "$RABBIT" = 1 ] && "$ROOT/tests/fixtures/rabbitmq.sh" stop conns "$WORK/rabbit" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
cargo build --release -p ferrymq -p ferryperf >&2
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# Holds COUNT connections to URI and prints "before during" RSS (KiB) of PID.
measure() { # PID URI
  local before during
  sleep 2
  before=$(rss_kib "$1")
  target/release/ferryperf connections --uri "$2" --count "$COUNT" --hold 12 --json >"$WORK/conn.json" &
  local perf=$!
  # Sample once all connections are open and have settled.
  for _ in $(seq 1 120); do
    sleep 0.5
    [ -s "$WORK/conn.json" ] && break
    during=$(rss_kib "$1")
  done
  wait "$perf" || true
  grep -q "\"succeeded\":$COUNT" "$WORK/conn.json" || log "not every connection succeeded: $(cat "$WORK/conn.json")"
  echo "$before $during"
}

port() { python3 -c 'import random; print(random.randint(20000, 44999))'; }
FP=$(port)
target/release/ferrymq --amqp-bind "127.0.0.1:$FP" --http-bind "127.0.0.1:$(port)" --data-dir "$WORK/ferrymq" --log warn &
FERRY_PID=$!
read -r FB FD < <(measure "$FERRY_PID" "amqp://guest:guest@127.0.0.1:$FP/%2F")
kill -TERM "$FERRY_PID"; wait "$FERRY_PID" 2>/dev/null || true; FERRY_PID=""

RP=$(port)
RABBIT=1
RPID=$("$ROOT/tests/fixtures/rabbitmq.sh" start conns "$RP" "$(port)" "$WORK/rabbit")
read -r RB RD < <(measure "$RPID" "amqp://guest:guest@127.0.0.1:$RP/%2F")

per() { awk -v b="$1" -v d="$2" -v n="$COUNT" 'BEGIN { printf "%.1f", (d - b) / n }'; }
TABLE=$(cat <<EOF
$COUNT idle connections, one channel each, heartbeats off (\`$COMMAND\`, $(date -u +%F)):

| broker | RSS before, MiB | RSS with the connections, MiB | KiB per connection |
|---|---:|---:|---:|
| FerryMQ | $(awk -v k="$FB" 'BEGIN { printf "%.1f", k / 1024 }') | $(awk -v k="$FD" 'BEGIN { printf "%.1f", k / 1024 }') | $(per "$FB" "$FD") |
| RabbitMQ 3.10.8 | $(awk -v k="$RB" 'BEGIN { printf "%.1f", k / 1024 }') | $(awk -v k="$RD" 'BEGIN { printf "%.1f", k / 1024 }') | $(per "$RB" "$RD") |
EOF
)
echo "$TABLE"
if [ "$WRITE" = 1 ]; then
  write_bench_section connections "Idle connections" "$TABLE"
  log "BENCHMARKS.md updated"
fi
