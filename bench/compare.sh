#!/usr/bin/env bash
# FerryMQ vs RabbitMQ on this machine, with ferryperf as the load generator.
#
#   bench/compare.sh [--repeat R] [--duration SECS] [--messages N] [--only SCENARIO[,SCENARIO]]
#                    [--rabbit-only | --ferry-only] [--write]
#
# Builds ferrymq and ferryperf (release), starts FerryMQ and a RabbitMQ node (installing
# rabbitmq-server if missing), runs each scenario R times per broker, alternating brokers, and
# prints a markdown table of medians: msg/s, and broker CPU per message (utime+stime of the broker
# process from /proc/PID/stat, before and after each run, divided by the messages moved). CPU per
# message is the figure that survives a noisy machine and a client sharing the cores.
# --rabbit-only / --ferry-only benchmark one broker (the other's columns show —).
# --write also puts the table into BENCHMARKS.md between the compare:begin/end markers.
#
# Scenarios (DESIGN.md §6):
#   transient-16b   transient 16 B, 1 publisher 1 consumer, autoack            (--duration)
#   transient-1k    transient 1 KiB, 1p1c, autoack                             (--duration)
#   persistent-1k   persistent 1 KiB, confirms window 256, manual acks,
#                   prefetch 1000, durable queue                               (--duration)
#   publish-16b     publish-only 16 B: N messages, then stop                   (--messages)
#   drain-16b       consume-only drain of that backlog (runs publish-16b first)
#   latency-10k     16 B at 10k msg/s: p50 / p99 end-to-end latency            (--duration)
#   queue-churn     declare + delete of a transient queue, one round trip each: cycles/s
#
# Environment: FERRY_PORT/FERRY_HTTP_PORT (5790/15790), RABBIT_PORT/RABBIT_MGMT_PORT (5791/15791),
# FERRY_URI_USER (guest:guest), PAUSE between runs in seconds (1).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"
COMMAND="bench/compare.sh${*:+ $*}"
REPEAT=3
DURATION=10
MESSAGES=""
ONLY=""
BROKERS="ferrymq rabbitmq"
WRITE=0
ALL_SCENARIOS="transient-16b transient-1k persistent-1k publish-16b drain-16b latency-10k queue-churn"

FERRY_PORT=${FERRY_PORT:-5790}
FERRY_HTTP_PORT=${FERRY_HTTP_PORT:-15790}
RABBIT_PORT=${RABBIT_PORT:-5791}
RABBIT_MGMT_PORT=${RABBIT_MGMT_PORT:-15791}
RABBIT_NODE=ferrymq-bench
CREDENTIALS=${FERRY_URI_USER:-guest:guest}
PAUSE=${PAUSE:-1}

usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) REPEAT=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --messages) MESSAGES=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --rabbit-only) BROKERS="rabbitmq"; shift ;;
    --ferry-only) BROKERS="ferrymq"; shift ;;
    --write) WRITE=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
SCENARIOS=${ONLY:-$ALL_SCENARIOS}
SCENARIOS=${SCENARIOS//,/ } # --only a,b or --only "a b"
for s in $SCENARIOS; do
  [[ " $ALL_SCENARIOS " == *" $s "* ]] || { echo "compare.sh: unknown scenario $s (one of: $ALL_SCENARIOS)" >&2; exit 2; }
done
# Publish-only is sized to take about --duration seconds at RabbitMQ's pace (~100k msg/s).
MESSAGES=${MESSAGES:-$((DURATION * 100000))}
# Upper bound for the message-count scenarios, so a stalled broker cannot hang the script.
CAP=$((DURATION * 20 > 120 ? DURATION * 20 : 120))

log() { echo "compare.sh: $*" >&2; }
has() { [[ " $BROKERS " == *" $1 "* ]]; }

WORK=$(mktemp -d /tmp/ferrymq-bench.XXXXXX)
chmod 755 "$WORK" # the RabbitMQ node runs as user rabbitmq and keeps its files under here
RESULTS=$WORK/results.tsv
FERRY_PID=""
RABBIT_STARTED=0

cleanup() {
  set +e
  if [ -n "$FERRY_PID" ] && kill -0 "$FERRY_PID" 2>/dev/null; then
    kill -TERM "$FERRY_PID"
    for _ in $(seq 1 50); do kill -0 "$FERRY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$FERRY_PID" 2>/dev/null
  fi
  if [ "$RABBIT_STARTED" = 1 ]; then
    "$ROOT/tests/fixtures/rabbitmq.sh" stop "$RABBIT_NODE" "$WORK/rabbit"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$ROOT"
if has ferrymq; then
  log "building ferrymq and ferryperf (release)"
  cargo build --release -p ferrymq -p ferryperf >&2
else
  log "building ferryperf (release)"
  cargo build --release -p ferryperf >&2
fi
PERF=$ROOT/target/release/ferryperf

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if has ferrymq; then
  port_open "$FERRY_PORT" && { log "port $FERRY_PORT is already in use"; exit 1; }
  mkdir -p "$WORK/ferrymq-data"
  "$ROOT/target/release/ferrymq" --amqp-bind "127.0.0.1:$FERRY_PORT" --http-bind "127.0.0.1:$FERRY_HTTP_PORT" \
    --data-dir "$WORK/ferrymq-data" >"$WORK/ferrymq.log" 2>&1 &
  FERRY_PID=$!
  # The broker logs a line per listener when ready; the port accepting is the same fact.
  for _ in $(seq 1 300); do
    port_open "$FERRY_PORT" && break
    kill -0 "$FERRY_PID" 2>/dev/null || { log "ferrymq exited:"; tail -n 30 "$WORK/ferrymq.log" >&2; exit 1; }
    sleep 0.1
  done
  port_open "$FERRY_PORT" || { log "ferrymq did not listen on $FERRY_PORT within 30 s"; tail -n 30 "$WORK/ferrymq.log" >&2; exit 1; }
  log "ferrymq up (pid $FERRY_PID)"
fi

if has rabbitmq; then
  if ! "$ROOT/tests/fixtures/rabbitmq.sh" installed; then
    log "installing rabbitmq-server"
    [ "$(id -u)" = 0 ] || { log "rabbitmq-server is missing and installing it needs root"; exit 1; }
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server >&2
  fi
  RABBIT_STARTED=1
  RABBIT_PID=$("$ROOT/tests/fixtures/rabbitmq.sh" start "$RABBIT_NODE" "$RABBIT_PORT" "$RABBIT_MGMT_PORT" "$WORK/rabbit")
  log "rabbitmq up (beam.smp pid $RABBIT_PID)"
fi

CLK_TCK=$(getconf CLK_TCK)

# utime+stime of a process, in clock ticks.
cpu_ticks() {
  local stat rest
  stat=$(cat "/proc/$1/stat")
  rest=${stat##*) } # the command name may contain spaces; fields resume after its ')'
  read -r -a f <<<"$rest"
  echo $((f[11] + f[12]))
}

jfield() { # JSON KEY -> value of a top-level scalar in ferryperf's flat JSON
  sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"
}

# ferryperf throughput against one broker; prints its JSON (see perf_cmd).
perf_run() { # BROKER ARGS...
  local broker=$1
  shift
  perf_cmd "$broker" throughput "$@"
}

# A ferryperf command against one broker; prints its JSON. Broker CPU for the run is appended to
# the JSON line as "broker_cpu_s" so one line holds everything about the run.
perf_cmd() { # BROKER COMMAND ARGS...
  local broker=$1 command=$2 uri pid before after out
  shift 2
  if [ "$broker" = ferrymq ]; then
    uri="amqp://$CREDENTIALS@127.0.0.1:$FERRY_PORT/%2F" pid=$FERRY_PID
  else
    uri="amqp://$CREDENTIALS@127.0.0.1:$RABBIT_PORT/%2F" pid=$RABBIT_PID
  fi
  before=$(cpu_ticks "$pid")
  local quiet=--quiet
  [ "$command" = throughput ] || quiet=""
  if ! out=$("$PERF" "$command" --uri "$uri" --json $quiet "$@" 2>"$WORK/perf.err"); then
    log "ferryperf failed against $broker: $(tail -n 3 "$WORK/perf.err")"
  fi
  after=$(cpu_ticks "$pid")
  [[ "$out" == "{"*"}" ]] || out='{"errors":["no output from ferryperf"]}'
  printf '%s,"broker_cpu_s":%s}\n' "${out%\}}" "$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz }')"
}

# Appends one TSV row: scenario broker rate broker_us_per_msg client_us_per_msg p50 p99 ok
record() { # SCENARIO BROKER RATE_KEY JSON
  local json=$4 rate moved cpu client p50 p99 ok=1
  rate=$(jfield "$json" "$3")
  moved=$(awk -v p="$(jfield "$json" published)" -v c="$(jfield "$json" consumed)" -v y="$(jfield "$json" cycles)" \
    'BEGIN { m = p > c ? p : c; if (y > m) m = y; print m + 0 }')
  cpu=$(awk -v s="$(jfield "$json" broker_cpu_s)" -v m="$moved" 'BEGIN { if (m > 0) printf "%.3f", s * 1e6 / m; else print "null" }')
  client=$(jfield "$json" client_cpu_us_per_msg)
  p50=$(jfield "$json" latency_p50_ms)
  p99=$(jfield "$json" latency_p99_ms)
  grep -q '"errors":\[\]' <<<"$json" || ok=0
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "${rate:-null}" "$cpu" "${client:-null}" "${p50:-null}" "${p99:-null}" "$ok" >>"$RESULTS"
  log "$1 $2: ${rate:-?} msg/s, broker ${cpu} µs/msg, client ${client:-?} µs/msg, p50 ${p50:-?} p99 ${p99:-?} ms$([ $ok = 1 ] || echo ', ERRORS')"
}

selected() { [[ " $SCENARIOS " == *" $1 "* ]]; }

run_scenario() { # SCENARIO BROKER REP
  local s=$1 b=$2 q="bench-$1-$2-$3" json
  case "$s" in
    transient-16b) json=$(perf_run "$b" --queue "$q" --delete-queue --size 16 --autoack --duration "$DURATION")
      record "$s" "$b" consume_rate "$json" ;;
    transient-1k) json=$(perf_run "$b" --queue "$q" --delete-queue --size 1024 --autoack --duration "$DURATION")
      record "$s" "$b" consume_rate "$json" ;;
    persistent-1k) json=$(perf_run "$b" --queue "$q" --delete-queue --durable-queue --size 1024 --persistent \
        --confirm 256 --prefetch 1000 --duration "$DURATION")
      record "$s" "$b" consume_rate "$json" ;;
    latency-10k) json=$(perf_run "$b" --queue "$q" --delete-queue --size 16 --autoack --rate 10000 --duration "$DURATION")
      record "$s" "$b" consume_rate "$json" ;;
    queue-churn) json=$(perf_cmd "$b" queue-churn --cycles "$((DURATION * 500))")
      record "$s" "$b" rate "$json" ;;
    publish-16b | drain-16b)
      # The drain needs the backlog a publish-only run leaves: every repetition does both, and
      # records whichever of the two was asked for.
      json=$(perf_run "$b" --queue "$q" --consumers 0 --size 16 --pmessages "$MESSAGES" --duration "$CAP")
      if selected publish-16b; then record publish-16b "$b" publish_rate "$json"; fi
      sleep "$PAUSE"
      json=$(perf_run "$b" --queue "$q" --delete-queue --publishers 0 --autoack --cmessages "$MESSAGES" --duration "$CAP")
      if selected drain-16b; then record drain-16b "$b" consume_rate "$json"; fi
      ;;
  esac
}

alive() { # BROKER: stop the whole comparison if a broker died
  local pid=$RABBIT_PID log=$WORK/rabbit/log/$RABBIT_NODE@localhost.log
  [ "$1" = ferrymq ] && pid=$FERRY_PID log=$WORK/ferrymq.log
  kill -0 "$pid" 2>/dev/null && return 0
  log "$1 (pid $pid) is gone; log tail:"
  tail -n 30 "$log" >&2 || true
  exit 1
}

# A fresh broker is slower for its first seconds (allocators, code loading, JIT): one short
# unrecorded run each keeps that out of the first scenario's numbers.
for b in $BROKERS; do
  perf_run "$b" --queue "bench-warmup-$b" --delete-queue --size 16 --autoack --duration 3 >/dev/null
  sleep "$PAUSE"
done

: >"$RESULTS"
for s in $SCENARIOS; do
  # publish-16b and drain-16b come from the same runs.
  if [ "$s" = drain-16b ] && selected publish-16b; then continue; fi
  for rep in $(seq 1 "$REPEAT"); do
    for b in $BROKERS; do
      alive "$b"
      run_scenario "$s" "$b" "$rep"
      sleep "$PAUSE"
    done
  done
done

# Median of column COL over the successful runs of scenario S on broker B ("—" without data).
median() { # S B COL
  awk -F'\t' -v s="$1" -v b="$2" -v c="$3" '$1 == s && $2 == b && $8 == 1 && $c != "null" { print $c }' "$RESULTS" |
    sort -g | awk '{ v[NR] = $1 } END {
      if (!NR) print "—"
      else if (NR % 2) print v[(NR + 1) / 2]
      else print (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

fmt_rate() { awk -v x="$1" 'BEGIN { if (x ~ /^[0-9.]+$/) printf "%.0f", x; else print x }'; }
fmt_us() { awk -v x="$1" 'BEGIN { if (x ~ /^[0-9.]+$/) printf "%.2f", x; else print x }'; }
ratio() { # NUM DEN
  awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f×", a / b; else print "—" }'
}

label() {
  case "$1" in
    transient-16b) echo "transient 16 B, 1p1c, autoack" ;;
    transient-1k) echo "transient 1 KiB, 1p1c, autoack" ;;
    persistent-1k) echo "persistent 1 KiB, confirms 256, manual acks (prefetch 1000), durable queue" ;;
    publish-16b) echo "publish-only 16 B ($MESSAGES msgs)" ;;
    drain-16b) echo "consume-only drain of that backlog" ;;
    latency-10k) echo "latency at 10k msg/s, 16 B: p50 / p99 ms" ;;
    queue-churn) echo "queue churn: declare + delete cycles/s ($((DURATION * 500)) cycles; CPU per cycle)" ;;
  esac
}

table() {
  echo "| scenario | FerryMQ msg/s | RabbitMQ msg/s | ratio | FerryMQ CPU µs/msg | RabbitMQ CPU µs/msg | ferryperf CPU µs/msg (F / R) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  local s f r
  for s in $SCENARIOS; do
    local fc rc fcl rcl
    fc=$(fmt_us "$(median "$s" ferrymq 4)") rc=$(fmt_us "$(median "$s" rabbitmq 4)")
    fcl=$(fmt_us "$(median "$s" ferrymq 5)") rcl=$(fmt_us "$(median "$s" rabbitmq 5)")
    if [ "$s" = latency-10k ]; then
      local f50 f99 r50 r99
      f50=$(median "$s" ferrymq 6) f99=$(median "$s" ferrymq 7)
      r50=$(median "$s" rabbitmq 6) r99=$(median "$s" rabbitmq 7)
      # For latency the ratio is how many times lower FerryMQ's p99 is.
      echo "| $(label "$s") | $f50 / $f99 | $r50 / $r99 | $(ratio "$r99" "$f99") | $fc | $rc | $fcl / $rcl |"
    else
      f=$(median "$s" ferrymq 3) r=$(median "$s" rabbitmq 3)
      echo "| $(label "$s") | $(fmt_rate "$f") | $(fmt_rate "$r") | $(ratio "$f" "$r") | $fc | $rc | $fcl / $rcl |"
    fi
  done
}

report() {
  local model
  model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
  echo "Machine: $(nproc) CPUs, ${model:-unknown CPU}; $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo "Command: \`$COMMAND\` (medians of $REPEAT runs per broker, brokers alternating; ${DURATION} s runs)."
  echo
  table
  echo
  echo "msg/s: consumed per second (publish-only: published per second until the broker had read it all)."
  echo "ratio: FerryMQ ÷ RabbitMQ msg/s; for latency, RabbitMQ p99 ÷ FerryMQ p99."
  echo "CPU µs/msg: broker utime+stime over the run ÷ messages moved (RabbitMQ: its beam.smp)."
  local failed
  failed=$(awk -F'\t' '$8 != 1 { printf "%s%s on %s", (n++ ? ", " : ""), $1, $2 }' "$RESULTS")
  [ -z "$failed" ] || echo "Runs that reported errors (left out of the medians): $failed."
}

REPORT=$(report)
echo "$REPORT"

if [ "$WRITE" = 1 ]; then
  write_bench_section compare "Comparison" "$REPORT"
  log "wrote $ROOT/BENCHMARKS.md"
fi
