#!/usr/bin/env bash
# Broker RSS for queued messages by body size: how much memory a queue holding about
# 75 MiB of transient message bodies costs, for 1 KiB, 16 KiB and 64 KiB bodies.
#
#   bench/queued-memory.sh [--mib M]
#
# For each size a fresh broker (empty data dir) gets M MiB (default 75) of messages
# published into one queue by ferryperf, with no consumer; the broker's RSS (VmRSS) is
# read before and one second after. Prints a markdown table of the RSS growth and its
# ratio to the bodies' size. Environment: FERRY_PORT/FERRY_HTTP_PORT (5794/15794),
# FERRYMQ_BIN (a broker binary to measure instead of this tree's release build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=75
while [ $# -gt 0 ]; do
  case "$1" in
    --mib) MIB=$2; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "queued-memory.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
PORT=${FERRY_PORT:-5794}
HTTP_PORT=${FERRY_HTTP_PORT:-15794}
echo "queued-memory.sh: building ferrymq and ferryperf (release)" >&2
(cd "$ROOT" && cargo build --release -q -p ferrymq -p ferryperf)
BIN=$ROOT/target/release
WORK=$(mktemp -d /tmp/ferrymq-qmem.XXXXXX)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"' EXIT
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

echo "| body size | messages | bodies, MiB | RSS growth, MiB | growth ÷ bodies |"
echo "|---:|---:|---:|---:|---:|"
for size in 1024 16384 65536; do
  n=$((MIB * 1048576 / size))
  rm -rf "$WORK/data"
  "${FERRYMQ_BIN:-$BIN/ferrymq}" --amqp-bind "127.0.0.1:$PORT" --http-bind "127.0.0.1:$HTTP_PORT" --data-dir "$WORK/data" >"$WORK/log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  before=$(rss "$PID")
  "$BIN/ferryperf" throughput --uri "amqp://guest:guest@127.0.0.1:$PORT/%2F" --publishers 1 --consumers 0 \
    --size "$size" --queue queued.memory --pmessages "$n" --duration 0 --quiet --json >/dev/null
  sleep 1
  after=$(rss "$PID")
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  awk -v s="$size" -v n="$n" -v b="$before" -v a="$after" 'BEGIN {
    bodies = s * n / 1048576; grown = (a - b) / 1024
    printf "| %d B | %d | %.0f | %.0f | %.2f× |\n", s, n, bodies, grown, grown / bodies }'
done
