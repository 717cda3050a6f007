"""The operations surface of the real binary: sd_notify messages (READY, RELOADING, STOPPING,
STATUS, WATCHDOG) read from a datagram socket the test binds as NOTIFY_SOCKET, the admin API
(/healthz, /readyz, /metrics parsed by a Prometheus parser, /attestation validated against the
JSON schema), socket activation of the admin listener through systemd-socket-activate, and
docs/operations.md against what the daemon exposes."""
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import BIN, PCR_A, ROOT, Daemon, free_port, minimal_config

SCHEMA = ROOT / "docs" / "attestation-status.schema.json"
FAMILIES = ["requests_total", "upstream_connections_total", "upstream_connections_open",
            "pool_reuse_total", "attestations_total", "attestation_duration_seconds",
            "pin_expiry_seconds", "policy_generation", "reloads_total", "bytes_relayed_total",
            "enforcement_events_total", "client_connections_open", "build_info"]


class Notify:
    """A datagram socket bound as NOTIFY_SOCKET; recv() returns one message as text."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def recv(self, timeout=10.0):
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def wait_for(self, prefix, timeout=10.0):
        """Skips messages (e.g. WATCHDOG=1) until one starts with `prefix`."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                msg = self.recv(max(0.05, deadline - time.monotonic()))
            except socket.timeout:
                break
            if msg.startswith(prefix):
                return msg
            seen.append(msg)
        raise AssertionError(f"no {prefix!r} notification; saw {seen}")

    def close(self):
        self.sock.close()


def http_get(port, path, host="127.0.0.1", method="GET", timeout=5.0):
    """(status, headers dict, body bytes) of one request on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(": ")
        headers[k.lower()] = v
    return status, headers, body


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture
def notify(tmp_path):
    n = Notify(tmp_path / "notify.sock")
    yield n
    n.close()


@pytest.fixture
def ops_daemon(tmp_path, notify, monkeypatch):
    """start(extra_env) -> (Daemon, admin_port): a daemon with an admin listener and
    NOTIFY_SOCKET, after READY=1."""
    started = []

    def _start(extra_env=None, extra_daemon=""):
        admin = free_port()
        monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
        for k, v in (extra_env or {}).items():
            monkeypatch.setenv(k, v)
        conf = tmp_path / f"ops-{len(started)}.conf"
        conf.write_text(minimal_config(extra_daemon=f"admin_listen = 127.0.0.1:{admin}\n" +
                                       extra_daemon))
        d = Daemon(conf, tmp_path / f"ops-{len(started)}.log")
        started.append(d)
        d.wait_log("event=started")
        return d, admin, notify.wait_for("READY=1")

    yield _start
    for d in started:
        d.stop()


def test_notify_ready_reload_stop_sequence(ops_daemon, notify):
    d, _, ready = ops_daemon()
    assert re.fullmatch(r"READY=1\nSTATUS=[^\n]+", ready), ready

    d.signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING=1")
    m = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)(\nSTATUS=[^\n]+)?", reloading)
    assert m, reloading
    # CLOCK_MONOTONIC is system-wide: the daemon's stamp is in our past.
    assert 0 < int(m.group(1)) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert re.fullmatch(r"READY=1\nSTATUS=[^\n]+", notify.wait_for("READY=1")), "after reload"

    # A rejected reload still ends with READY=1 (systemd waits for it after RELOADING=1).
    d.conf_path.write_text(d.conf_path.read_text() + "bogus = 1\n")
    d.signal(signal.SIGHUP)
    notify.wait_for("RELOADING=1")
    notify.wait_for("READY=1")
    d.wait_log("event=reload_rejected")

    d.signal(signal.SIGTERM)
    stopping = notify.wait_for("STOPPING=1")
    assert re.fullmatch(r"STOPPING=1(\nSTATUS=[^\n]+)?", stopping), stopping
    assert d.wait_exit() == 0


def test_watchdog_pings_when_asked(ops_daemon, notify):
    d, _, _ = ops_daemon({"WATCHDOG_USEC": "200000"})  # a ping every 100 ms
    t0 = time.monotonic()
    pings = 0
    while time.monotonic() - t0 < 1.0:
        try:
            if notify.recv(1.0) == "WATCHDOG=1":
                pings += 1
        except socket.timeout:
            break
    assert 5 <= pings <= 15, pings


def test_admin_endpoints(ops_daemon):
    d, admin, _ = ops_daemon()
    assert http_get(admin, "/healthz")[0::2] == (200, b"ok\n")
    st, hdr, body = http_get(admin, "/readyz")
    assert (st, body) == (200, b"ready\n")  # no ready_requires_attestation: listeners are up
    st, hdr, body = http_get(admin, "/healthz", method="HEAD")
    assert st == 200 and body == b"" and hdr["content-length"] == "3"
    assert http_get(admin, "/healthz", method="POST")[0] == 405
    assert http_get(admin, "/healthz", host="attacker.example")[0] == 421
    assert http_get(admin, "/nope")[0] == 404


def test_readyz_waits_for_attestation_when_configured(tmp_path, notify, monkeypatch):
    admin = free_port()
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    conf = tmp_path / "wait.conf"
    conf.write_text(minimal_config(extra_daemon=f"admin_listen = 127.0.0.1:{admin}\n"
                                                "ready_requires_attestation = yes\n"))
    d = Daemon(conf, tmp_path / "wait.log")
    try:
        d.wait_log("event=started")
        assert wait_port(admin)
        # The upstream (port 9) never attests: not ready, and no READY=1. The body says why,
        # per service, and the STATUS= lines say it too.
        st, hdr, body = http_get(admin, "/readyz")
        assert st == 503 and hdr["content-type"] == "application/json"
        doc = json.loads(body)
        assert doc["ready"] is False
        assert doc["services"]["demo"]["ready"] is False
        assert notify.wait_for("STATUS=waiting for attestation: demo: cannot reach the enclave",
                               timeout=5.0)
        with pytest.raises(AssertionError):
            notify.wait_for("READY=1", timeout=1.0)
        assert http_get(admin, "/healthz")[0] == 200
        # A reload while still starting sends neither RELOADING=1 nor READY=1: READY=1 would
        # end the start (units ordered After= it would start) with nothing attested.
        d.signal(signal.SIGHUP)
        d.wait_log("event=reload_applied")
        seen = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                seen.append(notify.recv(max(0.05, deadline - time.monotonic())))
            except socket.timeout:
                break
        assert not [m for m in seen if m.startswith(("READY=1", "RELOADING=1"))], seen
        assert http_get(admin, "/readyz")[0] == 503
    finally:
        d.stop()


def test_metrics_exposition_parses(ops_daemon):
    prom = pytest.importorskip("prometheus_client.parser",
                               reason="apt-get install python3-prometheus-client")
    d, admin, _ = ops_daemon()
    st, hdr, body = http_get(admin, "/metrics")
    assert st == 200
    assert hdr["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    families = {f.name: f for f in prom.text_string_to_metric_families(text)}
    # prometheus_client strips _total from counter family names.
    names = {n[:-len("_total")] if n.endswith("_total") else n for n in
             ("attestproxy_" + f for f in FAMILIES)}
    assert names <= set(families), names - set(families)
    # The configuration the daemon started with is generation 0; a reload that changes what is
    # trusted adds one, any other applied reload only counts in reloads_total.
    assert [s.value for s in families["attestproxy_policy_generation"].samples] == [0]
    sample = [s for s in families["attestproxy_upstream_connections_open"].samples
              if s.labels == {"service": "demo"}]
    assert [s.value for s in sample] == [0]
    # Fixed label sets are exposed from zero for every configured service.
    results = {s.labels["result"] for s in families["attestproxy_upstream_connections"].samples
               if s.labels.get("service") == "demo"}
    assert results == {"ok", "resolve_error", "connect_error", "connect_timeout", "tls_error"}

    def reload_and_read():
        mark = len(d.log())
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10  # "event=reload_begin" is logged first: wait for the end
        while not any(e in d.log()[mark:] for e in ("event=reload_applied",
                                                     "event=reload_rejected")):
            assert time.monotonic() < deadline, d.log()[mark:]
            time.sleep(0.02)
        text = http_get(admin, "/metrics")[2].decode()
        fams = {f.name: f for f in prom.text_string_to_metric_families(text)}
        reloads = {s.labels["result"]: s.value for s in fams["attestproxy_reloads"].samples
                   if s.name == "attestproxy_reloads_total"}
        return fams["attestproxy_policy_generation"].samples[0].value, reloads

    # Unchanged file: applied, nothing trusted changed.
    assert reload_and_read() == (0, {"applied": 1, "rejected": 0})
    # Another measurement: the generation moves.
    d.conf_path.write_text(d.conf_path.read_text().replace(PCR_A, "b" * 96))
    assert reload_and_read() == (1, {"applied": 2, "rejected": 0})
    # A log level only: applied, same generation.
    d.conf_path.write_text(d.conf_path.read_text().replace("log_level = debug", "log_level = info"))
    assert reload_and_read() == (1, {"applied": 3, "rejected": 0})
    # A new key trusted to sign policy bundles: who may change the trust changed.
    import base64
    key = base64.b64encode(bytes(range(32))).decode()
    d.conf_path.write_text(d.conf_path.read_text().replace(
        "[daemon]\n", f"[daemon]\npolicy_key = release:{key}\n", 1))
    assert reload_and_read() == (2, {"applied": 4, "rejected": 0})
    # An invalid file: rejected, same generation.
    d.conf_path.write_text(d.conf_path.read_text() + "bogus_key = 1\n")
    assert reload_and_read() == (2, {"applied": 4, "rejected": 1})


def test_attestation_document_follows_the_schema(ops_daemon):
    jsonschema = pytest.importorskip("jsonschema", reason="apt-get install python3-jsonschema")
    d, admin, _ = ops_daemon()
    st, hdr, body = http_get(admin, "/attestation")
    assert st == 200, body
    assert hdr["content-type"] == "application/json"
    assert hdr["cache-control"] == "no-store"
    doc = json.loads(body)
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(doc)
    svc = doc["services"]["demo"]
    assert svc["ready"] is False and svc["pins"] == []
    assert svc["profile"] == "native" and svc["nonce"] is True


def test_admin_listener_adopted_from_socket_activation(tmp_path, notify):
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is missing (apt-get install systemd)")
    admin = free_port()
    conf = tmp_path / "sa.conf"
    conf.write_text(minimal_config(extra_daemon=f"admin_listen = 127.0.0.1:{admin}\n"))
    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
    log = open(tmp_path / "sa.log", "wb")
    # systemd-socket-activate binds the admin address and starts the daemon on the first
    # connection, passing the listening socket as fd 3.
    proc = subprocess.Popen([activate, "-l", f"127.0.0.1:{admin}", "--fdname=admin",
                             "-E", "NOTIFY_SOCKET", BIN, "run", "-c", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        assert wait_port(admin)
        st, _, body = http_get(admin, "/healthz", timeout=10.0)
        assert (st, body) == (200, b"ok\n")
        text = (tmp_path / "sa.log").read_text()
        assert "admin_listen_failed" not in text and "EADDRINUSE" not in text, text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "sa.log").read_text()


def test_operations_doc_lists_every_metric_family_and_error_code():
    """Every metric family, and every error code of daemon/proxy/errors.c, in operations.md's
    tables; every error code in attestproxy(8)'s DIAGNOSTICS too."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    man = (ROOT / "man" / "attestproxy.8.in").read_text()
    diagnostics = man[man.index(".SH DIAGNOSTICS"):man.index(".SH EXAMPLES")]
    for family in FAMILIES:
        assert f"| `{family}` |" in doc, family
    codes = re.findall(r'\] = \{"([a-z_]+)", \d{3},',
                       (ROOT / "daemon" / "proxy" / "errors.c").read_text())
    assert len(codes) >= 14 and "attestation_failed" in codes, codes
    for code in codes:
        assert f"| `{code}` |" in doc, code
        assert f".BR {code} " in diagnostics, code


def test_operations_doc_example_follows_the_schema():
    jsonschema = pytest.importorskip("jsonschema", reason="apt-get install python3-jsonschema")
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc[doc.index("### The /attestation document"):]
    example = json.loads(section[section.index("```json") + 7:section.index("```", section.index(
        "```json") + 7)])
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(example)
