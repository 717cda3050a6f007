"""Bad client input is refused with the right status and JSON error, the connection is closed,
nothing reaches the enclave, and the daemon keeps serving other clients (BRIEF §6, §7)."""
import json
import socket
import time

import pytest

from conftest import free_port
from proxy_fixtures import wait_open_clients

CASES = {
    "cl_and_te": (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request"),
    "duplicate_cl": (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                     b"Content-Length: 6\r\n\r\nhello!", 400, "bad_request"),
    "bad_chunk_size": (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                       b"\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "bad_request"),
    "chunk_without_crlf": (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked"
                           b"\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, "bad_request"),
    "obs_fold": (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n", 400,
                 "bad_request"),
    "bare_lf": (b"GET /echo HTTP/1.1\nHost: localhost\r\n\r\n", 400, "bad_request"),
    "ctl_in_name": (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX\x01A: 1\r\n\r\n", 400,
                    "bad_request"),
    "space_before_colon": (b"GET /echo HTTP/1.1\r\nHost : localhost\r\n\r\n", 400,
                           "bad_request"),
    "no_host": (b"GET /echo HTTP/1.1\r\n\r\n", 400, "bad_request"),
    "two_hosts": (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n", 400,
                  "bad_request"),
    "absolute_form": (b"GET http://localhost/echo HTTP/1.1\r\nHost: localhost\r\n\r\n", 400,
                      "bad_request"),
    "connect": (b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400,
                "bad_request"),
    "oversized_headers": (b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 40000 +
                          b"\r\n\r\n", 431, "header_too_large"),
    "host_not_allowed": (b"GET /echo HTTP/1.1\r\nHost: attacker.example\r\n\r\n", 421,
                         "host_not_allowed"),
    "rebinding_with_port": (b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1.attacker.example:80\r\n\r\n",
                            421, "host_not_allowed"),
}


def exchange(port, data, timeout=10):
    """Sends `data`, reads until the server closes; returns (status, headers text, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None
    return status, head.decode(errors="replace"), body


# Errors found in a body: the head was valid and already on its way to the enclave when the
# body turned out bad; that upstream connection is cut (never reused), so the enclave sees at
# most a truncated request.
BODY_ERRORS = {"bad_chunk_size", "chunk_without_crlf"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_and_others_are_served(relay, case):
    data, status, code = CASES[case]
    with relay.session() as other:
        # Another client, mid keep-alive, before and after the bad one.
        assert other.get(relay.url + "/echo?other=1", timeout=30).status_code == 200
        got, head, body = exchange(relay.port, data)
        assert got == status, head
        assert "Connection: close" in head
        assert json.loads(body)["error"]["code"] == code
        assert other.get(relay.url + "/echo?other=2", timeout=30).status_code == 200
    paths = [r["path"] for r in relay.app_requests()]
    if case in BODY_ERRORS and "/echo" in paths:
        paths.remove("/echo")
    assert paths == ["/echo?other=1", "/echo?other=2"]


def test_allowed_hosts(start_relay):
    relay = start_relay(extra_service="allowed_hosts = proxy.internal localhost\n")
    ok, _, _ = exchange(relay.port, b"GET /echo HTTP/1.1\r\nHost: proxy.internal:8080\r\n"
                                    b"Connection: close\r\n\r\n")
    assert ok == 200
    refused, _, _ = exchange(relay.port, b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert refused == 421


def test_default_hosts_with_and_without_port(relay):
    for host in (b"localhost", b"127.0.0.1", b"[::1]", b"LOCALHOST:%d" % relay.port,
                 b"127.0.0.1:%d" % relay.port):
        status, head, _ = exchange(relay.port, b"GET /echo HTTP/1.1\r\nHost: " + host +
                                   b"\r\nConnection: close\r\n\r\n")
        assert status == 200, (host, head)


def test_payload_too_large(start_relay):
    relay = start_relay(extra_service="max_body_size = 1k\n")
    status, head, body = exchange(relay.port, b"POST /upload HTTP/1.1\r\nHost: localhost\r\n"
                                              b"Content-Length: 2048\r\n\r\n" + b"x" * 2048)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    # Chunked bodies are counted as they stream.
    chunked = b"".join(b"100\r\n" + b"y" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    status, _, body = exchange(relay.port, b"POST /upload HTTP/1.1\r\nHost: localhost\r\n"
                                           b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert status == 413
    assert relay.sim.stats()["app_requests"] <= 1  # the chunked one may have started upstream


def test_max_headers(start_relay):
    relay = start_relay(extra_service="max_headers = 5\n")
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(10))
    status, _, body = exchange(relay.port, b"GET /echo HTTP/1.1\r\nHost: localhost\r\n" + many +
                               b"\r\n")
    assert status == 431
    assert json.loads(body)["error"]["code"] == "header_too_large"


def test_max_connections_answers_503(start_relay):
    admin = free_port()
    relay = start_relay(extra_service="max_connections = 2\n",
                        extra_daemon=f"admin_listen = 127.0.0.1:{admin}\n")
    wait_open_clients(admin, 0)  # the fixture's readiness probe connection is gone
    held = [socket.create_connection(("127.0.0.1", relay.port), timeout=10) for _ in range(2)]
    try:
        wait_open_clients(admin, 2)  # both accepted: the next connection is over the limit
        status, head, body = exchange(relay.port, b"GET /echo HTTP/1.1\r\nHost: localhost\r\n"
                                                  b"Connection: close\r\n\r\n")
        assert status == 503
        assert "Retry-After: 1" in head
        assert json.loads(body)["error"]["code"] == "too_many_connections"
    finally:
        for s in held:
            s.close()
    wait_open_clients(admin, 0)
    assert relay.get("/echo").status_code == 200


def test_header_timeout_closes_a_slow_client(start_relay):
    relay = start_relay(extra_service="client_header_timeout = 300ms\n")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: local")
        start = time.monotonic()
        assert s.recv(100) == b""  # closed without an answer
        assert time.monotonic() - start < 5
    assert relay.get("/echo").status_code == 200


def test_unix_socket_listener(start_daemon, start_sim, tmp_path):
    import os
    import stat
    import subprocess
    from simulator import service_config
    sim = start_sim()
    path = tmp_path / "attestproxy.sock"
    conf = service_config(sim, 1, extra_service="unix_mode = 0600\n")
    conf = conf.replace("listen = 127.0.0.1:1", f"listen = unix:{path}")
    start_daemon(conf)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    r = subprocess.run(["curl", "--silent", "--noproxy", "*", "--max-time", "30", "--unix-socket",
                        str(path), "http://localhost/echo"], capture_output=True, timeout=60)
    assert r.returncode == 0
    assert json.loads(r.stdout)["path"] == "/echo"
