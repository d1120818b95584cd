#!/usr/bin/env bash
# Durable message store: FerryMQ beside RabbitMQ in one run, with ferryperf as the load generator.
#
#   bench/store.sh [--duration SECS] [--messages N1] [--deep N2] [--rabbit-only | --ferry-only]
#                  [--rabbit-clean-stop] [--write]
#
# One broker at a time (FerryMQ, then RabbitMQ), each on an empty data dir, so neither broker's
# backlog, memory or CPU shows in the other's figures. For each broker:
#   start        time from launch on an empty data dir until it accepts AMQP connections
#   persistent   persistent 1 KiB, confirms window 256, 1 publisher 1 consumer, manual acks
#                (prefetch 1000), durable queue, for --duration SECS (default 10)
#   publish      publish-only of N1 persistent 1 KiB messages with confirms into a durable queue
#                (--messages, default 1000000), then a consume-only drain of them (manual acks,
#                prefetch 1000)
#   deep         publish-only of N2 persistent 16 B messages with confirms into a durable queue
#                (--deep, default 10000000), no consumer; then broker RSS (VmRSS of /proc/PID/status;
#                RabbitMQ: its beam.smp), peak RSS over the publish (VmHWM) and data dir size
#   recovery     crash the broker with that backlog and start it again on the same data: time
#                from the new process's launch until a passive queue.declare reports all N2
#                messages, the broker CPU spent until then, and RSS then.
#                FerryMQ gets SIGKILL. RabbitMQ gets SIGKILL of its whole process group (the
#                fixture's `stop` deletes the node's data, so it cannot be used for a restart);
#                --rabbit-clean-stop stops it with `rabbitmqctl stop` instead (a clean shutdown;
#                RabbitMQ's restart work differs between the two).
# Prints a markdown table (metric, FerryMQ, RabbitMQ, ratio = FerryMQ ÷ RabbitMQ); --write also
# puts it into BENCHMARKS.md between the store:begin/end markers (appending a "Durable store"
# section when they are missing). --rabbit-only / --ferry-only run one broker (the other shows —).
#
# Environment: FERRY_PORT/FERRY_HTTP_PORT (5792/15792), RABBIT_PORT/RABBIT_MGMT_PORT (5793/15793),
# FERRY_URI_USER (guest:guest), PAUSE between phases in seconds (2), RECOVERY_TIMEOUT in seconds
# (default max(300, N2/5000)). Needs python3 with pika for the readiness polls.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$ROOT/bench/lib.sh"
COMMAND="bench/store.sh${*:+ $*}"
DURATION=10
MESSAGES=1000000
DEEP=10000000
BROKERS="ferrymq rabbitmq"
WRITE=0
RABBIT_RESTART=kill

FERRY_PORT=${FERRY_PORT:-5792}
FERRY_HTTP_PORT=${FERRY_HTTP_PORT:-15792}
RABBIT_PORT=${RABBIT_PORT:-5793}
RABBIT_MGMT_PORT=${RABBIT_MGMT_PORT:-15793}
RABBIT_NODE=ferrymq-store
RABBIT_LIB=/usr/lib/rabbitmq/bin
CREDENTIALS=${FERRY_URI_USER:-guest:guest}
PAUSE=${PAUSE:-2}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=${2:?}; shift 2 ;;
    --messages) MESSAGES=${2:?}; shift 2 ;;
    --deep) DEEP=${2:?}; shift 2 ;;
    --rabbit-only) BROKERS="rabbitmq"; shift ;;
    --ferry-only) BROKERS="ferrymq"; shift ;;
    --rabbit-clean-stop) RABBIT_RESTART=clean; shift ;;
    --write) WRITE=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "store.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
for v in DURATION MESSAGES DEEP; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "store.sh: ${v,,} must be a positive integer, not '${!v}'" >&2; exit 2; }
done

# Upper bounds for the message-count runs (a floor of 2000 msg/s) and for a recovery, so a
# stalled broker cannot hang the script.
cap() { echo $(($1 / 2000 > 300 ? $1 / 2000 : 300)); }
RECOVERY_TIMEOUT=${RECOVERY_TIMEOUT:-$((DEEP / 5000 > 300 ? DEEP / 5000 : 300))}

log() { echo "store.sh: $*" >&2; }
has() { [[ " $BROKERS " == *" $1 "* ]]; }

python3 -c 'import pika' 2>/dev/null || { log "python3 with pika is needed (apt-get install python3-pika)"; exit 1; }

WORK=$(mktemp -d /tmp/ferrymq-store.XXXXXX)
chmod 755 "$WORK" # the RabbitMQ node runs as user rabbitmq and keeps its files under here
RABBIT_BASE=$WORK/rabbit
FERRY_PID=""
RABBIT_STARTED=0
POLL_PID=""
declare -A VAL   # "broker.key" -> value
NOTES=()         # lines printed under the table

cleanup() {
  set +e
  [ -z "$POLL_PID" ] || kill "$POLL_PID" 2>/dev/null
  if [ -n "$FERRY_PID" ] && kill -0 "$FERRY_PID" 2>/dev/null; then
    kill -TERM "$FERRY_PID"
    for _ in $(seq 1 100); do kill -0 "$FERRY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$FERRY_PID" 2>/dev/null
  fi
  if [ "$RABBIT_STARTED" = 1 ]; then
    "$ROOT/tests/fixtures/rabbitmq.sh" stop "$RABBIT_NODE" "$RABBIT_BASE" >/dev/null 2>&1
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

if has rabbitmq && ! "$ROOT/tests/fixtures/rabbitmq.sh" installed; then
  log "installing rabbitmq-server"
  [ "$(id -u)" = 0 ] || { log "rabbitmq-server is missing and installing it needs root"; exit 1; }
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server >&2
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $(has ferrymq && echo "$FERRY_PORT $FERRY_HTTP_PORT") $(has rabbitmq && echo "$RABBIT_PORT $RABBIT_MGMT_PORT"); do
  ! port_open "$p" || { log "port $p is already in use"; exit 1; }
done

CLK_TCK=$(getconf CLK_TCK)

# utime+stime of a process, in clock ticks.
cpu_ticks() {
  local stat rest
  stat=$(cat "/proc/$1/stat")
  rest=${stat##*) } # the command name may contain spaces; fields resume after its ')'
  read -r -a f <<<"$rest"
  echo $((f[11] + f[12]))
}
ticks_to_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }

status_kib() { # PID FIELD (VmRSS, VmHWM) -> kB
  awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}
kib_to_mib() { awk -v k="$1" 'BEGIN { if (k ~ /^[0-9]+$/) printf "%.1f", k / 1024; else print "—" }'; }

jfield() { # JSON KEY -> value of a top-level scalar in ferryperf's flat JSON
  sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"
}

# Readiness poll: connects over AMQP and, given a queue, repeats a passive queue.declare until
# the queue holds at least WANT messages (WANT -1: report the first count seen). Times are seconds
# since T0 (the broker's launch). Gives up when PID (0: no check) is gone or TIMEOUT seconds after
# T0. Prints one JSON object: status (ok, timeout, died), accept_s, ready_s, count.
# T0 is a number, or @FILE: the poller then creates FILE.ready once Python and pika are loaded
# (a few hundred ms that must not count against a broker's start) and waits for FILE to hold
# "T0 PID".
cat >"$WORK/poll.py" <<'EOF'
import json, logging, os, sys, time

import pika

logging.getLogger("pika").setLevel(logging.CRITICAL + 1)
port, queue, want, timeout = int(sys.argv[2]), sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
if sys.argv[1].startswith("@"):
    path = sys.argv[1][1:]
    open(path + ".ready", "w").close()
    while not os.path.exists(path):
        time.sleep(0.002)
    with open(path) as f:
        t0, pid = f.read().split()
    t0, pid = float(t0), int(pid)
else:
    t0, pid = float(sys.argv[1]), int(sys.argv[3])
user, _, password = sys.argv[7].partition(":")
params = pika.ConnectionParameters(
    host="127.0.0.1", port=port, credentials=pika.PlainCredentials(user, password),
    connection_attempts=1, socket_timeout=5, heartbeat=0)


def alive():
    if pid <= 0:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def done(status, accept, ready, count):
    r = lambda t: None if t is None else round(t, 3)
    print(json.dumps({"status": status, "accept_s": r(accept), "ready_s": r(ready), "count": count},
                     separators=(",", ":")))
    sys.exit(0 if status == "ok" else 1)


conn = ch = accept = count = None
while True:
    if not alive():
        done("died", accept, None, count)
    if time.time() - t0 > timeout:
        done("timeout", accept, None, count)
    try:
        if conn is None or not conn.is_open:
            conn, ch = pika.BlockingConnection(params), None
            if accept is None:
                accept = time.time() - t0
        if not queue:
            done("ok", accept, accept, None)
        if ch is None or not ch.is_open:
            ch = conn.channel()
        count = ch.queue_declare(queue, passive=True).method.message_count
        if want < 0 or count >= want:
            done("ok", accept, time.time() - t0, count)
    except pika.exceptions.ChannelClosedByBroker:  # e.g. 404 while the queue is not back yet
        ch = None
    except (pika.exceptions.AMQPError, OSError):
        conn = None
    time.sleep(0.02)
EOF

poll() { # T0 PORT PID QUEUE WANT TIMEOUT
  python3 "$WORK/poll.py" "$@" "$CREDENTIALS" || true
}

# The same poll, started before the broker: poll_arm, then launch and poll_go, then poll_wait.
poll_arm() { # PORT QUEUE WANT TIMEOUT
  rm -f "$WORK/poll.t0" "$WORK/poll.t0.ready" "$WORK/poll.json"
  python3 "$WORK/poll.py" "@$WORK/poll.t0" "$1" 0 "$2" "$3" "$4" "$CREDENTIALS" >"$WORK/poll.json" &
  POLL_PID=$!
  for _ in $(seq 1 400); do
    [ -e "$WORK/poll.t0.ready" ] && return 0
    kill -0 "$POLL_PID" 2>/dev/null || break
    sleep 0.05
  done
  log "the readiness poller did not start"
  exit 1
}
poll_go() { # T0 PID
  echo "$1 $2" >"$WORK/poll.t0.tmp"
  mv "$WORK/poll.t0.tmp" "$WORK/poll.t0"
}
poll_wait() { # sets POLL_RESULT to the poll's JSON (not in a subshell: the poller is our child)
  wait "$POLL_PID" || true
  POLL_PID=""
  POLL_RESULT=$(cat "$WORK/poll.json")
}

# --- FerryMQ --------------------------------------------------------------------------------------

ferry_launch() { # sets FERRY_PID, T0
  T0=$(date +%s.%N)
  "$ROOT/target/release/ferrymq" --amqp-bind "127.0.0.1:$FERRY_PORT" --http-bind "127.0.0.1:$FERRY_HTTP_PORT" \
    --data-dir "$WORK/ferrymq-data" >>"$WORK/ferrymq.log" 2>&1 &
  FERRY_PID=$!
}

# --- RabbitMQ: first start and the final stop through the fixture; the restart reuses the node's
# files under $RABBIT_BASE, which the fixture laid out (its `start` and `stop` both delete them). ----

SETPRIV=()
[ "$(id -u)" != 0 ] || SETPRIV=(setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups)

rabbit_env() { # the same environment the fixture gives the node and rabbitmqctl
  export HOME="$RABBIT_BASE/home"
  export RABBITMQ_NODENAME="$RABBIT_NODE@localhost"
  export RABBITMQ_CONF_ENV_FILE="$RABBIT_BASE/rabbitmq-env.conf"
  export RABBITMQ_CONFIG_FILE="$RABBIT_BASE/rabbitmq"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$RABBIT_BASE/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_BASE/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$RABBIT_BASE/mnesia"
  export RABBITMQ_LOG_BASE="$RABBIT_BASE/log"
  export RABBITMQ_PID_FILE="$RABBIT_BASE/rabbitmq.pid"
}

rabbit_session() { cat "$RABBIT_BASE/session.pid" 2>/dev/null || true; }
rabbit_beam() { # pid of the node's beam.smp
  local s
  s=$(rabbit_session)
  [ -z "$s" ] || pgrep -s "$s" -x beam.smp | head -n 1 || true
}

rabbit_relaunch() { # sets RABBIT_LEADER (session leader, the rabbitmq-server script), T0
  rm -f "$RABBIT_BASE/session.pid"
  T0=$(date +%s.%N)
  (
    rabbit_env
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$RABBIT_PORT RABBITMQ_DIST_PORT=$((RABBIT_PORT + 20000))
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    cd "$RABBIT_BASE"
    exec setsid bash -c 'echo $$ >"$1/session.pid"; shift; exec "$@"' _ "$RABBIT_BASE" \
      "${SETPRIV[@]}" "$RABBIT_LIB/rabbitmq-server" >>"$RABBIT_BASE/log/startup.log" 2>&1 </dev/null
  ) &
  # setsid normally keeps the pid; the session.pid it writes is the authority either way.
  RABBIT_LEADER=$!
  for _ in $(seq 1 50); do
    [ -s "$RABBIT_BASE/session.pid" ] && break
    sleep 0.05
  done
  RABBIT_LEADER=$(rabbit_session)
  RABBIT_LEADER=${RABBIT_LEADER:-$!}
}

rabbit_crash() { # SIGKILL for every process of the node's session
  local s
  s=$(rabbit_session)
  [ -n "$s" ] || { log "no session pid for the RabbitMQ node"; exit 1; }
  kill -KILL -- "-$s" 2>/dev/null || true
  for _ in $(seq 1 100); do pgrep -s "$s" >/dev/null || return 0; sleep 0.1; done
  log "RabbitMQ node's processes still there 10 s after SIGKILL"
  exit 1
}

rabbit_clean_stop() {
  local s
  s=$(rabbit_session)
  (
    rabbit_env
    cd "$RABBIT_BASE"
    timeout 1800 "${SETPRIV[@]}" "$RABBIT_LIB/rabbitmqctl" -n "$RABBIT_NODE@localhost" stop >/dev/null
  ) || { log "rabbitmqctl stop failed"; exit 1; }
  for _ in $(seq 1 300); do pgrep -s "$s" >/dev/null || return 0; sleep 0.1; done
  log "RabbitMQ node still running 30 s after rabbitmqctl stop"
  exit 1
}

# --- measurements ---------------------------------------------------------------------------------

put() { VAL["$1.$2"]=$3; }
get() { echo "${VAL["$1.$2"]:-—}"; }
note() { NOTES+=("$*"); log "NOTE: $*"; }

broker_log_tail() { # BROKER
  if [ "$1" = ferrymq ]; then
    tail -n 30 "$WORK/ferrymq.log" >&2 || true
  else
    tail -n 30 "$RABBIT_BASE/log/$RABBIT_NODE@localhost.log" >&2 || true
  fi
}

alive() { # BROKER: stop this broker's measurements if it died
  kill -0 "$BROKER_PID" 2>/dev/null && return 0
  log "$1 (pid $BROKER_PID) is gone; log tail:"
  broker_log_tail "$1"
  exit 1
}

# ferryperf against the current broker; prints its JSON with the broker's CPU seconds over the run
# added as "broker_cpu_s".
perf_run() { # BROKER PORT ARGS...
  local b=$1 port=$2 before after out
  shift 2
  alive "$b"
  before=$(cpu_ticks "$BROKER_PID")
  if ! out=$("$PERF" throughput --uri "amqp://$CREDENTIALS@127.0.0.1:$port/%2F" --json --quiet "$@" 2>"$WORK/perf.err"); then
    log "ferryperf failed against $b: $(tail -n 3 "$WORK/perf.err")"
  fi
  alive "$b"
  after=$(cpu_ticks "$BROKER_PID")
  [[ "$out" == "{"*"}" ]] || out='{"errors":["no output from ferryperf"]}'
  printf '%s,"broker_cpu_s":%s}\n' "${out%\}}" "$(ticks_to_s $((after - before)))"
}

# Stores KEY_rate and KEY_cpu (broker µs per message) from a ferryperf JSON; notes errors, lost
# confirms and short counts.
record() { # BROKER KEY RATE_FIELD COUNT_FIELD EXPECTED JSON (EXPECTED 0: no expectation)
  local b=$1 k=$2 json=$6 rate n cpu lost
  rate=$(jfield "$json" "$3")
  n=$(jfield "$json" "$4")
  cpu=$(awk -v s="$(jfield "$json" broker_cpu_s)" -v m="${n:-0}" 'BEGIN { if (m > 0) printf "%.2f", s * 1e6 / m; else print "—" }')
  lost=$(jfield "$json" lost)
  put "$b" "${k}_rate" "$(awk -v x="$rate" 'BEGIN { if (x ~ /^[0-9.]+$/) printf "%.0f", x; else print "—" }')"
  put "$b" "${k}_cpu" "$cpu"
  grep -q '"errors":\[\]' <<<"$json" || note "$b $k: ferryperf errors: $(sed -n 's/.*"errors":\(\[.*\]\).*/\1/p' <<<"$json")"
  [ -z "$lost" ] || [ "$lost" = null ] || [ "$lost" = 0 ] || note "$b $k: $lost published messages not confirmed"
  [ "$5" = 0 ] || [ "${n:-0}" = "$5" ] || note "$b $k: ${n:-0} of $5 messages"
  log "$b $k: ${rate:-?} msg/s, broker $cpu µs/msg"
}

# Cold start result from a poll: start_s, start_cpu_s.
record_start() { # BROKER POLL_JSON PID
  local r
  r=$(jfield "$2" ready_s)
  [ "$(jfield "$2" status)" = '"ok"' ] || { log "$1 did not accept AMQP connections: $2"; broker_log_tail "$1"; exit 1; }
  put "$1" start_s "$r"
  put "$1" start_cpu_s "$(ticks_to_s "$(cpu_ticks "$3")")"
  log "$1 accepts AMQP $r s after launch (pid $3)"
}

run_broker() { # BROKER
  local b=$1 port json pre post res status s
  local q_persist=store-persistent-1k q_batch=store-publish-1k q_deep=store-deep-16b
  log "=== $b"

  # start
  if [ "$b" = ferrymq ]; then
    port=$FERRY_PORT
    mkdir -p "$WORK/ferrymq-data"
    poll_arm "$port" "" 0 60
    ferry_launch
    poll_go "$T0" "$FERRY_PID"
    BROKER_PID=$FERRY_PID
    poll_wait
    record_start "$b" "$POLL_RESULT" "$BROKER_PID"
  else
    port=$RABBIT_PORT
    # The fixture returns when the management API answers; the poll times the AMQP listener.
    poll_arm "$port" "" 0 300
    RABBIT_STARTED=1
    poll_go "$(date +%s.%N)" 0
    BROKER_PID=$("$ROOT/tests/fixtures/rabbitmq.sh" start "$RABBIT_NODE" "$RABBIT_PORT" "$RABBIT_MGMT_PORT" "$RABBIT_BASE")
    poll_wait
    record_start "$b" "$POLL_RESULT" "$BROKER_PID"
  fi

  # Warm-up (allocators, code loading, JIT), not recorded.
  perf_run "$b" "$port" --queue store-warmup --delete-queue --size 16 --autoack --duration 3 >/dev/null
  sleep "$PAUSE"

  # persistent 1 KiB, 1p1c
  json=$(perf_run "$b" "$port" --queue "$q_persist" --durable-queue --delete-queue --size 1024 --persistent \
    --confirm 256 --prefetch 1000 --duration "$DURATION")
  record "$b" persist consume_rate consumed 0 "$json"
  sleep "$PAUSE"

  # publish-only N1 x 1 KiB, then drain
  json=$(perf_run "$b" "$port" --queue "$q_batch" --durable-queue --consumers 0 --size 1024 --persistent \
    --confirm 256 --pmessages "$MESSAGES" --duration "$(cap "$MESSAGES")")
  record "$b" publish publish_rate published "$MESSAGES" "$json"
  sleep "$PAUSE"
  json=$(perf_run "$b" "$port" --queue "$q_batch" --durable-queue --delete-queue --publishers 0 --prefetch 1000 \
    --cmessages "$MESSAGES" --duration "$(cap "$MESSAGES")")
  record "$b" drain consume_rate consumed "$MESSAGES" "$json"
  sleep "$PAUSE"

  # deep queue: N2 x 16 B, no consumer
  put "$b" idle_rss "$(kib_to_mib "$(status_kib "$BROKER_PID" VmRSS)")"
  # Reset the peak-RSS counter so VmHWM covers this publish only.
  echo 5 2>/dev/null >"/proc/$BROKER_PID/clear_refs" || note "$b: could not reset VmHWM; its peak RSS includes the earlier phases"
  json=$(perf_run "$b" "$port" --queue "$q_deep" --durable-queue --consumers 0 --size 16 --persistent \
    --confirm 256 --pmessages "$DEEP" --duration "$(cap "$DEEP")")
  record "$b" deep publish_rate published "$DEEP" "$json"
  sleep "$PAUSE"
  alive "$b"
  put "$b" deep_rss "$(kib_to_mib "$(status_kib "$BROKER_PID" VmRSS)")"
  put "$b" deep_hwm "$(kib_to_mib "$(status_kib "$BROKER_PID" VmHWM)")"
  if [ "$b" = ferrymq ]; then
    put "$b" deep_disk "$(kib_to_mib "$(du -sk "$WORK/ferrymq-data" | cut -f1)")"
  else
    put "$b" deep_disk "$(kib_to_mib "$(du -sk "$RABBIT_BASE/mnesia" | cut -f1)")"
  fi
  res=$(poll "$(date +%s.%N)" "$port" "$BROKER_PID" "$q_deep" -1 60)
  pre=$(jfield "$res" count)
  [[ "$pre" =~ ^[0-9]+$ ]] || { log "$b: could not read the deep queue's message count: $res"; exit 1; }
  [ "$pre" = "$DEEP" ] || note "$b: the deep queue held $pre messages before the restart, not $DEEP"
  log "$b: $pre messages queued; RSS $(get "$b" deep_rss) MiB (peak $(get "$b" deep_hwm)), data $(get "$b" deep_disk) MiB"

  # recovery
  poll_arm "$port" "$q_deep" "$pre" "$RECOVERY_TIMEOUT"
  if [ "$b" = ferrymq ]; then
    kill -KILL "$FERRY_PID"
    wait "$FERRY_PID" 2>/dev/null || true
    echo "--- store.sh: SIGKILL, restarting on the same data dir" >>"$WORK/ferrymq.log"
    ferry_launch
    BROKER_PID=$FERRY_PID
    poll_go "$T0" "$FERRY_PID"
  else
    if [ "$RABBIT_RESTART" = clean ]; then rabbit_clean_stop; else rabbit_crash; fi
    rabbit_relaunch
    poll_go "$T0" "$RABBIT_LEADER"
  fi
  poll_wait
  res=$POLL_RESULT
  status=$(jfield "$res" status)
  [ "$b" = ferrymq ] || BROKER_PID=$(rabbit_beam)
  put "$b" rec_accept_s "$(jfield "$res" accept_s)"
  post=$(jfield "$res" count)
  put "$b" rec_count "${post/null/—} / $pre"
  if [ "$status" = '"ok"' ]; then
    put "$b" rec_ready_s "$(jfield "$res" ready_s)"
  else
    note "$b: after the restart the queue did not get back its $pre messages (poll: $res)"
    broker_log_tail "$b"
  fi
  if [ -n "$BROKER_PID" ] && [ -e "/proc/$BROKER_PID/status" ]; then
    put "$b" rec_cpu_s "$(ticks_to_s "$(cpu_ticks "$BROKER_PID")")"
    put "$b" rec_rss "$(kib_to_mib "$(status_kib "$BROKER_PID" VmRSS)")"
    put "$b" rec_hwm "$(kib_to_mib "$(status_kib "$BROKER_PID" VmHWM)")"
  fi
  log "$b: restart: accepting after $(get "$b" rec_accept_s) s, all messages after $(get "$b" rec_ready_s) s, RSS $(get "$b" rec_rss) MiB (peak $(get "$b" rec_hwm))"
  if [ "$b" = ferrymq ]; then
    grep -h 'recovered .* messages' "$WORK/ferrymq.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -n 3 >&2 || true
  fi

  # A sample of the recovered messages must be readable.
  if [ "$status" = '"ok"' ]; then
    s=$((pre < 10000 ? pre : 10000))
    json=$(perf_run "$b" "$port" --queue "$q_deep" --durable-queue --no-declare --publishers 0 --prefetch 1000 \
      --cmessages "$s" --duration 120)
    [ "$(jfield "$json" consumed)" = "$s" ] && grep -q '"errors":\[\]' <<<"$json" ||
      note "$b: reading back $s recovered messages: $json"
  fi

  # stop
  if [ "$b" = ferrymq ]; then
    kill -TERM "$FERRY_PID"
    for _ in $(seq 1 300); do kill -0 "$FERRY_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$FERRY_PID" 2>/dev/null && { note "ferrymq did not exit within 30 s of SIGTERM"; kill -KILL "$FERRY_PID"; }
    wait "$FERRY_PID" 2>/dev/null || true
    FERRY_PID=""
    rm -rf "$WORK/ferrymq-data"
  else
    "$ROOT/tests/fixtures/rabbitmq.sh" stop "$RABBIT_NODE" "$RABBIT_BASE" >/dev/null 2>&1 || true
    RABBIT_STARTED=0
  fi
}

for b in $BROKERS; do
  run_broker "$b"
done

# --- report ---------------------------------------------------------------------------------------

ratio() { # NUM DEN
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf (a / b < 0.1 ? "%.3f×" : "%.2f×"), a / b; else print "—" }'
}
row() { # LABEL KEY [noratio]
  local f r
  f=$(get ferrymq "$2") r=$(get rabbitmq "$2")
  echo "| $1 | $f | $r | $([ "${3:-}" = noratio ] && echo — || ratio "$f" "$r") |"
}
thousands() { sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/' -e 'ta' <<<"$1"; }

table() {
  local n1 n2
  n1=$(thousands "$MESSAGES") n2=$(thousands "$DEEP")
  echo "| metric | FerryMQ | RabbitMQ | ratio |"
  echo "|---|---:|---:|---:|"
  row "persistent 1 KiB, confirms 256, 1p1c, manual acks (prefetch 1000): msg/s" persist_rate
  row "↳ broker CPU µs/msg" persist_cpu
  row "publish-only $n1 × 1 KiB persistent, confirms 256: msg/s" publish_rate
  row "↳ broker CPU µs/msg" publish_cpu
  row "consume-only drain of them (prefetch 1000, manual acks): msg/s" drain_rate
  row "↳ broker CPU µs/msg" drain_cpu
  row "publish-only $n2 × 16 B persistent, confirms 256: msg/s" deep_rate
  row "↳ broker CPU µs/msg" deep_cpu
  row "RSS before that publish, MiB" idle_rss
  row "RSS with $n2 messages queued, MiB" deep_rss
  row "peak RSS during that publish, MiB" deep_hwm
  row "data dir size with them queued, MiB" deep_disk
  row "cold start, empty data dir: s until accepting AMQP" start_s
  row "↳ broker CPU s" start_cpu_s
  row "restart on that data: s until accepting AMQP" rec_accept_s
  row "restart on that data: s until the queue has all messages" rec_ready_s
  row "↳ broker CPU s until then" rec_cpu_s
  row "messages in the queue after restart" rec_count noratio
  row "RSS after restart (at that moment), MiB" rec_rss
  row "peak RSS during restart, MiB" rec_hwm
}

report() {
  local model how
  model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
  if [ "$RABBIT_RESTART" = clean ]; then how="RabbitMQ: \`rabbitmqctl stop\` (clean shutdown), then started again"
  else how="RabbitMQ: SIGKILL of the node's processes (beam.smp and its helpers), then started again"; fi
  echo "Machine: $(nproc) CPUs, ${model:-unknown CPU}, $(awk '/^MemTotal:/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo); $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo "Command: \`$COMMAND\` (one run per broker, one broker at a time, each on an empty data dir; ${DURATION} s timed run)."
  echo
  table
  echo
  echo "ratio: FerryMQ ÷ RabbitMQ (higher is better for msg/s; lower is better for CPU, RSS, size and seconds)."
  echo "msg/s: publish-only counts until the broker confirmed everything; the others count deliveries."
  echo "Broker CPU: utime+stime of the broker process (RabbitMQ: beam.smp) over the run ÷ messages moved."
  echo "RSS: VmRSS / VmHWM from /proc/PID/status, the peak reset before the 16 B publish."
  echo "Restart: FerryMQ: SIGKILL, then started again; $how. Times are from the new process's launch; \"all messages\" is the first passive queue.declare reporting the count the queue held before the restart."
  local n
  for n in "${NOTES[@]}"; do echo "- $n"; done
}

REPORT=$(report)
echo "$REPORT"

if [ "$WRITE" = 1 ]; then
  write_bench_section store "Durable store" "$REPORT"
  log "wrote $ROOT/BENCHMARKS.md"
fi
