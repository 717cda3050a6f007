"""Retries (BRIEF §6): only idempotent requests, only when a reused pooled connection fails
before any response byte, never once request body bytes were sent.

A small TCP relay sits between the daemon and the simulator (TLS passes through it untouched,
so attestation is unaffected); armed, it cuts each existing connection at the daemon's next
bytes, the way an enclave that closed an idle connection looks to the daemon's pool."""
import socket
import threading

import pytest

from conftest import free_port
from proxy_fixtures import Relay, wait_listening
from simulator import service_config


class Cutter:
    def __init__(self, target_port):
        self.target = target_port
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []  # [daemon_side, sim_side, armed, bytes still let through once armed]
        self.cut = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            entry = [a, b, False, 0]
            with self.lock:
                self.conns.append(entry)
            threading.Thread(target=self._pump, args=(entry, a, b, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(entry, b, a, False), daemon=True).start()

    def _pump(self, entry, src, dst, from_daemon):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_daemon and entry[2]:
                    if entry[3] > 0:
                        # Let `allow` bytes through first, then cut mid-request.
                        dst.sendall(data[:entry[3]])
                        entry[3] -= min(entry[3], len(data))
                        if entry[3] > 0:
                            continue
                    with self.lock:
                        self.cut += 1
                    break  # dropped: the enclave "had closed" this connection
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def arm(self, allow=0):
        with self.lock:
            for entry in self.conns:
                entry[2] = True
                entry[3] = allow

    def close(self):
        self.closed = True
        self.srv.close()


@pytest.fixture
def cut_relay(start_daemon, start_sim):
    sim = start_sim()
    cutter = Cutter(sim.port)
    port = free_port()
    conf = service_config(sim, port).replace(f"upstream = 127.0.0.1:{sim.port}",
                                             f"upstream = 127.0.0.1:{cutter.port}")
    d = start_daemon(conf)
    wait_listening(port)
    yield Relay(d, sim, port), cutter
    cutter.close()


def test_idempotent_request_is_retried_on_a_new_connection(cut_relay):
    relay, cutter = cut_relay
    with relay.session() as s:
        assert s.get(relay.url + "/echo?n=1", timeout=30).status_code == 200
        cutter.arm()
        r = s.get(relay.url + "/echo?n=2", timeout=30)
    assert r.status_code == 200
    assert r.json()["path"] == "/echo?n=2"
    assert cutter.cut == 1
    assert [a["path"] for a in relay.app_requests()] == ["/echo?n=1", "/echo?n=2"]
    assert "event=request_retry" in relay.daemon.log()
    # The new connection met the same, still attested, key: no second attestation.
    assert relay.sim.stats()["evidence_requests"] == 1


def test_idempotent_request_with_body_retried_only_if_no_body_byte_went_out(cut_relay):
    """PUT is idempotent. Cut at its first bytes, it is replayed only when those bytes were the
    head alone (the body had not arrived yet); when the head and body left together, it is not.
    Which of the two happens depends on how the client's writes were read, so both are valid;
    the enclave never sees the request twice either way."""
    relay, cutter = cut_relay
    with relay.session() as s:
        assert s.get(relay.url + "/echo?n=1", timeout=30).status_code == 200
        cutter.arm()
        r = s.put(relay.url + "/echo?n=2", data=b"x" * 1000, timeout=30)
    retried = "event=request_retry" in relay.daemon.log()
    if retried:
        assert r.status_code == 200 and r.json()["body_bytes"] == 1000
    else:
        assert r.status_code == 502
    assert [a["path"] for a in relay.app_requests()].count("/echo?n=2") == (1 if retried else 0)


def test_request_whose_body_bytes_were_sent_is_not_replayed(cut_relay):
    relay, cutter = cut_relay
    body = b"y" * (256 << 10)
    with relay.session() as s:
        assert s.get(relay.url + "/echo?n=1", timeout=30).status_code == 200
        # The head and the start of the body reach the enclave, then the connection dies.
        cutter.arm(allow=4000)
        r = s.put(relay.url + "/echo?n=2", data=body, timeout=30)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unreachable"
    assert cutter.cut == 1
    paths = [a["path"] for a in relay.app_requests()]
    assert paths.count("/echo?n=2") <= 1
    assert "event=request_retry" not in relay.daemon.log()


def test_non_idempotent_request_is_not_retried(cut_relay):
    relay, cutter = cut_relay
    with relay.session() as s:
        assert s.get(relay.url + "/echo?n=1", timeout=30).status_code == 200
        cutter.arm()
        r = s.post(relay.url + "/echo?n=2", timeout=30)
    assert r.status_code == 502
    assert [a["path"] for a in relay.app_requests()] == ["/echo?n=1"]


def test_not_retried_once_the_response_began(relay):
    """The enclave sends a head promising 100 bytes, then closes. The client must see that head
    and a body cut short (never a retried, complete answer); read over a plain socket so that
    no client library's exception can stand in for the check."""
    with relay.session() as s:
        assert s.get(relay.url + "/echo?n=1", timeout=30).status_code == 200
    relay.sim.misbehave("close_after_headers")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as c:
        c.sendall(b"GET /echo?n=2 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        got = b""
        while True:  # until the daemon closes (Connection: close; the timeout bounds it)
            data = c.recv(65536)
            if not data:
                break
            got += data
    head, sep, body = got.partition(b"\r\n\r\n")
    assert sep, got
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK", got
    assert "content-length: 100" in [h.lower() for h in lines[1:]], got
    assert len(body) < 100, got  # cut short: the response head promised 100 bytes
    assert [a["path"] for a in relay.app_requests()] == ["/echo?n=1", "/echo?n=2"]
    assert "event=request_retry" not in relay.daemon.log()
