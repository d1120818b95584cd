"""ferryctl's migration assistant with RabbitMQ 3.10 as the old cluster and FerryMQ as the new
one: plan, copy-definitions (twice: the second changes nothing), federate, status until drained,
and check-decommission refusing while a producer still publishes to RabbitMQ.

The binary is target/debug/ferryctl (override with FERRYCTL_BIN)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pika
import pytest

from mgmtapi import poll, q
from test_rabbitmq_interop import LivePublisher, delete_queue_on_both, depth, publish, uid

REPO = Path(__file__).resolve().parents[2]
FERRYCTL = Path(os.environ.get("FERRYCTL_BIN") or REPO / "target" / "debug" / "ferryctl")


def ferryctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    if not os.access(FERRYCTL, os.X_OK):
        pytest.fail(f"{FERRYCTL} is missing (cargo build -p ferryctl, or set FERRYCTL_BIN)", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYCTL_")}
    env["XDG_CONFIG_HOME"] = "/nonexistent-ferryctl-test"
    return subprocess.run([str(FERRYCTL), *args], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def comparable_definitions(broker) -> dict:
    defs = broker.api.json("/definitions")
    for key in ("rabbit_version", "rabbitmq_version", "ferrymq_version", "product_name", "product_version"):
        defs.pop(key, None)
    return defs


class Consumer(threading.Thread):
    """Consumes `queue` on `broker` with acks until stopped; `ids` holds message ids in order."""

    def __init__(self, broker, queue: str):
        super().__init__(daemon=True)
        self.broker, self.queue = broker, queue
        self.ids: list[str] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = pika.BlockingConnection(self.broker.params())
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)

            def on_message(ch, method, props, body):
                self.ids.append(props.message_id)
                ch.basic_ack(method.delivery_tag)

            ch.basic_consume(self.queue, on_message)
            while not self.stopping.is_set():
                conn.process_data_events(time_limit=0.2)
            conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_migrate_from_rabbitmq_with_ferryctl(ferrymq, rabbitmq, cleanup, connect):
    tag = uid()
    queue = f"mig.rmq.{tag}"
    pattern = f"^mig\\.rmq\\.{tag}$"
    old_http, new_http = f"http://127.0.0.1:{rabbitmq.http_port}", f"http://127.0.0.1:{ferrymq.http_port}"
    delete_queue_on_both(cleanup, queue, rabbitmq, ferrymq)
    rch = connect(rabbitmq).channel()
    rch.queue_declare(queue, durable=True)
    rch.confirm_delivery()
    backlog = [f"{tag}-{seq}" for seq in range(200)]
    for seq, mid in enumerate(backlog):
        publish(rch, queue, mid, seq, "backlog")

    # plan: the queue is missing on FerryMQ and the pattern selects it; a pattern matching nothing fails.
    run = ferryctl("--url", new_http, "migrate", "plan", "--from", old_http, "--pattern", pattern)
    assert run.returncode == 0, run.stderr
    missing, federated = run.stdout.split("queues to federate")
    assert queue in missing and queue in federated, run.stdout
    run = ferryctl("--url", new_http, "migrate", "plan", "--from", old_http, "--pattern", "^nothing-matches-this$")
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run
    assert "matches no queue" in run.stderr

    # copy-definitions, twice: the second run changes nothing.
    run = ferryctl("--url", new_http, "migrate", "copy-definitions", "--from", old_http)
    assert run.returncode == 0, run.stderr
    assert ferrymq.api.get(f"/queues/%2F/{q(queue)}").status_code == 200
    first = comparable_definitions(ferrymq)
    run = ferryctl("--url", new_http, "migrate", "copy-definitions", "--from", old_http)
    assert run.returncode == 0, run.stderr
    assert comparable_definitions(ferrymq) == first, "a second copy changed the new broker's definitions"
    run = ferryctl("--url", new_http, "migrate", "plan", "--from", old_http, "--pattern", pattern)
    assert queue not in run.stdout.split("queues to federate")[0], run.stdout

    # federate: the upstream and policy are created and the link comes up.
    upstream = f"rmq-{tag}"
    run = ferryctl(
        "--url", new_http, "migrate", "federate", "--from", rabbitmq.amqp_uri(), "--pattern", pattern, "--name", upstream
    )
    cleanup(lambda: ferrymq.api.delete(f"/parameters/federation-upstream/%2F/{q(upstream)}"))
    cleanup(lambda: ferrymq.api.delete(f"/policies/%2F/migrate-{q(upstream)}"))
    assert run.returncode == 0, run.stderr
    assert f"link {queue}: " in run.stdout and "guest:guest" not in run.stdout, run.stdout

    # Consumers move to FerryMQ while a producer still publishes to RabbitMQ.
    consumer = Consumer(ferrymq, queue)
    consumer.start()
    cleanup(consumer.stopping.set)
    live = LivePublisher(rabbitmq, queue, f"{tag}-", 500, first_seq=len(backlog), gap=0.02)
    live.start()
    check = ("--url", new_http, "migrate", "check-decommission", "--from", old_http)
    # The link probes the old queue every 2 s; RabbitMQ samples its rates every 5 s.
    run = poll(lambda: (r := ferryctl(*check)).returncode == 1 and r, timeout=8, what="check-decommission to see the producer")
    assert live.is_alive(), "the producer finished before the check saw it"
    assert "BLOCKED" in run.stdout and queue in run.stdout, run.stdout
    live.join(timeout=60)
    assert live.error is None, live.error

    # Producers moved: status reaches "drained", every message arrived once, and the old cluster may go.
    run = ferryctl("--url", new_http, "migrate", "status", "--until-drained", "--timeout", "90", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "phase: drained" in run.stdout, run.stdout
    expected = backlog + live.published
    poll(lambda: len(consumer.ids) >= len(expected), timeout=30, what="every message consumed on FerryMQ")
    assert consumer.error is None, consumer.error
    assert consumer.ids == expected, "lost, duplicated or reordered messages"
    assert depth(rch, queue)[0] == 0
    # RabbitMQ's publish rate decays over its sampling window, so the verdict turns OK a little later.
    run = poll(lambda: (r := ferryctl(*check)).returncode == 0 and r, timeout=90, interval=2, what="check-decommission to pass")
    assert "OK" in run.stdout and queue in run.stdout, run.stdout
