"""Fixtures for the security suite: FerryMQ processes started with TLS (or limits) on free
ports, and a throwaway PKI made with the openssl command line.

    FERRYMQ_BIN=target/debug/ferrymq python3 -m pytest tests/security -q
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def issue(dir: Path, ca: str, name: str, cn: str, server: bool) -> None:
    """A key and certificate `name`.pem/`name`.key for `cn`, signed by CA `ca`."""
    ext = dir / f"{name}.cnf"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        + ("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" if server else "extendedKeyUsage=clientAuth\n")
    )
    openssl(dir, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
    openssl(
        dir, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-days", "2", "-out", f"{name}.pem", "-extfile", ext.name,
    )


@dataclass
class Pki:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def issue_server(self, name: str) -> None:
        issue(self.dir, "ca", name, "localhost", server=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """CA `ca`; server certificate `server`; client certificate `client` (CN tls-user) from
    the same CA; `rogue-client` (CN tls-user) from an unrelated CA."""
    d = tmp_path_factory.mktemp("pki")
    for ca, cn in (("ca", "ferrymq-test-ca"), ("rogue", "rogue-ca")):
        openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem")
    issue(d, "ca", "server", "localhost", server=True)
    issue(d, "ca", "client", "tls-user", server=False)
    issue(d, "rogue", "rogue-client", "tls-user", server=False)
    return Pki(d)


@dataclass
class Broker:
    proc: subprocess.Popen
    amqp: int
    http: int
    amqps: int | None
    https: int | None
    log: Path
    extra: dict = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def api(self, method: str, path: str, body=None, **kw):
        return requests.request(method, f"http://127.0.0.1:{self.http}/api{path}", json=body, auth=("guest", "guest"), timeout=10, **kw)


def start_broker(work: Path, config: str = "", tls: bool = False, data_dir: Path | None = None) -> Broker:
    binary = os.environ.get("FERRYMQ_BIN") or str(REPO / "target" / "debug" / "ferrymq")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing (cargo build, or set FERRYMQ_BIN)", pytrace=False)
    work.mkdir(parents=True, exist_ok=True)
    amqp, http = free_port(), free_port()
    amqps, https = (free_port(), free_port()) if tls else (None, None)
    data = data_dir or work / "data"
    args = [binary, "--amqp-bind", f"127.0.0.1:{amqp}", "--http-bind", f"127.0.0.1:{http}", "--data-dir", str(data)]
    if tls:
        args += ["--amqps-bind", f"127.0.0.1:{amqps}", "--https-bind", f"127.0.0.1:{https}"]
    cfg = work / "ferrymq.toml"
    cfg.write_text(config)
    args += ["--config", str(cfg)]
    log = work / "broker.log"
    proc = subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(os.environ, NO_COLOR="1"))
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", http), 0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"broker did not start:\n{log.read_text(errors='replace')}", pytrace=False)
            time.sleep(0.05)
    return Broker(proc, amqp, http, amqps, https, log)


def stop_broker(b: Broker) -> None:
    b.proc.terminate()
    try:
        b.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        b.proc.kill()
        b.proc.wait()
