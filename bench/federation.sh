#!/usr/bin/env bash
# Federation drain: how fast a downstream empties an upstream backlog through a
# queue link, FerryMQ→FerryMQ beside RabbitMQ→RabbitMQ, in the same run.
#
#   bench/federation.sh [--messages N] [--rabbit-messages N] [--repeat R] [--write]
#
# For each pair: an upstream queue gets N persistent 1 KiB messages (ferryperf,
# publisher confirms); the downstream gets the same queue, an upstream parameter
# (ack-mode on-confirm, prefetch-count 1000) and a policy — through the same
# management API calls for both brokers; then ferryperf consumes N messages from
# the downstream (prefetch 1000, manual acks) and the drain rate is N / time.
# Also measured: FerryMQ's own drain of a local backlog of the same size, the
# ceiling the link is compared with. Each pair runs R times; medians are printed,
# with both brokers' CPU per message and the whole machine's (every process and
# kernel thread: what bounds a drain when both brokers and the load generator share
# the cores). --rabbit-messages sizes RabbitMQ's backlog
# (default: N) when its federation is too slow for N in reasonable time.
# --write puts the table into BENCHMARKS.md between federation:begin/end markers.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"
COMMAND="bench/federation.sh${*:+ $*}"
N=1000000
RN=""
REPEAT=1
WRITE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) N=$2; shift 2 ;;
    --rabbit-messages) RN=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --write) WRITE=1; shift ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "federation.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
RN=${RN:-$N}

log() { echo "federation.sh: $*" >&2; }
# A free port below 45000 (RabbitMQ's distribution port is AMQP port + 20000).
free_port() {
  python3 -c '
import random, socket
while True:
    p = random.randint(20000, 44999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); t = socket.socket(); t.bind(("127.0.0.1", p + 20000)); print(p); break
    except OSError:
        pass'
}

WORK=$(mktemp -d /tmp/ferrymq-fedbench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
NODES=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for n in "${NODES[@]}"; do "$ROOT/tests/fixtures/rabbitmq.sh" stop "$n" "$WORK/$n" >/dev/null 2>&1; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
log "building ferrymq and ferryperf (release)"
cargo build --release -p ferrymq -p ferryperf >&2
PERF=$ROOT/target/release/ferryperf

declare -A AMQP HTTP PID
start_ferrymq() { # NAME
  AMQP[$1]=$(free_port) HTTP[$1]=$(free_port)
  "$ROOT/target/release/ferrymq" --amqp-bind "127.0.0.1:${AMQP[$1]}" --http-bind "127.0.0.1:${HTTP[$1]}" \
    --data-dir "$WORK/$1" >"$WORK/$1.log" 2>&1 &
  PID[$1]=$!
  PIDS+=("$!")
  for _ in $(seq 1 100); do curl -sf -u guest:guest "localhost:${HTTP[$1]}/api/overview" >/dev/null && return; sleep 0.1; done
  log "$1 did not start"; tail "$WORK/$1.log" >&2; exit 1
}
start_rabbit() { # NAME
  AMQP[$1]=$(free_port) HTTP[$1]=$(free_port)
  NODES+=("$1")
  PID[$1]=$("$ROOT/tests/fixtures/rabbitmq.sh" start "$1" "${AMQP[$1]}" "${HTTP[$1]}" "$WORK/$1")
}
"$ROOT/tests/fixtures/rabbitmq.sh" installed || { log "rabbitmq-server is not installed (apt-get install -y rabbitmq-server)"; exit 1; }
start_ferrymq fup; start_ferrymq fdown
log "starting two RabbitMQ nodes"
start_rabbit rup; start_rabbit rdown

api() { # NAME METHOD PATH [BODY]
  curl -sf -u guest:guest -X "$2" -H 'content-type: application/json' "localhost:${HTTP[$1]}/api$3" ${4:+-d "$4"} >/dev/null
}
ticks() { local s; s=$(cat "/proc/$1/stat"); s=${s##*) }; read -r -a f <<<"$s"; echo $((f[11] + f[12])); }
HZ=$(getconf CLK_TCK)
# Busy ticks of the whole machine (every process and kernel thread, all cores).
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
CORES=$(nproc)
uri() { echo "amqp://guest:guest@127.0.0.1:${AMQP[$1]}/%2F"; }
rate_of() { sed -n 's/.*"consume_rate":\([0-9.]*\).*/\1/p'; }

fill() { # NAME QUEUE COUNT
  "$PERF" throughput --uri "$(uri "$1")" --publishers 1 --consumers 0 --size 1024 --persistent --confirm 256 \
    --durable-queue --queue "$2" --pmessages "$3" --duration 0 --quiet --json >/dev/null
}
drain() { # NAME QUEUE COUNT → JSON
  "$PERF" throughput --uri "$(uri "$1")" --publishers 0 --consumers 1 --prefetch 1000 --durable-queue \
    --queue "$2" --cmessages "$3" --duration 0 --quiet --json
}

RESULTS=$WORK/results.tsv
per_message() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'; }
# One federated drain: UPSTREAM DOWNSTREAM COUNT REP. The link is configured first;
# `ferryperf federation` declares the queue on both sides and pre-loads the upstream,
# then (measured on its own) times the downstream consumer's drain.
federated() {
  local up=$1 down=$2 n=$3 q="fed.bench.$4" before_u before_d before_m json rate cpu machine
  api "$down" PUT "/parameters/federation-upstream/%2F/bench" \
    "{\"value\":{\"uri\":\"amqp://guest:guest@127.0.0.1:${AMQP[$up]}\",\"ack-mode\":\"on-confirm\",\"prefetch-count\":1000}}"
  api "$down" PUT "/policies/%2F/bench" '{"pattern":"^fed\\.bench\\.","definition":{"federation-upstream":"bench"},"apply-to":"queues"}'
  local fed=("$PERF" federation --upstream "$(uri "$up")" --downstream "$(uri "$down")" --queue "$q"
    --messages "$n" --size 1024 --prefetch 1000 --json)
  "${fed[@]}" --only preload >/dev/null
  sleep 1
  before_u=$(ticks "${PID[$up]}") before_d=$(ticks "${PID[$down]}") before_m=$(busy)
  json=$("${fed[@]}" --only drain)
  machine=$(per_message $(($(busy) - before_m)) "$n")
  rate=$(sed -n 's/.*"drain_rate":\([0-9.]*\).*/\1/p' <<<"$json")
  cpu=$(awk -v a=$(($(ticks "${PID[$up]}") - before_u)) -v b=$(($(ticks "${PID[$down]}") - before_d)) -v hz="$HZ" -v n="$n" \
    'BEGIN { printf "%.1f", (a + b) / hz * 1e6 / n }')
  api "$down" DELETE "/policies/%2F/bench"
  api "$down" DELETE "/queues/%2F/$q"
  api "$up" DELETE "/queues/%2F/$q"
  log "$up → $down: $n messages drained at $rate msg/s, $cpu µs broker CPU per message (both brokers), $machine µs machine CPU"
  printf '%s\t%s\t%s\t%s\n' "$up" "$rate" "$cpu" "$machine" >>"$RESULTS"
}
local_drain() { # COUNT REP
  local q="local.bench.$2" before before_m json rate cpu machine
  fill fdown "$q" "$1"
  before=$(ticks "${PID[fdown]}") before_m=$(busy)
  json=$(drain fdown "$q" "$1")
  machine=$(per_message $(($(busy) - before_m)) "$1")
  rate=$(rate_of <<<"$json")
  cpu=$(awk -v t=$(($(ticks "${PID[fdown]}") - before)) -v hz="$HZ" -v n="$1" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  api fdown DELETE "/queues/%2F/$q"
  log "FerryMQ local drain: $rate msg/s, $cpu µs per message, $machine µs machine CPU"
  printf 'local\t%s\t%s\t%s\n' "$rate" "$cpu" "$machine" >>"$RESULTS"
}

for rep in $(seq 1 "$REPEAT"); do
  federated fup fdown "$N" "$rep"
  local_drain "$N" "$rep"
  federated rup rdown "$RN" "$rep"
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "0"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v k="$1" -v c="$2" '$1 == k { print $c }' "$RESULTS" | median; }
F=$(col fup 2) FC=$(col fup 3) FM=$(col fup 4) R=$(col rup 2) RC=$(col rup 3) RM=$(col rup 4)
L=$(col local 2) LC=$(col local 3) LM=$(col local 4)
# The rate the machine's cores would allow if CPU were the only limit.
ceiling() { awk -v c="$CORES" -v m="$1" 'BEGIN { printf "%.0f", (m > 0 ? c * 1e6 / m : 0) }'; }
TABLE=$(cat <<EOF
Federation drain, 1 KiB persistent messages, ack-mode on-confirm, prefetch-count 1000, consumer prefetch 1000 (medians of $REPEAT; \`$COMMAND\`, $(date -u '+%F %H:%M UTC')):

| drain through a queue link | msg/s | broker CPU µs/msg (both brokers) | machine CPU µs/msg (all processes) | CPU-only ceiling on $CORES cores, msg/s |
|---|---:|---:|---:|---:|
| FerryMQ → FerryMQ ($N messages) | $F | $FC | $FM | $(ceiling "$FM") |
| RabbitMQ 3.10.8 → RabbitMQ 3.10.8 ($RN messages) | $R | $RC | $RM | $(ceiling "$RM") |
| **ratio** | **$(awk -v a="$F" -v b="$R" 'BEGIN { printf "%.1f×", (b > 0 ? a / b : 0) }')** | | | |
| FerryMQ local drain of the same backlog (no link) | $L | $LC | $LM | $(ceiling "$LM") |
| link drain / local drain | $(awk -v a="$F" -v b="$L" 'BEGIN { printf "%.0f%%", (b > 0 ? 100 * a / b : 0) }') | | | |
EOF
)
echo "$TABLE"
if [ "$WRITE" = 1 ]; then
  write_bench_section federation "Federation" "$TABLE"
  log "BENCHMARKS.md updated"
fi
