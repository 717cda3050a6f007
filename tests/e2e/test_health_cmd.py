"""`attestproxy health` (issue #20, item 3), the probe for containers and Kubernetes: the real
binary against a real daemon. Ready (attested at start, no request) -> 0; not ready (a failing
enclave) -> 1 with the reason from /readyz; nothing listening -> 1; a Unix-socket admin
listener -> 0; usage errors -> 2; a malformed or missing answer -> 1 within --timeout."""
import socket
import subprocess
import threading
import time

from conftest import BIN, free_port, minimal_config
from simulator import service_config


def health(*args, timeout=15):
    """(exit code, stdout, stderr) of `attestproxy health ARGS`."""
    p = subprocess.run([BIN, "health", *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def wait_health(*args, want=0, timeout=15.0):
    """Runs the command until it exits `want`; returns its last (code, stdout, stderr)."""
    deadline = time.monotonic() + timeout
    while True:
        r = health(*args)
        if r[0] == want or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def attested_config(sim, admin, extra_service=""):
    return service_config(sim, free_port(), extra_service,
                          f"admin_listen = {admin}\nready_requires_attestation = yes\n")


def test_ready_without_traffic_exits_0(start_daemon, start_sim):
    sim = start_sim()
    admin = free_port()
    d = start_daemon(attested_config(sim, f"127.0.0.1:{admin}"))
    code, out, err = wait_health("-c", str(d.conf_path))
    assert (code, err) == (0, "")
    assert out == f"attestproxy health: healthy: GET /readyz on 127.0.0.1:{admin}: 200 OK\n"
    # No client request was needed: the daemon attested on its own.
    assert sim.stats()["app_requests"] == 0
    assert health("-c", str(d.conf_path), "--live")[:2] == (
        0, f"attestproxy health: healthy: GET /healthz on 127.0.0.1:{admin}: 200 OK\n")
    assert health("--url", f"http://localhost:{admin}/readyz")[0] == 0
    assert health("--admin", f"127.0.0.1:{admin}")[0] == 0


def test_a_failing_enclave_exits_1_with_the_reason(start_daemon, start_sim):
    sim = start_sim("--misbehave", "wrong_pcrs")
    admin = free_port()
    d = start_daemon(attested_config(sim, f"127.0.0.1:{admin}", "negative_cache = 0\n"))
    d.wait_log("event=warm_attestation_failed")
    code, out, err = health("-c", str(d.conf_path))
    assert code == 1 and out == ""
    assert err.startswith(f"attestproxy health: not ready: GET /readyz on 127.0.0.1:{admin}: "
                          "503 Service Unavailable: waiting for attestation"), err
    assert "; demo: attestation failed" in err and "pcr" in err
    assert err.count("\n") == 1
    # Alive all the same: --live asks /healthz.
    assert health("-c", str(d.conf_path), "--live")[0] == 0


def test_nothing_listening_exits_1(tmp_path):
    port = free_port()
    conf = tmp_path / "a.conf"
    conf.write_text(minimal_config(extra_daemon=f"admin_listen = 127.0.0.1:{port}\n"))
    code, out, err = health("-c", str(conf))
    assert (code, out) == (1, "")
    assert err == ("attestproxy health: unhealthy: cannot connect to "
                   f"127.0.0.1:{port}: Connection refused\n")
    code, _, err = health("--admin", f"unix:{tmp_path}/none.sock")
    assert code == 1 and "No such file or directory" in err


def test_unix_socket_admin_exits_0(start_daemon, start_sim, tmp_path):
    sim = start_sim()
    path = tmp_path / "admin.sock"
    d = start_daemon(attested_config(sim, f"unix:{path}"))
    code, out, _ = wait_health("-c", str(d.conf_path))
    assert code == 0
    assert out == f"attestproxy health: healthy: GET /readyz on unix:{path}: 200 OK\n"
    assert health("--admin", f"unix:{path}", "--live")[0] == 0


def test_usage_errors_exit_2(tmp_path):
    conf = tmp_path / "noadmin.conf"
    conf.write_text(minimal_config())
    code, _, err = health("-c", str(conf))
    assert code == 2 and "sets no admin_listen" in err
    assert health("-c", str(tmp_path / "missing.conf"))[0] == 2
    for args in (["--url", "http://127.0.0.1:1/", "--admin", "127.0.0.1:1"],
                 ["--url", "https://127.0.0.1:1/readyz"],
                 ["--url", "http://example.com:80/readyz"],
                 ["--url", "http://127.0.0.1/readyz"],
                 ["--url", "http://127.0.0.1:1/readyz", "--live"],
                 ["--admin", "localhost:1"],
                 ["--timeout", "0", "--admin", "127.0.0.1:1"],
                 ["--timeout", "61s", "--admin", "127.0.0.1:1"],
                 ["--bogus"], ["extra"]):
        assert health(*args)[0] == 2, args
    code, out, _ = health("--help")
    assert code == 0 and out.startswith("Usage: attestproxy health")


class StandIn:
    """A one-shot TCP server that answers each connection with `answer` (None: never)."""

    def __init__(self, answer, count=1):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.thread = threading.Thread(target=self._serve, args=(answer, count), daemon=True)
        self.thread.start()

    def _serve(self, answer, count):
        for _ in range(count):
            c, _ = self.sock.accept()
            c.settimeout(5)
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = c.recv(4096)
                if not chunk:
                    break
                req += chunk
            self.requests.append(req)
            if answer is None:
                time.sleep(3)
            else:
                c.sendall(answer)
            c.close()
        self.sock.close()


def test_strict_status_line(tmp_path):
    cases = [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
        (b"HTTP/1.0 200 \r\n\r\n", 0),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", 1),  # bare LF
        (b"HTTP/1.1 200\r\n\r\n", 1),                    # no SP before the (empty) reason
        (b"HTTP/2 200 OK\r\n\r\n", 1),
        (b"HTTP/1.1 20 OK\r\n\r\n", 1),
        (b"HTTP/1.1 2000 OK\r\n\r\n", 1),
        (b"HTTP/1.1 200 OK", 1),                         # closed before CRLF
        (b"ICY 200 OK\r\n\r\n", 1),
        (b"", 1),
        (b"HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready\r\n", 1),
    ]
    for answer, want in cases:
        s = StandIn(answer)
        code, _, err = health("--url", f"http://127.0.0.1:{s.port}/readyz")
        assert code == want, (answer, err)
        s.thread.join(5)
        assert s.requests[0].startswith(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n")
    s = StandIn(b"HTTP/1.1 500 Internal Server Error\r\n\r\nboom\x1b[31m\r\nsecond line\r\n")
    code, _, err = health("--url", f"http://127.0.0.1:{s.port}/x")
    assert code == 1
    assert err == (f"attestproxy health: unhealthy: GET /x on 127.0.0.1:{s.port}: "
                   "500 Internal Server Error: boom?[31m\n")


def test_no_answer_times_out(tmp_path):
    s = StandIn(None)
    t0 = time.monotonic()
    code, _, err = health("--admin", f"127.0.0.1:{s.port}", "--timeout", "300ms")
    elapsed = time.monotonic() - t0
    assert code == 1 and "no answer within 300 ms" in err
    assert elapsed < 2.0
