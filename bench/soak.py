#!/usr/bin/env python3
"""Soak run: many connections publishing and consuming with churn for a bounded time, with the
broker's memory sampled throughout. Reports RSS after warm-up, at the peak and after the load
stops; growth after warm-up that does not come back is what a leak looks like.

    python3 bench/soak.py --bin target/release/ferrymq --seconds 300 --connections 100

Each worker owns one connection for 5-20 s, then closes it and opens another (connection
churn). Half the workers publish (some persistent with confirms) to one of 10 durable
queues, half consume with acks; every worker also declares and deletes a private queue on
each new connection (queue churn).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pika

QUEUES = [f"soak-{i}" for i in range(10)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Worker(threading.Thread):
    def __init__(self, port: int, publisher: bool, stop: threading.Event, stats: dict):
        super().__init__(daemon=True)
        self.port, self.publisher, self.stop, self.stats = port, publisher, stop, stats

    def run(self):
        rng = random.Random()
        while not self.stop.is_set():
            try:
                conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port, heartbeat=30))
                ch = conn.channel()
                own = ch.queue_declare("", exclusive=True).method.queue
                ch.queue_delete(own)
                self.stats["connections"] += 1
                until = time.monotonic() + rng.uniform(5, 20)
                queue = rng.choice(QUEUES)
                if self.publisher:
                    confirm = rng.random() < 0.3
                    if confirm:
                        ch.confirm_delivery()
                    props = pika.BasicProperties(delivery_mode=2 if confirm else 1)
                    body = os.urandom(rng.choice([16, 512, 4096]))
                    while time.monotonic() < until and not self.stop.is_set():
                        ch.basic_publish("", queue, body, props)
                        self.stats["published"] += 1
                        time.sleep(0.01)
                else:
                    ch.basic_qos(prefetch_count=50)
                    for method, _, _ in ch.consume(queue, inactivity_timeout=0.5):
                        if method:
                            ch.basic_ack(method.delivery_tag)
                            self.stats["consumed"] += 1
                        if time.monotonic() >= until or self.stop.is_set():
                            break
                    ch.cancel()
                conn.close()
            except Exception as e:  # counted, then the worker reconnects
                self.stats["errors"] += 1
                self.stats["last_error"] = repr(e)
                time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/ferrymq")
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ferrymq-soak-")
    amqp, http = free_port(), free_port()
    broker = subprocess.Popen(
        [args.bin, "--amqp-bind", f"127.0.0.1:{amqp}", "--http-bind", f"127.0.0.1:{http}", "--data-dir", f"{work}/data", "--log", "warn"],
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/broker.log", "wb"),
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", amqp), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        setup = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp))
        for q in QUEUES:
            setup.channel().queue_declare(q, durable=True)
        setup.close()
        stop = threading.Event()
        stats = {"connections": 0, "published": 0, "consumed": 0, "errors": 0, "last_error": None}
        workers = [Worker(amqp, i % 2 == 0, stop, stats) for i in range(args.connections)]
        for w in workers:
            w.start()
        samples = []
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            time.sleep(5)
            samples.append((round(time.monotonic() - start), rss_kib(broker.pid)))
            print(f"t={samples[-1][0]:>4}s rss={samples[-1][1] / 1024:.1f} MiB published={stats['published']} consumed={stats['consumed']} connections={stats['connections']} errors={stats['errors']}", file=sys.stderr)
        stop.set()
        for w in workers:
            w.join(30)
        time.sleep(10)  # let consumers' channels close and the allocator settle
        end_rss = rss_kib(broker.pid)
        warm = [r for t, r in samples if t >= args.warmup]
        report = {
            "seconds": args.seconds,
            "workers": args.connections,
            "connections_opened": stats["connections"],
            "published": stats["published"],
            "consumed": stats["consumed"],
            "errors": stats["errors"],
            "last_error": stats["last_error"],
            "rss_after_warmup_mib": round(warm[0] / 1024, 1) if warm else None,
            "rss_peak_mib": round(max(r for _, r in samples) / 1024, 1),
            "rss_end_of_load_mib": round(samples[-1][1] / 1024, 1),
            "rss_idle_after_mib": round(end_rss / 1024, 1),
            "samples": samples,
        }
        print(json.dumps(report))
        return 0
    finally:
        broker.terminate()
        broker.wait(10)


if __name__ == "__main__":
    sys.exit(main())
