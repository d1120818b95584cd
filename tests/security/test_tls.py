"""TLS: the AMQPS listener with pika (PLAIN, and EXTERNAL with a client certificate), HTTPS for
the management API, untrusted and plain-text clients refused without harm, and certificate
reload without restart."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import time

import pika
import pytest
import requests

from conftest import REPO, Pki, free_port, start_broker, stop_broker


def tls_config(pki: Pki, verify_peer: bool = True) -> str:
    return (
        f'tls_cert_file = "{pki.path("live.pem")}"\n'
        f'tls_key_file = "{pki.path("live.key")}"\n'
        f'tls_ca_file = "{pki.path("ca.pem")}"\n'
        f"tls_verify_peer = {'true' if verify_peer else 'false'}\n"
        "tls_reload_interval = 1\n"
    )


@pytest.fixture(scope="module")
def broker(pki, tmp_path_factory):
    # The broker reads "live" files, so the reload test can replace them.
    for ext in ("pem", "key"):
        shutil.copy(pki.path(f"server.{ext}"), pki.path(f"live.{ext}"))
    b = start_broker(tmp_path_factory.mktemp("tls-broker"), tls_config(pki), tls=True)
    yield b
    stop_broker(b)


def client_context(pki: Pki, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.path("ca.pem"))
    if cert:
        ctx.load_cert_chain(pki.path(f"{cert}.pem"), pki.path(f"{cert}.key"))
    return ctx


def params(broker, pki: Pki, cert: str | None = None, **kw) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host="localhost", port=broker.amqps, ssl_options=pika.SSLOptions(client_context(pki, cert), "localhost"),
        connection_attempts=1, socket_timeout=5, **kw,
    )


def fingerprint(port: int, pki: Pki) -> str:
    with socket.create_connection(("127.0.0.1", port), 5) as raw:
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def test_amqps_plain_login_publish_and_get(broker, pki):
    conn = pika.BlockingConnection(params(broker, pki, credentials=pika.PlainCredentials("guest", "guest")))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"over tls")
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"over tls"
    conns = broker.api("GET", "/connections").json()
    assert any(c["ssl"] is True and c["user"] == "guest" for c in conns), conns
    conn.close()


def test_external_login_with_a_verified_client_certificate(broker, pki):
    assert broker.api("PUT", "/users/tls-user", {"password_hash": "", "tags": ""}).status_code in (201, 204)
    assert broker.api("PUT", "/permissions/%2F/tls-user", {"configure": ".*", "write": ".*", "read": ".*"}).status_code in (201, 204)
    conn = pika.BlockingConnection(params(broker, pki, cert="client", credentials=pika.credentials.ExternalCredentials()))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"external")
    assert ch.basic_get(q, auto_ack=True)[2] == b"external"
    conns = broker.api("GET", "/connections").json()
    assert any(c["user"] == "tls-user" and c["ssl"] for c in conns), conns
    conn.close()


def test_external_is_not_offered_without_a_certificate(broker, pki):
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params(broker, pki, credentials=pika.credentials.ExternalCredentials()))


def test_untrusted_client_certificate_is_refused(broker, pki):
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(params(broker, pki, cert="rogue-client", credentials=pika.credentials.ExternalCredentials()))
    # The broker keeps serving.
    pika.BlockingConnection(params(broker, pki, credentials=pika.PlainCredentials("guest", "guest"))).close()


def test_plain_text_on_the_tls_port_is_dropped_and_the_broker_keeps_serving(broker, pki):
    with socket.create_connection(("127.0.0.1", broker.amqps), 5) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        s.settimeout(12)
        try:
            data = s.recv(100)
        except (ConnectionResetError, socket.timeout):
            data = b""
        assert not data.startswith(b"AMQP"), data
    pika.BlockingConnection(params(broker, pki, credentials=pika.PlainCredentials("guest", "guest"))).close()


def test_https_management_api(broker, pki):
    r = requests.get(f"https://localhost:{broker.https}/api/overview", auth=("guest", "guest"), verify=pki.path("ca.pem"), timeout=10)
    assert r.status_code == 200
    protocols = {l["protocol"] for l in r.json()["listeners"]}
    assert {"amqp", "amqp/ssl", "http", "https"} <= protocols, protocols
    r = requests.get(f"https://localhost:{broker.https}/api/overview", auth=("guest", "nope"), verify=pki.path("ca.pem"), timeout=10)
    assert r.status_code == 401


def test_ferryctl_over_https(broker, pki):
    ferryctl = os.environ.get("FERRYCTL_BIN") or str(REPO / "target" / "debug" / "ferryctl")
    url = f"https://localhost:{broker.https}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYCTL_")}
    env["XDG_CONFIG_HOME"] = "/nonexistent-ferryctl-test"
    run = lambda *a: subprocess.run([ferryctl, "--url", url, *a], capture_output=True, text=True, timeout=30, env=env)
    ok = run("--cacert", pki.path("ca.pem"), "list", "vhosts")
    assert ok.returncode == 0, ok.stderr
    assert "/" in ok.stdout
    # Without the CA the server is not trusted: a one-line connection error, exit 2.
    refused = run("list", "vhosts")
    assert refused.returncode == 2, refused
    assert len(refused.stderr.strip().splitlines()) == 1 and "cannot reach" in refused.stderr, refused.stderr


def test_certificate_reload_without_restart(broker, pki):
    before = fingerprint(broker.amqps, pki)
    held = pika.BlockingConnection(params(broker, pki, credentials=pika.PlainCredentials("guest", "guest")))
    # A half-written renewal is refused and the old certificate stays in force.
    with open(pki.path("live.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot really\n")
    time.sleep(2.5)
    assert fingerprint(broker.amqps, pki) == before
    assert "TLS reload failed" in broker.log_text()
    # The renewed certificate is picked up by new connections; open ones keep going.
    pki.issue_server("renewed")
    shutil.copy(pki.path("renewed.key"), pki.path("live.key"))
    shutil.copy(pki.path("renewed.pem"), pki.path("live.pem"))
    deadline = time.monotonic() + 10
    while fingerprint(broker.amqps, pki) == before:
        assert time.monotonic() < deadline, "the renewed certificate was not picked up"
        time.sleep(0.3)
    after = hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(pki.path("renewed.pem")).read())).hexdigest()
    assert fingerprint(broker.amqps, pki) == after
    assert fingerprint(broker.https, pki) == after
    held.channel().queue_declare("", exclusive=True)
    held.close()


def test_bad_tls_configuration_is_a_clear_start_up_error(pki, tmp_path):
    cfg = f'tls_cert_file = "{pki.path("server.pem")}"\ntls_key_file = "{pki.path("client.key")}"\n'
    binary = os.environ.get("FERRYMQ_BIN") or str(REPO / "target" / "debug" / "ferrymq")
    (tmp_path / "c.toml").write_text(cfg)
    out = subprocess.run(
        [binary, "--config", str(tmp_path / "c.toml"), "--amqp-bind", f"127.0.0.1:{free_port()}", "--http-bind",
         f"127.0.0.1:{free_port()}", "--amqps-bind", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=30, env=dict(os.environ, NO_COLOR="1"),
    )
    assert out.returncode != 0
    assert "do not fit together" in out.stdout + out.stderr, out
