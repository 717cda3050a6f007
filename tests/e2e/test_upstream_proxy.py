"""The enclave reached through an HTTP forward proxy (issue #24, docs/security.md "Upstream
proxy"): a real tinyproxy on loopback, started by the tests, with and without Basic
authentication, and small proxies written here for what tinyproxy will not do — one that
terminates TLS with its own key (a TLS-inspecting proxy), one that sends bytes after its 2xx
head, one that never answers.

What must hold: the TLS session and the attested key are end to end (the proxy only carries
bytes), a TLS-inspecting proxy is refused by the binding check with a message that names it and
no application request reaches the enclave through it, the proxy's refusals are 502
upstream_proxy_refused with its status, an unreachable or slow proxy is upstream_unreachable
naming the hop, tunnels are pooled (one CONNECT for many requests) and a policy change cuts
tunnelled connections like direct ones. Every network call is to 127.0.0.1."""
import asyncio
import datetime
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import free_port
from proxy_fixtures import Relay, on_demand, wait_listening, wait_until
from simulator import service_config
from test_enforcement import SseStream, wrong_policy

MITM_HINT = ("the key the enclave attested is not the key of this TLS connection: a "
             "TLS-inspecting proxy between here and the enclave?")
# A TLS alert record (fatal, handshake_failure): bytes that are TLS, not HTTP.
TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"


# ---- A real forward proxy ------------------------------------------------------------------

class Tinyproxy:
    """Debian's tinyproxy in the foreground, on 127.0.0.1, allowing CONNECT to one port."""

    def __init__(self, tmp_path, connect_port, auth=None, name="tinyproxy"):
        self.port = free_port()
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 60", "LogLevel Info",
                 "MaxClients 100", "Allow 127.0.0.1", f"ConnectPort {connect_port}"]
        if auth:
            lines.append(f"BasicAuth {auth[0]} {auth[1]}")
        conf = tmp_path / f"{name}.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.log_path = tmp_path / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wait_listening(self.port)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def connects(self):
        """The CONNECT requests tinyproxy received."""
        return re.findall(r"Request \(file descriptor \d+\): CONNECT (\S+)", self.log())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_tinyproxy(tmp_path):
    if shutil.which("tinyproxy") is None:
        pytest.skip("tinyproxy is not installed (scripts/lib/deps.sh installs tinyproxy-bin)")
    started = []

    def _start(connect_port, auth=None):
        t = Tinyproxy(tmp_path, connect_port, auth, name=f"tinyproxy{len(started)}")
        started.append(t)
        return t

    yield _start
    for t in started:
        t.stop()


# ---- Proxies written for the tests -------------------------------------------------------------

def self_signed(tmp_path):
    """A key and certificate of the test proxy's own (what a TLS-inspecting proxy presents)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inspecting-proxy.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_path, cert_path = tmp_path / "mitm.key", tmp_path / "mitm.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


class TestProxy:
    """A CONNECT proxy on 127.0.0.1, in its own thread and event loop. Modes:
    - "mitm": answers 200, terminates TLS with its own key, opens its own TLS to the target and
      relays the plaintext (a TLS-inspecting proxy);
    - "early": answers 200 with a TLS alert record in the same write, then relays bytes;
    - "silent": reads the CONNECT and never answers."""

    __test__ = False  # not a pytest test class

    def __init__(self, mode, target_port, tmp_path):
        import ssl
        self.mode, self.target_port = mode, target_port
        self.connects = 0
        if mode == "mitm":
            cert, key = self_signed(tmp_path)
            self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.server_ctx.load_cert_chain(cert, key)
            self.client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.client_ctx.check_hostname = False
            self.client_ctx.verify_mode = ssl.CERT_NONE
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10), "the test proxy did not start"

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        self.connects += 1
        if self.mode == "silent":
            await reader.read()  # until the daemon gives up
            writer.close()
            return
        hello = b"HTTP/1.1 200 Connection established\r\n\r\n"
        writer.write(hello + (TLS_ALERT if self.mode == "early" else b""))
        await writer.drain()
        try:
            if self.mode == "mitm":
                await writer.start_tls(self.server_ctx)
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port,
                                                           ssl=self.client_ctx)
            else:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except (ConnectionError, OSError):
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    def stop(self):
        async def _shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def start_test_proxy(tmp_path):
    started = []

    def _start(mode, target_port):
        p = TestProxy(mode, target_port, tmp_path)
        started.append(p)
        return p

    yield _start
    for p in started:
        p.stop()


# ---- Helpers -------------------------------------------------------------------------------

def proxied(proxy_port, extra=""):
    return f"upstream_proxy = http://127.0.0.1:{proxy_port}\n" + extra


def metric(admin, series):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search("^" + re.escape(series) + r" (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def expect_error(r, status, code, *needles):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    for n in needles:
        assert n in err["message"], err
    return err


# ---- Through tinyproxy -----------------------------------------------------------------------

def test_tunnel_relays_with_the_pin_end_to_end(start_sim, start_relay, start_tinyproxy):
    sim = start_sim()
    tp = start_tinyproxy(sim.port)
    admin = free_port()
    relay = start_relay(extra_service=proxied(tp.port), sim=sim,
                        extra_daemon=f"admin_listen = 127.0.0.1:{admin}\n")
    r = relay.post("/echo", data=b"through the tunnel")
    assert r.status_code == 200, r.text
    assert r.json()["body_bytes"] == len(b"through the tunnel")
    # The enclave saw the request, over TLS whose key was attested over that same connection.
    assert len(relay.app_requests()) == 1
    assert tp.connects() == [f"127.0.0.1:{sim.port}"]
    log = relay.daemon.log()
    assert f"to=proxying proxy=127.0.0.1:{tp.port}" in log
    assert f"from=proxying to=handshaking proxy=127.0.0.1:{tp.port}" in log
    assert "verdict=verified" in log
    assert metric(admin, 'attestproxy_upstream_proxy_connects_total{service="demo",result="ok"}') == 1


def test_pooled_tunnel_carries_sequential_requests_with_one_connect(start_sim, start_relay,
                                                                     start_tinyproxy):
    sim = start_sim()
    tp = start_tinyproxy(sim.port)
    relay = start_relay(extra_service=proxied(tp.port), sim=sim)
    with relay.session() as s:
        for i in range(10):
            r = s.get(f"{relay.url}/echo?i={i}", timeout=30)
            assert r.status_code == 200, r.text
    for i in range(5):  # new client connections: the upstream side stays pooled
        assert relay.get(f"/echo?c={i}").status_code == 200
    assert len(tp.connects()) == 1, tp.connects()
    assert sim.stats()["connections"] == 1
    assert sim.stats()["evidence_requests"] == 1
    assert relay.daemon.log().count("reused=yes") >= 14


@pytest.mark.parametrize("creds", ["right", "wrong", "none"])
def test_proxy_authentication(start_sim, start_relay, start_tinyproxy, tmp_path, creds):
    sim = start_sim()
    tp = start_tinyproxy(sim.port, auth=("attest", "c0rrect-h0rse"))
    extra = ""
    if creds != "none":
        cred = tmp_path / "proxy.cred"
        cred.write_text("attest:" + ("c0rrect-h0rse" if creds == "right" else "wr0ng-h0rse") + "\n")
        extra = f"upstream_proxy_credentials = {cred}\n"
    relay = on_demand(start_relay)(extra_service=proxied(tp.port, extra), sim=sim)
    r = relay.get("/echo")
    if creds == "right":
        assert r.status_code == 200, r.text
        assert len(relay.app_requests()) == 1
    else:
        # tinyproxy 1.11 answers a request without credentials with 407 and one with wrong
        # credentials with 401 (RFC 9110 would have 407 for both): either way the message
        # carries the proxy's status and reason phrase.
        want = ("HTTP 401 Unauthorized" if creds == "wrong"
                else "HTTP 407 Proxy Authentication Required")
        expect_error(r, 502, "upstream_proxy_refused", want,
                     f"the upstream proxy 127.0.0.1:{tp.port} refused CONNECT 127.0.0.1:{sim.port}")
        assert sim.stats()["connections"] == 0
    log = relay.daemon.log()
    # The credentials are never logged, in clear or encoded.
    assert "h0rse" not in log
    assert "YXR0ZXN0" not in log  # base64 of "attest"


def test_proxy_refuses_the_port(start_sim, start_relay, start_tinyproxy):
    sim = start_sim()
    tp = start_tinyproxy(sim.port + 1 if sim.port < 65535 else sim.port - 1)
    relay = on_demand(start_relay)(extra_service=proxied(tp.port), sim=sim)
    expect_error(relay.get("/echo"), 502, "upstream_proxy_refused", "HTTP 403",
                 f"refused CONNECT 127.0.0.1:{sim.port}")
    assert sim.stats()["connections"] == 0


def test_policy_change_cuts_tunnelled_connections(start_sim, start_relay, start_tinyproxy):
    sim = start_sim()
    tp = start_tinyproxy(sim.port)
    relay = on_demand(start_relay)(extra_service=proxied(tp.port, "negative_cache = 0s\n"),
                                   sim=sim)
    assert relay.get("/echo").status_code == 200  # one idle tunnel in the pool
    conf = relay.daemon.conf_path
    good = conf.read_text()
    stream = SseStream(relay, events=100, interval_ms=100)
    stream.wait_events(3)
    conf.write_text(wrong_policy(good))
    t_signal = time.monotonic()
    relay.daemon.signal(signal.SIGHUP)
    stream.join()
    assert stream.ended_at - t_signal < 1.0
    assert len(stream.events) < 100
    log = relay.daemon.wait_log("event=policy_enforced")
    assert "exchanges_aborted=1" in log
    relayed = len(relay.app_requests())
    expect_error(relay.get("/echo"), 502, "attestation_failed", "pcrs match no measurement set")
    assert len(relay.app_requests()) == relayed


# ---- Through the proxies written here ------------------------------------------------------------

def test_tls_inspecting_proxy_is_refused_by_the_binding(start_sim, start_relay, start_test_proxy):
    """The proxy answers 200, presents its own key and relays plaintext to the enclave: the
    evidence it fetches is the enclave's, bound to the enclave's key, not to the key of the
    daemon's TLS connection. The binding check refuses it, the message names the likely cause,
    and no application request reaches the enclave."""
    sim = start_sim()
    mitm = start_test_proxy("mitm", sim.port)
    relay = on_demand(start_relay)(extra_service=proxied(mitm.port), sim=sim)
    expect_error(relay.post("/echo", data=b"must not reach the enclave"), 502,
                 "attestation_failed", "binding:", MITM_HINT)
    # Then the proxy's key is negative-cached: the next tunnel's handshake shows that key and
    # the gate refuses it without an attestation.
    expect_error(relay.get("/echo"), 503, "attestation_unavailable")
    log = relay.daemon.log()
    assert log.count("event=attestation ") == 1
    assert "verdict=rejected" in log and MITM_HINT in log
    assert mitm.connects == 2
    # The evidence exchange went through the proxy to the enclave; no application byte did.
    assert len(relay.evidence_requests()) == 1
    assert relay.app_requests() == []


def test_bytes_after_the_2xx_head_go_to_tls(start_sim, start_relay, start_test_proxy):
    """The proxy's 200 and a TLS alert arrive in one read: the alert is the tunnel's first
    byte, so the handshake fails on it. Were those bytes dropped, the handshake would go on
    through the relaying proxy and the request would succeed."""
    sim = start_sim()
    early = start_test_proxy("early", sim.port)
    relay = on_demand(start_relay)(extra_service=proxied(early.port), sim=sim)
    expect_error(relay.get("/echo"), 502, "upstream_unreachable", "TLS handshake", "alert")
    assert relay.app_requests() == []


def test_unreachable_proxy_names_the_hop(start_sim, start_relay):
    sim = start_sim()
    dead = free_port()
    relay = on_demand(start_relay)(extra_service=proxied(dead), sim=sim)
    expect_error(relay.get("/echo"), 502, "upstream_unreachable",
                 f"cannot connect to the upstream proxy 127.0.0.1:{dead}")
    assert sim.stats()["connections"] == 0


def test_slow_proxy_times_out_naming_the_hop(start_sim, start_relay, start_test_proxy):
    sim = start_sim()
    silent = start_test_proxy("silent", sim.port)
    admin = free_port()
    relay = on_demand(start_relay)(
        extra_service=proxied(silent.port, "upstream_proxy_timeout = 500ms\n"), sim=sim,
        extra_daemon=f"admin_listen = 127.0.0.1:{admin}\n")
    t0 = time.monotonic()
    expect_error(relay.get("/echo"), 502, "upstream_unreachable",
                 "upstream_proxy_timeout (500 ms)", f"upstream proxy 127.0.0.1:{silent.port}")
    assert 0.4 < time.monotonic() - t0 < 5
    assert silent.connects == 1
    assert metric(admin,
                  'attestproxy_upstream_proxy_connects_total{service="demo",result="timeout"}') == 1


# ---- Configuration -------------------------------------------------------------------------------

def test_https_proxy_is_refused_in_config(run_cli, tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("[service demo]\nlisten = 127.0.0.1:1\nupstream = 127.0.0.1:2\n"
                    f"measurement = pcr0={'00' * 48}\nupstream_proxy = https://127.0.0.1:3128\n")
    r = run_cli("check-config", "-c", conf)
    assert r.returncode != 0
    assert b"https:// (TLS to the proxy) is not supported" in r.stderr + r.stdout


def test_proxy_environment_variables_are_ignored(start_sim, start_daemon):
    """HTTP(S)_PROXY are not read: a service without upstream_proxy connects directly even
    when they name a proxy that does not exist."""
    sim = start_sim()
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"
    d = start_daemon(service_config(sim, port, "warm_attestation = no\n"),
                     env={"HTTPS_PROXY": dead, "https_proxy": dead, "HTTP_PROXY": dead,
                          "http_proxy": dead, "ALL_PROXY": dead})
    wait_listening(port)
    relay = Relay(d, sim, port)
    assert relay.get("/echo").status_code == 200
    assert "proxying" not in d.log()
