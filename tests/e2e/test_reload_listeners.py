"""A reload applies listener changes for real (BRIEF §2.8): what is bound afterwards is exactly
what the new file says, or the reload is rejected whole.

The remote-listener cases bind 0.0.0.0 and reach it through a second address; they run inside a
network namespace of their own (`unshare -rn`) that holds only its loopback interface, given
the documentation address 192.0.2.1 as well, so nothing is ever reachable from outside. The module
re-runs itself there (`python3 test_reload_listeners.py --netns CASE`).
"""
import http.client
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conftest import BIN, Daemon, free_port  # noqa: E402
from proxy_fixtures import Relay, wait_listening  # noqa: E402
from simulator import Simulator, service_config  # noqa: E402

REMOTE = "192.0.2.1"  # TEST-NET-1, on loopback inside the test's own namespace
TOKEN = "s3cret-token-for-tests"


def reload(daemon):
    """SIGHUP and wait for its outcome; returns the log written since."""
    mark = len(daemon.log())
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = daemon.log()[mark:]
        if "event=reload_applied" in text or "event=reload_rejected" in text:
            return text
        time.sleep(0.05)
    raise AssertionError("no reload outcome in the log:\n" + daemon.log()[mark:])


def get(host, port, headers=None, conn=None):
    """GET /echo; returns (status, connection) so that a test can reuse the connection."""
    conn = conn or http.client.HTTPConnection(host, port, timeout=10)
    # The Host allow-list is not what these tests are about: every request names localhost.
    conn.request("GET", "/echo", headers={"Host": "localhost", **(headers or {})})
    r = conn.getresponse()
    r.read()
    return r.status, conn


def refused(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def tcp_listeners(port):
    """Local addresses in LISTEN state on `port`, from /proc/net/tcp{,6} of this namespace."""
    found = []
    for name in ("tcp", "tcp6"):
        with open(f"/proc/net/{name}") as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, p = local.split(":")
                if state == "0A" and int(p, 16) == port:
                    found.append(addr)
    return sorted(found)


def held_port():
    """A listening socket this process holds on 127.0.0.1, and its port."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    return busy, busy.getsockname()[1]


def connection_closed(conn, timeout=5.0):
    """Whether the server closed the idle keep-alive connection `conn` (EOF within timeout)."""
    conn.sock.settimeout(timeout)
    try:
        return conn.sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


# ---- Cases run inside the namespace -------------------------------------------------------

def remote_listener_to_loopback(tmp):
    """0.0.0.0:P with allow_remote and a token becomes 127.0.0.1:P with no token."""
    sim = Simulator(tmp / "chain", log_path=tmp / "sim.log")
    port = free_port()
    remote = service_config(sim, port, f"allow_remote = yes\ntoken = {TOKEN}\n").replace(
        f"listen = 127.0.0.1:{port}", f"listen = 0.0.0.0:{port}")
    conf = tmp / "a.conf"
    conf.write_text(remote)
    d = Daemon(conf, tmp / "daemon.log")
    try:
        d.wait_log("event=started")
        wait_listening(port)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert get(REMOTE, port)[0] == 401
        status, kept = get(REMOTE, port, auth)
        assert status == 200
        assert tcp_listeners(port) == ["00000000"]

        conf.write_text(service_config(sim, port))  # 127.0.0.1:P, no token, no allow_remote
        out = reload(d)
        assert "event=reload_applied" in out, out
        assert "event=listener_closed" in out and f"listen=0.0.0.0:{port}" in out, out
        assert f"event=listening service=demo listen=127.0.0.1:{port}" in out, out
        # What is bound is what the file says: nothing answers on the other address, and the
        # remote client's keep-alive connection is not served under the new, tokenless rules.
        assert tcp_listeners(port) == ["0100007F"]
        assert refused(REMOTE, port)
        assert connection_closed(kept)
        assert get("127.0.0.1", port)[0] == 200
        before = len([r for r in sim.requests() if not r["evidence"]])
        assert before == 2  # the authorised remote request and the loopback one
    finally:
        d.stop()
        sim.stop()


def loopback_to_remote_listener(tmp):
    """127.0.0.1:P becomes 0.0.0.0:P with allow_remote and a token: applied, token enforced."""
    sim = Simulator(tmp / "chain", log_path=tmp / "sim.log")
    port = free_port()
    conf = tmp / "a.conf"
    conf.write_text(service_config(sim, port))
    d = Daemon(conf, tmp / "daemon.log")
    try:
        d.wait_log("event=started")
        wait_listening(port)
        assert refused(REMOTE, port)
        status, kept = get("127.0.0.1", port)
        assert status == 200
        conf.write_text(service_config(sim, port, f"allow_remote = yes\ntoken = {TOKEN}\n")
                        .replace(f"listen = 127.0.0.1:{port}", f"listen = 0.0.0.0:{port}"))
        out = reload(d)
        assert "event=reload_applied" in out, out
        assert tcp_listeners(port) == ["00000000"]
        assert get(REMOTE, port)[0] == 401
        assert get(REMOTE, port, {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        # The token applies at once to a connection accepted before the reload, too.
        assert connection_closed(kept)
        assert get("127.0.0.1", port)[0] == 401
    finally:
        d.stop()
        sim.stop()


NETNS_CASES = {f.__name__: f for f in (remote_listener_to_loopback, loopback_to_remote_listener)}


def in_namespace(case):
    """Runs `case` in a new user and network namespace; returns (rc, output)."""
    script = (f"ip link set lo up && ip addr add {REMOTE}/32 dev lo && "
              f"exec {sys.executable} {pathlib.Path(__file__)} --netns {case}")
    r = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, timeout=120,
                       env=dict(os.environ))
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


@pytest.mark.parametrize("case", sorted(NETNS_CASES))
def test_remote_listener_changes_apply(case):
    rc, out = in_namespace(case)
    assert rc == 0, out


# ---- Cases on the host's loopback ----------------------------------------------------------

def test_unix_mode_narrowed_applies_to_the_socket_and_its_clients(tmp_path, start_daemon,
                                                                     start_sim):
    sim = start_sim()
    path = tmp_path / "svc.sock"
    text = service_config(sim, 1).replace("listen = 127.0.0.1:1", f"listen = unix:{path}")
    d = start_daemon(text + "unix_mode = 0666\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 200 ")

    d.conf_path.write_text(text + "unix_mode = 0600\n")
    out = reload(d)
    assert "event=reload_applied" in out and "event=listener_mode_changed" in out, out
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # A client that connected while the socket was 0666 is held to the narrower mode too.
    s.settimeout(5)
    assert s.recv(1) == b""
    s.close()

    # Widening applies to the file; clients already connected are not disturbed.
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    d.conf_path.write_text(text + "unix_mode = 0660\n")
    assert "event=reload_applied" in reload(d)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
    s.settimeout(5)
    assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    s.close()


def test_listen_address_moves_and_the_old_one_closes(start_daemon, start_sim):
    sim = start_sim()
    p1, p2 = free_port(), free_port()
    d = start_daemon(service_config(sim, p1))
    relay = Relay(d, sim, p1)
    wait_listening(p1)
    assert get("127.0.0.1", p1)[0] == 200
    d.conf_path.write_text(service_config(sim, p2))
    out = reload(d)
    assert "event=reload_applied" in out, out
    assert refused("127.0.0.1", p1)
    assert get("127.0.0.1", p2)[0] == 200
    assert "listen_change_ignored" not in relay.daemon.log()


def test_address_handed_from_one_service_to_another(start_daemon, start_sim):
    sim = start_sim()
    p1, p2, p3 = free_port(), free_port(), free_port()
    two = (service_config(sim, p1) + "\n" +
           service_config(sim, p2, name="other").split("\n", 3)[3])
    d = start_daemon(two)
    wait_listening(p1)
    wait_listening(p2)
    # p1 goes from service demo to service other; demo keeps only a new port.
    swapped = (service_config(sim, p3) + "\n" +
               service_config(sim, p2, name="other").split("\n", 3)[3]
               .replace(f"listen = 127.0.0.1:{p2}", f"listen = 127.0.0.1:{p2}\nlisten = 127.0.0.1:{p1}"))
    d.conf_path.write_text(swapped)
    out = reload(d)
    assert "event=reload_applied" in out, out
    assert f"event=listening service=other listen=127.0.0.1:{p1}" in out, out
    assert get("127.0.0.1", p1)[0] == 200
    assert get("127.0.0.1", p3)[0] == 200


def test_a_listener_that_cannot_bind_rejects_the_whole_reload(start_daemon, start_sim):
    sim = start_sim()
    p1 = free_port()
    d = start_daemon(service_config(sim, p1))
    wait_listening(p1)
    busy, taken = held_port()
    try:
        # Adds a listener on a port another process holds, and a token in the same file.
        d.conf_path.write_text(service_config(sim, p1, f"token = {TOKEN}\n").replace(
            f"listen = 127.0.0.1:{p1}", f"listen = 127.0.0.1:{p1}\nlisten = 127.0.0.1:{taken}"))
        out = reload(d)
        assert "event=reload_rejected" in out, out
        assert f"cannot listen on 127.0.0.1:{taken}" in out, out
        assert "event=reload_applied" not in out
        # Nothing applied: no token is asked for, and the first listener still serves.
        assert get("127.0.0.1", p1)[0] == 200
    finally:
        busy.close()
    # Once the port is free, the same file applies.
    out = reload(d)
    assert "event=reload_applied" in out, out
    assert get("127.0.0.1", p1)[0] == 401
    assert get("127.0.0.1", taken, {"Authorization": f"Bearer {TOKEN}"})[0] == 200



def test_a_removed_service_closes_its_idle_connections_at_once(start_daemon, start_sim):
    """A reload renames the service (the old one is removed) and sets a policy the enclave
    fails. An idle keep-alive connection of the removed service is closed at once: its next
    request is not relayed under the removed service's old policy. (Before, it had the
    shutdown's grace to bring one more request, which then reached the enclave.)"""
    sim = start_sim()
    p = free_port()
    d = start_daemon(service_config(sim, p))
    wait_listening(p)
    status, conn = get("127.0.0.1", p)
    assert status == 200
    seen = len([r for r in sim.requests() if not r["evidence"]])
    renamed = service_config(sim, p, name="other").replace(
        "measurement = ", "measurement = pcr0=" + "33" * 48 + "\n# was: ", 1)
    d.conf_path.write_text(renamed)
    assert "event=reload_applied" in reload(d)
    # At once, on the old connection: no answer but the close.
    try:
        conn.sock.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert connection_closed(conn)
    # The same address, now the new service's: the enclave fails its policy.
    assert get("127.0.0.1", p)[0] in (502, 503)
    assert len([r for r in sim.requests() if not r["evidence"]]) == seen

def admin_status(port, path="/healthz"):
    """The admin API's status for `path` on 127.0.0.1:port, or None when nothing listens."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except ConnectionRefusedError:
        return None


def test_admin_listen_moves_on_reload(tmp_path, start_daemon, start_sim):
    """admin_listen applies on reload like any listener: moved, added, removed, to a Unix
    socket and back; the old address stops answering."""
    sim = start_sim()
    p, a1, a2 = free_port(), free_port(), free_port()
    d = start_daemon(service_config(sim, p, extra_daemon=f"admin_listen = 127.0.0.1:{a1}\n"))
    wait_listening(p)
    wait_listening(a1)
    assert admin_status(a1) == 200
    d.conf_path.write_text(service_config(sim, p, extra_daemon=f"admin_listen = 127.0.0.1:{a2}\n"))
    out = reload(d)
    assert "event=reload_applied" in out, out
    assert f"event=admin_listen_changed from=127.0.0.1:{a1} to=127.0.0.1:{a2}" in out, out
    assert admin_status(a2) == 200
    assert admin_status(a2, "/metrics") == 200
    assert refused("127.0.0.1", a1)
    # The admin API follows the file: `attestproxy health -c` reads the new address.
    health = subprocess.run([BIN, "health", "-c", str(d.conf_path)],
                            capture_output=True, text=True, timeout=30)
    assert health.returncode == 0, health.stdout + health.stderr
    # Removed: nothing answers, the service goes on.
    d.conf_path.write_text(service_config(sim, p))
    out = reload(d)
    assert "event=reload_applied" in out, out
    assert f"from=127.0.0.1:{a2} to=none" in out, out
    assert refused("127.0.0.1", a2)
    assert get("127.0.0.1", p)[0] == 200
    # Added again, on a Unix socket; the file goes when the socket moves back to TCP.
    sock = tmp_path / "admin.sock"
    d.conf_path.write_text(service_config(sim, p, extra_daemon=f"admin_listen = unix:{sock}\n"))
    assert "event=reload_applied" in reload(d)
    assert sock.exists()
    d.conf_path.write_text(service_config(sim, p, extra_daemon=f"admin_listen = 127.0.0.1:{a1}\n"))
    assert "event=reload_applied" in reload(d)
    assert admin_status(a1) == 200
    deadline = time.monotonic() + 5
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sock.exists()


def test_an_admin_address_that_cannot_bind_rejects_the_whole_reload(start_daemon, start_sim):
    sim = start_sim()
    p, a1, p2 = free_port(), free_port(), free_port()
    d = start_daemon(service_config(sim, p, extra_daemon=f"admin_listen = 127.0.0.1:{a1}\n"))
    wait_listening(p)
    wait_listening(a1)
    busy, taken = held_port()
    try:
        # The admin listener moves to a held port, and the service to a new port, in one file.
        d.conf_path.write_text(service_config(
            sim, p2, extra_daemon=f"admin_listen = 127.0.0.1:{taken}\n"))
        out = reload(d)
        assert "event=reload_rejected" in out, out
        assert f"cannot listen on admin_listen 127.0.0.1:{taken}" in out, out
        # Nothing applied: the old admin address and the old service port still answer, the
        # new service port was never bound.
        assert admin_status(a1) == 200
        assert get("127.0.0.1", p)[0] == 200
        assert refused("127.0.0.1", p2)
    finally:
        busy.close()

if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--netns":
    with tempfile.TemporaryDirectory() as t:
        try:
            NETNS_CASES[sys.argv[2]](pathlib.Path(t))
        except BaseException:
            for log in pathlib.Path(t).glob("*.log"):
                print(f"---- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
            raise
    print("ok")
