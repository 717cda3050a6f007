"""attestproxy-enclave, the companion that runs inside the enclave (docs/enclave.md), end to end:

    client ─► attestproxy (native profile, root_ca = a tests/sim/chain.py root)
           ─► attestproxy-enclave (TLS key made at start, test NSM backend or the fake device)
           ─► a small HTTP application on loopback (this file)

The companion's documents are signed by the same test chain the Python simulator uses, so the
daemon verifies them exactly as it verifies the simulator's. The real /dev/nsm code path runs
against tests/enclave/fake_nsm.c (LD_PRELOAD). vsock is tested over the kernel's vsock loopback
when it has one; otherwise that test is skipped and says why.
"""
import hashlib
import json
import os
import pathlib
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import BIN, ROOT, Daemon, free_port

sys.path.insert(0, str(ROOT / "tests" / "sim"))
import chain as sim_chain  # noqa: E402

BUILD = pathlib.Path(os.environ.get("ATTESTPROXY_BUILD", ROOT / "build"))
COMPANION = BUILD / "daemon" / "enclave" / "attestproxy-enclave"
FAKE_NSM = BUILD / "tests" / "enclave" / "libfake_nsm.so"
# The test backend's PCRs are the simulator's defaults: SHA-384("attestproxy-sim-pcrN").
PCRS = {i: hashlib.sha384(f"attestproxy-sim-pcr{i}".encode()).hexdigest() for i in (0, 1, 2)}
NONCE_RE = re.compile(r"nonce=([0-9a-f]{64})")

pytestmark = pytest.mark.skipif(not COMPANION.exists(), reason=f"{COMPANION} is not built")


# ---- The application inside the enclave ----------------------------------------------------

class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests_seen = []

    def log_message(self, *a):
        pass

    def _json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self, slow=False):
        """Reads the body as it streams (Content-Length or chunked) and hashes it; `slow` reads
        32 KiB every 2 ms, so that what the companion sends it keeps piling up."""
        h, n = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data = self.rfile.read(size)
                h.update(data)
                n += len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left > 0:
                if slow:
                    time.sleep(0.002)
                data = self.rfile.read(min(left, 32768 if slow else 65536))
                if not data:
                    break
                h.update(data)
                n += len(data)
                left -= len(data)
        return n, h.hexdigest()

    def do_GET(self):
        App.requests_seen.append((self.command, self.path))
        if self.path.startswith("/slow"):
            time.sleep(3)
            return self._json({"slow": True})
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(5):
                piece = f"piece {i}\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
            return
        self._json({"path": self.path, "host": self.headers.get("Host")})

    def do_POST(self):
        App.requests_seen.append((self.command, self.path))
        n, digest = self._body(slow=self.path.startswith("/slow-reader"))
        self._json({"bytes": n, "sha256": digest})


@pytest.fixture
def app():
    App.requests_seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    sim_chain.Chain.create().save(d)
    return d


# ---- The companion ---------------------------------------------------------------------------

class Companion(Daemon):
    """A running attestproxy-enclave; log(), wait_log() and stop() are the daemon's."""

    def __init__(self, tmp_path, name, conf, env=None):
        self.conf_path = tmp_path / f"{name}.conf"
        self.conf_path.write_text(conf)
        self.log_path = tmp_path / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(COMPANION), "-c", str(self.conf_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))

    def pin(self):
        return re.search(r"event=tls_key curve=\S+ pin=([0-9a-f]{64})", self.log()).group(1)

    def stop(self):
        super().stop()
        return self.proc.returncode


def preload_env(chain_dir, **extra):
    """The environment that puts the fake /dev/nsm under the companion. In a sanitizer build
    the shim is preloaded before the ASan runtime, which ASan must be told to accept."""
    env = {"LD_PRELOAD": str(FAKE_NSM), "FAKE_NSM_CHAIN": str(chain_dir), **extra}
    asan = os.environ.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    return env


def companion_conf(port, app_port, nsm, extra=""):
    return (f"[enclave]\nlog_level = debug\nlisten = 127.0.0.1:{port}\n"
            f"app = 127.0.0.1:{app_port}\nnsm = {nsm}\n" + extra)


@pytest.fixture
def start_companion(tmp_path, chain_dir, app):
    started = []

    def _start(nsm=None, extra="", port=None, env=None, wait=True, app_port=None):
        port = port or free_port()
        c = Companion(tmp_path, f"companion-{len(started)}",
                      companion_conf(port, app_port or app.server_address[1],
                                     nsm or f"test:{chain_dir}", extra), env)
        c.port = port
        started.append(c)
        if wait:
            c.wait_log("event=started")
        return c

    yield _start
    for c in started:
        c.stop()


def daemon_conf(chain_dir, port, upstream_port, pcrs=PCRS, extra="", profile="native"):
    meas = "\n    ".join(f"pcr{i}={v}" for i, v in sorted(pcrs.items()))
    return (f"[daemon]\nlog_level = debug\nroot_ca = {chain_dir}/root.pem\n\n"
            f"[service demo]\nlisten = 127.0.0.1:{port}\nupstream = 127.0.0.1:{upstream_port}\n"
            f"profile = {profile}\nwarm_attestation = no\nmeasurement = {meas}\n" + extra)


def session():
    s = requests.Session()
    s.trust_env = False
    return s


@pytest.fixture
def chain(start_daemon, start_companion, chain_dir):
    """(daemon URL, companion, daemon) for the whole chain with the test backend."""

    def _make(companion=None, pcrs=PCRS, extra_daemon="", profile="native"):
        comp = companion or start_companion()
        port = free_port()
        d = start_daemon(daemon_conf(chain_dir, port, comp.port, pcrs, extra_daemon, profile))
        return f"http://127.0.0.1:{port}", comp, d

    return _make


def tls_exchange(port, raw, sock=None):
    """Sends `raw` over TLS straight to the companion and reads to the close; returns (bytes,
    the server's certificate DER, the session)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw_sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw_sock) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks), s.getpeercert(binary_form=True), s.session


def tls_get(port, path, sock=None):
    """One GET: (status, headers, body, certificate DER, session)."""
    data, cert, sess = tls_exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: enclave\r\nConnection: close\r\n\r\n".encode(), sock)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
    return int(lines[0].split()[1]), headers, body, cert, sess


def spki_sha256(cert_der):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_der_x509_certificate(cert_der)
    return hashlib.sha256(cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()


# ---- Through the whole chain --------------------------------------------------------------------

def test_get_and_streamed_post_through_the_chain(chain, app):
    url, comp, daemon = chain()
    with session() as s:
        r = s.get(url + "/hello?x=1", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "/hello?x=1"

        # A 6 MiB upload sent chunked, piece by piece: it streams through both proxies.
        pieces = [bytes([i % 251]) * 65536 for i in range(96)]
        r = s.post(url + "/upload", data=iter(pieces), timeout=60)
        assert r.status_code == 200, r.text
        want = hashlib.sha256(b"".join(pieces)).hexdigest()
        assert r.json() == {"bytes": 96 * 65536, "sha256": want}

        # With Content-Length too.
        body = os.urandom(300000)
        r = s.post(url + "/upload", data=body, timeout=60)
        assert r.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}

        # A chunked response arrives piece by piece.
        r = s.get(url + "/stream", timeout=30)
        assert r.text == "".join(f"piece {i}\n" for i in range(5))
    # One attestation for the one key, verified by the daemon, bound to the companion's key.
    log = daemon.log()
    assert log.count("verdict=verified") == 1, log
    assert f"pin={comp.pin()[:16]}" in log
    assert comp.log().count("event=evidence") == 1
    assert [p for _, p in App.requests_seen] == ["/hello?x=1", "/upload", "/upload", "/stream"]


def test_wrong_pcr_policy_is_refused(chain, app):
    wrong = dict(PCRS)
    wrong[0] = "00" * 47 + "01"
    url, comp, daemon = chain(pcrs=wrong)
    with session() as s:
        r = s.get(url + "/hello", timeout=30)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "attestation_failed"
    assert "pcr" in r.json()["error"]["message"]
    assert App.requests_seen == []  # nothing reached the application


def test_new_key_at_every_start_is_attested_again(chain, start_companion, app):
    first = start_companion()
    url, _, daemon = chain(companion=first)
    with session() as s:
        assert s.get(url + "/hello", timeout=30).status_code == 200
    pin1 = first.pin()
    assert first.stop() == 0
    second = start_companion(port=first.port)
    pin2 = second.pin()
    assert pin1 != pin2
    with session() as s:
        r = s.get(url + "/hello", timeout=30)
    assert r.status_code == 200, r.text
    log = daemon.log()
    assert f"pin={pin1[:16]}" in log and f"pin={pin2[:16]}" in log
    assert log.count("verdict=verified") == 2, log
    # Each attestation carried its own nonce (the companion logs the first 8 bytes).
    n1 = re.findall(r"event=evidence backend=test nonce_prefix=(\w+)", first.log())
    n2 = re.findall(r"event=evidence backend=test nonce_prefix=(\w+)", second.log())
    assert len(n1) == 1 and len(n2) == 1 and n1 != n2


def test_attest_cli_accepts_the_companion(start_companion, chain_dir, tmp_path):
    """The daemon's one-shot `attestproxy attest` (the native profile's reference client)."""
    comp = start_companion()
    conf = tmp_path / "attest.conf"
    conf.write_text(daemon_conf(chain_dir, free_port(), comp.port))
    r = subprocess.run([BIN, "attest", "-c", str(conf), "demo"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["pin"] == "sha256:" + comp.pin()


def test_session_bound_evidence_through_the_chain(chain, app):
    """native-session: the companion derives the document's nonce from the client's nonce and
    the TLS session, and the daemon accepts exactly that."""
    url, comp, daemon = chain(profile="native-session")
    with session() as s:
        r = s.get(url + "/hello", timeout=30)
    assert r.status_code == 200, r.text
    log = daemon.log()
    assert log.count("verdict=verified") == 1, log
    assert 'freshness="nonce, bound to the TLS session"' in log
    assert "session_bound=yes" in comp.log()
    # The plain native profile still works against the same companion.
    url2, _, daemon2 = chain(companion=comp)
    with session() as s:
        assert s.get(url2 + "/hello", timeout=30).status_code == 200
    assert "session_bound=no" in comp.log()


def test_session_bound_evidence_attests_every_connection(chain, app):
    """With native-session a key attested over one connection does not admit another: each new
    TLS connection is attested over itself before its first request (a relay holding the key
    could otherwise let the first connection reach the enclave and take the next ones). With
    native, the second connection rides on the pin."""
    for profile, want in (("native-session", 2), ("native", 1)):
        url, comp, daemon = chain(profile=profile)
        results = []

        def slow():
            with session() as s:
                results.append(s.get(url + "/slow", timeout=30).status_code)

        with session() as s:
            assert s.get(url + "/hello", timeout=30).status_code == 200
        threads = [threading.Thread(target=slow) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [200, 200]
        # Two upstream connections (the first, pooled, carries one of the slow requests; the
        # other slow request opens a second): with native-session one evidence request each.
        assert comp.log().count("event=evidence") == want, (profile, comp.log())
        assert daemon.log().count("verdict=verified") == want


def test_session_binding_matches_an_independent_derivation(start_companion):
    """The document's user_data is SHA-256(SPKI DER || TLS exporter), the exporter taken by
    `openssl s_client` on its side of the same connection and the SPKI from the certificate it
    received; the nonce is the client's, as sent (evidence-protocol.md §12)."""
    import cbor2
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    comp = start_companion()
    nonce = os.urandom(32)
    req = (f"GET /.well-known/nitro-attestation?session_nonce={nonce.hex()} HTTP/1.1\r\n"
           "Host: enclave\r\nConnection: close\r\n\r\n").encode()
    for version in ("-tls1_3", "-tls1_2"):
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{comp.port}", version,
                            "-keymatexport", "EXPORTER-nitro-attestation-session",
                            "-keymatexportlen", "32", "-ign_eof"],
                           input=req, capture_output=True, timeout=30)
        out = r.stdout
        m = re.search(rb"Keying material: ([0-9A-Fa-f]{64})", out)
        assert m, out[:2000]
        exported = bytes.fromhex(m.group(1).decode())
        pem = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
        spki = x509.load_pem_x509_certificate(pem.group(0)).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        head, _, body = out[out.index(b"HTTP/1.1 "):].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        payload = cbor2.loads(cbor2.loads(body[:length])[2])
        assert payload["user_data"] == hashlib.sha256(spki + exported).digest(), version
        assert payload["user_data"] != hashlib.sha256(spki).digest()
        assert payload["nonce"] == nonce


def test_session_bound_evidence_needs_the_extended_master_secret(start_companion, tmp_path):
    """On TLS 1.2 without the extended master secret two sessions can share a master secret
    (a relay can make them), so the exporter binds nothing: 400, no document."""
    comp = start_companion()
    req = (f"GET /.well-known/nitro-attestation?session_nonce={'ab' * 32} HTTP/1.1\r\n"
           "Host: enclave\r\nConnection: close\r\n\r\n").encode()
    # OpenSSL 3.0's s_client has no -no_ems: the option comes from a configuration file.
    conf = tmp_path / "no-ems.cnf"
    conf.write_text("openssl_conf = c\n[c]\nssl_conf = s\n[s]\nsystem_default = d\n"
                    "[d]\nOptions = -ExtendedMasterSecret\n")
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{comp.port}", "-tls1_2",
                        "-ign_eof"], input=req, capture_output=True, timeout=30,
                       env=dict(os.environ, OPENSSL_CONF=str(conf)))
    assert b"Extended master secret: no" in r.stdout, r.stdout[:3000]
    out = r.stdout[r.stdout.index(b"HTTP/1.1 "):]
    assert out.startswith(b"HTTP/1.1 400 "), out[:300]
    assert b"extended master secret" in out
    assert "event=evidence" not in comp.log()


# ---- The companion on its own -----------------------------------------------------------------

def test_evidence_endpoint_binds_the_connection_key(start_companion, chain_dir, tmp_path):
    comp = start_companion()
    nonce = os.urandom(32).hex()
    status, headers, body, cert, sess = tls_get(comp.port,
                                                f"/.well-known/nitro-attestation?nonce={nonce}")
    assert status == 200
    assert headers["content-type"] == "application/cbor"
    assert int(headers["content-length"]) == len(body)
    assert body[:2] == b"\x84\x44"
    assert spki_sha256(cert) == comp.pin()
    # No session ticket is issued: resumption would skip the attested key.
    assert sess is None or not sess.has_ticket
    (tmp_path / "doc.cbor").write_bytes(body)
    (tmp_path / "peer.der").write_bytes(cert)
    pcr_args = [a for i, v in PCRS.items() for a in ("--pcr", f"{i}={v}")]
    r = subprocess.run([BIN, "verify", "--root", f"{chain_dir}/root.pem", "--nonce", nonce,
                        "--binding", "spki_sha256", "--peer-cert", str(tmp_path / "peer.der"),
                        *pcr_args, str(tmp_path / "doc.cbor")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # A second request gets a new document (new nonce, new signature): nothing is cached.
    nonce2 = os.urandom(32).hex()
    body2 = tls_get(comp.port, f"/.well-known/nitro-attestation?nonce={nonce2}")[2]
    assert bytes.fromhex(nonce2) in body2 and bytes.fromhex(nonce) not in body2


@pytest.mark.parametrize("query", ["", "?nonce=", "?nonce=" + "AB" * 32, "?nonce=" + "ab" * 31,
                                   "?nonce=" + "ab" * 32 + "&x=1", "?x=1"])
def test_malformed_nonce_is_400(start_companion, app, query):
    comp = start_companion()
    status, headers, body, _, _ = tls_get(comp.port, "/.well-known/nitro-attestation" + query)
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert "evidence" not in comp.log().split("event=started", 1)[1].replace("kind=evidence", "")
    assert App.requests_seen == []


def test_app_errors_have_the_daemons_json_shape(start_companion, app):
    dead = start_companion(app_port=free_port())
    status, _, body, _, _ = tls_get(dead.port, "/hello")
    assert status == 502
    assert json.loads(body)["error"]["code"] == "upstream_unreachable"

    slow = start_companion(extra="response_timeout = 1s\n")
    status, _, body, _, _ = tls_get(slow.port, "/slow")
    assert status == 504
    assert json.loads(body)["error"]["code"] == "upstream_timeout"


def test_limits(start_companion, app):
    comp = start_companion(extra="max_body_size = 1k\nmax_header_bytes = 2k\n")

    def exchange(raw):
        return tls_exchange(comp.port, raw)[0]

    r = exchange(b"POST /upload HTTP/1.1\r\nHost: e\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048)
    assert r.startswith(b"HTTP/1.1 413 ")
    assert b'"payload_too_large"' in r
    r = exchange(b"GET / HTTP/1.1\r\nHost: e\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 431 ")
    r = exchange(b"GET / HTTP/1.1\nHost: e\n\n")
    assert r.startswith(b"HTTP/1.1 400 ")
    assert [p for _, p in App.requests_seen] == []
    # A chunked body has no declared size: its head goes on, and the body is cut (and the
    # client answered 413) once it passes the limit; the application never gets all of it.
    r = exchange(b"POST /upload HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 413 ")


def test_a_body_that_stops_arriving_is_the_clients_timeout(start_companion, app):
    """stream_idle_timeout while the client's body is incomplete closes the connection without
    an answer (as the daemon does); a 504 blaming the application would be wrong."""
    comp = start_companion(extra="stream_idle_timeout = 1s\nresponse_timeout = 10s\n")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t0 = time.monotonic()
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", comp.port), timeout=10)) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: e\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
    assert data == b"", data[:200]
    assert 0.8 < time.monotonic() - t0 < 5
    comp.wait_log("event=client_timeout timeout=stream_idle_timeout")


def test_an_application_that_stops_reading_is_not_the_clients_timeout(start_companion):
    """The body stops because the application does not read it (the companion stops reading
    the client in turn): stream_idle_timeout is then the application's, answered 504, not a
    silent client_timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []

    def accept():
        while True:
            try:
                held.append(srv.accept()[0])  # accepted, never read
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    comp = start_companion(extra="stream_idle_timeout = 1s\nresponse_timeout = 10s\n",
                           app_port=srv.getsockname()[1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", comp.port), timeout=10))
    total = 64 * 1024 * 1024

    def send():
        try:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: e\r\nContent-Length: %d\r\n\r\n" % total)
            for _ in range(total // 65536):
                s.sendall(b"x" * 65536)
        except OSError:
            pass

    threading.Thread(target=send, daemon=True).start()
    try:
        comp.wait_log("status=504", timeout=10)
        assert "event=client_timeout" not in comp.log()
    finally:
        s.close()
        srv.close()
        for c in held:
            c.close()


def test_max_body_size_0_is_no_limit(start_companion, app):
    """As in the daemon, max_body_size = 0 lifts the limit (it used to refuse every body)."""
    comp = start_companion(extra="max_body_size = 0\n")
    body = b"x" * (256 * 1024)
    r = tls_exchange(comp.port, b"POST /upload HTTP/1.1\r\nHost: e\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n"
                     % len(body) + body)[0]
    assert r.startswith(b"HTTP/1.1 200 "), r[:200]
    r = tls_exchange(comp.port, b"POST /upload HTTP/1.1\r\nHost: e\r\nConnection: close\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n")[0]
    assert r.startswith(b"HTTP/1.1 200 "), r[:200]


# ---- The NSM device path, against the fake device ---------------------------------------------

def test_missing_nsm_device_refuses_to_start(start_companion):
    if os.path.exists("/dev/nsm"):
        pytest.skip("this machine has a /dev/nsm")
    comp = start_companion(nsm="/dev/nsm", wait=False)
    assert comp.proc.wait(timeout=10) == 1
    assert "event=nsm_unavailable" in comp.log() and "/dev/nsm" in comp.log()
    assert "event=started" not in comp.log()


def test_nsm_ioctl_path_through_the_fake_device(chain, start_companion, chain_dir, tmp_path):
    assert FAKE_NSM.exists(), f"{FAKE_NSM} is not built"
    nsm_log = tmp_path / "fake_nsm.log"
    comp = start_companion(nsm="/dev/nsm", env=preload_env(chain_dir, FAKE_NSM_LOG=str(nsm_log)))
    assert "nsm=device" in comp.log()
    url, _, daemon = chain(companion=comp)
    with session() as s:
        r = s.get(url + "/hello", timeout=30)
    assert r.status_code == 200, r.text + daemon.log() + comp.log()
    calls = nsm_log.read_text().splitlines()
    assert len(calls) == 1
    fields = dict(kv.split("=", 1) for kv in calls[0].split())
    assert fields["user_data"] == comp.pin()
    assert re.fullmatch("[0-9a-f]{64}", fields["nonce"])
    assert fields["public_key"] == "null"
    assert "verdict=verified" in daemon.log()


def test_nsm_errors_become_503(start_companion, chain_dir):
    for mode, why in (("error", "InternalError"), ("garbage", "not one CBOR item"),
                      ("emsgsize", "ioctl failed")):
        comp = start_companion(nsm="/dev/nsm", env=preload_env(chain_dir, FAKE_NSM_MODE=mode))
        status, headers, body, _, _ = tls_get(
            comp.port, "/.well-known/nitro-attestation?nonce=" + "00" * 32)
        assert status == 503, mode
        assert headers.get("retry-after") == "1"
        err = json.loads(body)["error"]
        assert err["code"] == "attestation_unavailable" and why in err["message"], (mode, err)


# ---- vsock ------------------------------------------------------------------------------------

def vsock_loopback():
    """None when this kernel can connect to its own vsock listener (CID 1), else why not."""
    if not hasattr(socket, "AF_VSOCK"):
        return "Python has no AF_VSOCK"
    try:
        srv = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    except OSError as e:
        return f"no AF_VSOCK sockets: {e}"
    with srv:
        try:
            srv.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
            srv.listen(1)
            port = srv.getsockname()[1]
            with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as c:
                c.settimeout(2)
                c.connect((1, port))
        except OSError as e:
            loaded = os.path.exists("/sys/module/vsock_loopback")
            return (f"no vsock loopback (connect to CID 1: {e}; vsock_loopback module "
                    f"{'loaded' if loaded else 'not loaded'})")
    return None


def test_vsock_listener_binds(start_companion):
    """The listening half runs everywhere AF_VSOCK exists (binding needs no peer)."""
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except (OSError, AttributeError) as e:
        pytest.skip(f"no AF_VSOCK here: {e}")
    port = 20000 + os.getpid() % 20000
    comp = start_companion(extra=f"vsock_port = {port}\n")
    assert f"event=listening transport=vsock cid=any port={port}" in comp.log()


def test_evidence_over_vsock_loopback(start_companion, app):
    why = vsock_loopback()
    if why is not None:
        pytest.skip(f"vsock untested here: {why}")
    port = 20000 + (os.getpid() + 7) % 20000
    comp = start_companion(extra=f"vsock_port = {port}\n")
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((1, port))
    nonce = os.urandom(32).hex()
    status, headers, body, cert, _ = tls_get(None, f"/.well-known/nitro-attestation?nonce={nonce}",
                                             sock=s)
    assert status == 200 and bytes.fromhex(nonce) in body
    assert spki_sha256(cert) == comp.pin()
    s2 = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s2.settimeout(10)
    s2.connect((1, port))
    status, _, body, _, _ = tls_get(None, "/hello", sock=s2)
    assert status == 200 and json.loads(body)["path"] == "/hello"


def test_test_pcr_sets_the_documents_measurements(chain, start_companion):
    """The measurement a daemon is configured with must be the one the documents carry."""
    other = "ab" * 48
    comp = start_companion(extra=f"test_pcr = 0={other}\n")
    url, _, daemon = chain(companion=comp, pcrs={0: other, 1: PCRS[1], 2: PCRS[2]})
    with session() as s:
        assert s.get(url + "/hello", timeout=30).status_code == 200
    assert "verdict=verified" in daemon.log()


def read_response(s):
    """One Content-Length response from a TLS socket: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk
        body += chunk
    return int(head.split()[1]), body


def test_keep_alive_after_a_body_that_filled_the_app_queue(start_companion, app):
    """A body that ends while more than the backpressure threshold waits for the application
    must not hold back the next request on the connection (it once stalled until idle_timeout)."""
    comp = start_companion()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    body = os.urandom(12 << 20)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", comp.port), timeout=10)) as s:
        s.sendall(b"POST /slow-reader HTTP/1.1\r\nHost: e\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        status, answer = read_response(s)
        assert status == 200
        assert json.loads(answer) == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        s.sendall(b"GET /after HTTP/1.1\r\nHost: e\r\n\r\n")
        status, answer = read_response(s)
        assert status == 200 and json.loads(answer)["path"] == "/after"
