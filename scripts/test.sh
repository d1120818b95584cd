#!/usr/bin/env bash
# Runs every FerryMQ test from a fresh clone: installs what the tests need,
# checks formatting and lints, runs the Rust tests, then starts a broker and
# runs the Python client suites against it. CI calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

log "installing test dependencies"
if ! python3 -c "import pika, pytest, requests" 2>/dev/null; then
    python3 -m pip install --quiet pika pytest requests 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages pika pytest requests
fi
# RabbitMQ 3.10 (Debian): rabbitmqadmin for the HTTP suite, real nodes for interop tests.
# Chromium (Debian's) and playwright-core (npm) for the web UI's browser tests.
packages=()
command -v rabbitmqadmin >/dev/null 2>&1 && command -v rabbitmq-server >/dev/null 2>&1 || packages+=(rabbitmq-server)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}" >/dev/null
fi
(cd tests/ui && npm ci --no-audit --no-fund --silent)

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "cargo test"
cargo test --workspace
cargo build --quiet -p ferryperf

log "python client suites (pika, raw wire) against a fresh broker"
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
http_port=$(free_port)
target/debug/ferrymq --amqp-bind "127.0.0.1:$port" --http-bind "127.0.0.1:$http_port" \
    --data-dir "$work/data" >"$work/broker.log" 2>&1 &
broker=$!
cleanup() {
    kill "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$http_port),0.2)" 2>/dev/null; then break; fi
    sleep 0.1
done
log "ferryperf smoke run: persistent messages with confirms, nothing lost"
target/debug/ferryperf throughput --uri "amqp://guest:guest@127.0.0.1:$port/%2F" --duration 2 \
    --persistent --durable-queue --confirm 100 --prefetch 100 --queue ferryperf-smoke --json --quiet \
    >"$work/smoke.json"
python3 - "$work/smoke.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"ferryperf smoke: published {r['published']}, confirmed {r['confirmed']}, consumed {r['consumed']}, lost {r['lost']}")
assert r["published"] > 0 and r["consumed"] > 0, "no throughput"
assert r["lost"] == 0 and r["nacked"] == 0, "unconfirmed messages"
assert not r["errors"], r["errors"]
PY

log "python suites: AMQP clients, raw wire, management HTTP API and rabbitmqadmin"
if ! FERRYMQ_AMQP_PORT="$port" FERRYMQ_HTTP_PORT="$http_port" \
    python3 -m pytest tests/python tests/http -q -p no:cacheprovider; then
    echo "--- broker log ---"; tail -50 "$work/broker.log"
    exit 1
fi

log "interop with real RabbitMQ 3.10 nodes (definitions import, federation both ways)"
FERRYMQ_BIN=target/debug/ferrymq python3 -m pytest tests/interop -q -p no:cacheprovider

log "security: TLS listeners, client certificates, certificate reload"
FERRYMQ_BIN=target/debug/ferrymq python3 -m pytest tests/security -q -p no:cacheprovider

log "fuzzing: every cargo-fuzz target for 20 s (scripts/fuzz.sh runs longer)"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

log "web UI in Chromium (screenshots in target/ui-screenshots/)"
FERRYMQ_BIN="$PWD/target/debug/ferrymq" node --test --test-concurrency=1 tests/ui/ui.test.mjs
