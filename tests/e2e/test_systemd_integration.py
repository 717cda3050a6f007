"""systemd integration of the running daemon: sd_notify messages, watchdog, socket activation,
and the admin API, observed from outside as systemd and an operator would."""
import json
import os
import signal
import socket
import time
import urllib.request

from conftest import PCR_A, free_port, minimal_config


def notify_socket(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    s.bind(path)
    s.settimeout(10)
    return s, path


def recv_until(sock, prefix, timeout=10.0):
    """Returns every datagram received up to and including the first starting with `prefix`."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sock.recv(4096).decode()
        got.append(msg)
        if msg.startswith(prefix):
            return got
    raise AssertionError(f"no {prefix!r} datagram; got {got}")


def test_ready_reloading_stopping_sequence(tmp_path, start_daemon):
    sock, path = notify_socket(tmp_path)
    d = start_daemon(minimal_config(), env={"NOTIFY_SOCKET": path})
    ready = recv_until(sock, "READY=1")[-1]
    assert "STATUS=ready: 1 service(s), policy generation 0" in ready

    d.signal(signal.SIGHUP)
    reloading = recv_until(sock, "RELOADING=1")[-1]
    assert "\nMONOTONIC_USEC=" in reloading
    usec = int(reloading.split("MONOTONIC_USEC=")[1].split("\n")[0])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 10_000_000
    after = recv_until(sock, "READY=1")[-1]
    assert "policy generation 0" in after  # the same file: nothing trusted changed

    # A rejected reload still answers RELOADING with READY (systemd waits for it).
    d.conf_path.write_text(d.conf_path.read_text() + "bogus = 1\n")
    d.signal(signal.SIGHUP)
    recv_until(sock, "RELOADING=1")
    assert "policy generation 0" in recv_until(sock, "READY=1")[-1]

    d.signal(signal.SIGTERM)
    assert recv_until(sock, "STOPPING=1")[-1].startswith("STOPPING=1\nSTATUS=stopping")
    assert d.wait_exit() == 0


def test_watchdog_pings(tmp_path, start_daemon):
    sock, path = notify_socket(tmp_path)
    d = start_daemon(minimal_config(), env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    t0 = time.monotonic()
    pings = 0
    while pings < 4 and time.monotonic() - t0 < 5:
        if sock.recv(4096) == b"WATCHDOG=1":
            pings += 1
    assert pings == 4
    # Half the interval: four pings take well under a second.
    assert time.monotonic() - t0 < 1.5
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_admin_endpoints(tmp_path, start_daemon):
    port = free_port()
    d = start_daemon(minimal_config(extra_daemon=f"admin_listen = 127.0.0.1:{port}\n"))
    base = f"http://127.0.0.1:{port}"
    assert get(base + "/healthz")[0] == 200
    assert get(base + "/readyz")[0] == 200
    code, headers, body = get(base + "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    assert "attestproxy_policy_generation 0\n" in body.decode()

    code, headers, body = get(base + "/attestation")
    assert code == 200 and headers["Cache-Control"] == "no-store"
    doc = json.loads(body)
    svc = doc["services"]["demo"]
    assert svc["upstream"] == "127.0.0.1:9"
    assert svc["profile"] == "native" and svc["binding"] == "spki_sha256" and svc["nonce"] is True
    digest = svc["policy_digest"]
    assert digest.startswith("sha256:") and len(digest) == 71

    # A policy change bumps the generation and changes the digest; a no-op edit keeps it.
    d.conf_path.write_text(d.conf_path.read_text().replace(PCR_A, "ab" * 48))
    d.signal(signal.SIGHUP)
    d.wait_log("event=reload_applied")
    doc2 = json.loads(get(base + "/attestation")[2])
    assert doc2["policy_generation"] == 1
    assert doc2["services"]["demo"]["policy_digest"] != digest
    assert "attestproxy_policy_generation 1\n" in get(base + "/metrics")[2].decode()

    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_readyz_waits_for_attestation_when_required(tmp_path, start_daemon):
    port = free_port()
    d = start_daemon(minimal_config(
        extra_daemon=f"admin_listen = 127.0.0.1:{port}\nready_requires_attestation = yes\n"))
    # Nothing has been attested (the upstream does not exist), so the daemon is not ready.
    assert get(f"http://127.0.0.1:{port}/readyz")[0] == 503
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_socket_activation_adopts_the_admin_socket(tmp_path, start_daemon):
    port = free_port()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(16)
    fd = lsock.fileno()

    def as_fd3():
        os.dup2(fd, 3)

    # As systemd does: the socket is fd 3 and LISTEN_PID names the process that exec()s.
    d = start_daemon(minimal_config(extra_daemon=f"admin_listen = 127.0.0.1:{port}\n"),
                     env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "admin"},
                     wrapper=["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"],
                     preexec_fn=as_fd3, pass_fds=(fd, 3))
    lsock.close()  # only the daemon holds the listening socket now
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
