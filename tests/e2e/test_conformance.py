"""HTTP/1.1 conformance and request smuggling as transcripts: exact bytes go in on a raw socket,
and the test checks the exact bytes that come back and what the enclave (the simulator)
received — or that nothing was relayed (BRIEF §6).

Three tables:
  REFUSED     requests answered by the proxy itself (400/431) before anything goes upstream
  BODY_ERRORS requests with a valid head and a malformed chunked body. Sent in one write (the
              whole request in hand), they are refused before any byte goes upstream; streamed
              (the head relayed before the bad bytes arrive), the exchange is cut and the
              enclave sees at most a truncated request
  FORWARDED   requests relayed; the enclave must receive exactly the expected head and body
  RESPONSES   raw upstream answers (simulator mode raw_response) and the exact client bytes

The single-case tables in test_bad_requests.py (CL+TE, differing duplicate Content-Length,
obs-fold, bare LF, absolute-form, CONNECT, ...) are not repeated here; these are their variants.
One daemon and one simulator serve the whole module (they are reset between cases).
"""
import json
import socket
import time

import pytest

from conftest import Daemon, free_port
from proxy_fixtures import Relay, open_clients, wait_listening, wait_open_clients
from simulator import Simulator, service_config

H = b"Host: localhost\r\n"
CLOSE = b"Connection: close\r\n"
HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"
TIMEOUT = 10


def start(tmp, extra_service="", extra_daemon="", log_level="debug", **popen):
    """A simulator and a daemon in front of it, with an admin listener (relay.admin); the
    caller stops both with stop(). Used by the module fixtures here and in test_abuse.py."""
    sim = Simulator(tmp / "chain", log_path=tmp / "sim.log")
    port, admin = free_port(), free_port()
    text = service_config(sim, port, extra_service,
                          f"admin_listen = 127.0.0.1:{admin}\n" + extra_daemon)
    conf = tmp / "attestproxy.conf"
    conf.write_text(text.replace("log_level = debug", f"log_level = {log_level}"))
    daemon = Daemon(conf, tmp / "daemon.log", **popen)
    relay = Relay(daemon, sim, port)
    relay.admin = admin
    try:
        daemon.wait_log("event=started")
        wait_listening(port)
    except BaseException:
        stop(relay)
        raise
    return relay


def stop(relay):
    relay.daemon.stop()
    relay.sim.stop()


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    r = start(tmp_path_factory.mktemp("conformance"), "first_byte_timeout = 5s\n")
    yield r
    stop(r)


@pytest.fixture
def fresh(relay):
    """The module's relay with a well-behaved simulator and an empty request log; afterwards
    the daemon must still be alive and serve the next client, whatever the case did."""
    relay.sim.misbehave(None)
    relay.sim.reset()
    yield relay
    assert relay.daemon.proc.poll() is None, "the daemon died"
    relay.sim.misbehave(None)
    assert relay.get("/echo?after=1").status_code == 200


# ---- Raw socket helpers ------------------------------------------------------------------------

def transcript(port, data, timeout=TIMEOUT):
    """Sends `data` in one write and returns every byte received until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_to_close(s, timeout)


def read_to_close(s, timeout=TIMEOUT):
    """Every byte received until the server closes (FIN or reset)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"the connection stayed open; received {out[:300]!r}")


def read_one(s, timeout=TIMEOUT):
    """Reads exactly one response with a Content-Length (or none) from a keep-alive socket."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(body) >= length:
                assert len(body) == length, "bytes beyond the response"
                return data
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"closed within a response: {data[:300]!r}")
        data += chunk
    raise AssertionError(f"no complete response: {data[:300]!r}")


def split_responses(data, head_requests=()):
    """Splits a byte stream of HTTP/1.1 responses into raw responses (Content-Length, chunked
    or close-delimited bodies; responses to HEAD, 1xx, 204 and 304 have none)."""
    out, i, n = [], 0, 0
    while i < len(data):
        end = data.index(b"\r\n\r\n", i) + 4
        head = data[i:end].decode("latin-1").lower()
        status = int(head.split(" ", 2)[1])
        fields = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if n in head_requests or status < 200 or status in (204, 304):
            body_end = end
        elif "content-length" in fields:
            body_end = end + int(fields["content-length"])
        elif fields.get("transfer-encoding") == "chunked":
            body_end = end
            while True:
                line_end = data.index(b"\r\n", body_end)
                size = int(data[body_end:line_end], 16)
                body_end = line_end + 2 + size + 2
                if size == 0:
                    break
        else:
            body_end = len(data)
        out.append(data[i:body_end])
        i, n = body_end, n + 1
    return out


def error_response(status, reason, code, raw, close=True, extra=""):
    """Checks that `raw` is exactly one proxy error response with this status and code (the
    message text is the proxy's to word; `extra` are header lines before Connection); returns
    its JSON."""
    head, _, body = raw.partition(b"\r\n\r\n")
    expected = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n{extra}"
                f"Connection: {'close' if close else 'keep-alive'}").encode()
    assert head == expected, raw
    doc = json.loads(body)
    assert doc["error"]["code"] == code and doc["error"]["service"] == "demo", doc
    assert body.endswith(b"}\n")
    return doc


def upstream_got(relay):
    """(head, body) of each application request the enclave received."""
    return [(r["head"].encode("latin-1"), r["body"].encode("latin-1"))
            for r in relay.app_requests()]


def wait_app_requests(relay, n, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(relay.app_requests()) < n:
        time.sleep(0.02)
    return upstream_got(relay)


# ---- Requests the proxy refuses before anything goes upstream ----------------------------------

BAD = (400, "Bad Request", "bad_request")
TOO_LARGE = (431, "Request Header Fields Too Large", "header_too_large")

REFUSED = [
    # Content-Length and Transfer-Encoding together, whatever the order, case or value.
    ("cl_te_te_first", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Content-Length: 5\r\n\r\n" + HELLO_CHUNKED, BAD),
    ("cl_te_zero_length", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD),
    ("cl_te_lowercase", b"POST /echo HTTP/1.1\r\n" + H + b"transfer-encoding: chunked\r\n"
     b"content-length: 3\r\n\r\n0\r\n\r\n", BAD),
    # Transfer-Encoding other than exactly one "chunked".
    ("te_chunked_then_gzip", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: chunked, gzip\r\n\r\n" + HELLO_CHUNKED, BAD),
    ("te_gzip_then_chunked", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: gzip, chunked\r\n\r\n" + HELLO_CHUNKED, BAD),
    ("te_two_fields", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n" + HELLO_CHUNKED, BAD),
    ("te_chunked_twice", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n" + HELLO_CHUNKED, BAD),
    ("te_identity", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n"
     b"hello", BAD),
    ("te_empty", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: \r\n\r\n" +
     HELLO_CHUNKED, BAD),
    ("te_vertical_tab", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: \x0bchunked\r\n"
     b"\r\n" + HELLO_CHUNKED, BAD),
    ("te_trailing_tab", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\t\r\n"
     b"\r\n" + HELLO_CHUNKED, BAD),
    ("te_space_before_colon", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked"
     b"\r\n\r\n" + HELLO_CHUNKED, BAD),
    ("te_in_http10", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" +
     HELLO_CHUNKED, BAD),
    # Duplicate or malformed Content-Length (the differing duplicate is in test_bad_requests).
    ("cl_duplicate_same_value", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Content-Length: 5\r\n\r\nhello", BAD),
    ("cl_duplicate_differing_larger_first", b"POST /echo HTTP/1.1\r\n" + H +
     b"Content-Length: 6\r\nContent-Length: 5\r\n\r\nhello!", BAD),
    ("cl_list", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", BAD),
    ("cl_plus_sign", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", BAD),
    ("cl_negative", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\nhello", BAD),
    ("cl_overflow", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999"
     b"999\r\n\r\nhello", BAD),
    # obs-fold, with a tab and on the first header line.
    ("obs_fold_tab", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n", BAD),
    ("obs_fold_first_line", b"GET /echo HTTP/1.1\r\n Host: localhost\r\n\r\n", BAD),
    # Bare CR and bare LF anywhere in the head; CRLF injection into a value.
    ("bare_lf_ends_head", b"GET /echo HTTP/1.1\r\n" + H + b"\n", BAD),
    ("bare_cr_request_line", b"GET /echo HTTP/1.1\r" + H + b"\r\n", BAD),
    ("bare_cr_in_target", b"GET /a\rb HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("cr_injection_in_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\rX-Injected: 1\r\n\r\n",
     BAD),
    ("lf_injection_in_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\nX-Injected: 1\r\n\r\n",
     BAD),
    ("nul_in_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", BAD),
    ("ctl_in_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", BAD),
    ("del_in_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", BAD),
    ("ctl_in_host", b"GET /echo HTTP/1.1\r\nHost: local\x01host\r\n\r\n", BAD),
    # Request line: targets that are not a path, other versions and methods.
    ("asterisk_form_get", b"GET * HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("authority_form_get", b"GET localhost:80 HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("absolute_form_https", b"GET https://localhost/echo HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("fragment_in_target", b"GET /echo#/../admin HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("space_in_target", b"GET /echo?a b HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("tab_separator", b"GET\t/echo HTTP/1.1\r\n" + H + b"\r\n", BAD),
    # RFC 9112 3: a single SP between the parts (docs/security.md, strictness decisions).
    ("double_space_before_target", b"GET  /echo HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("double_space_before_version", b"GET /echo  HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("http09", b"GET /echo\r\n\r\n", BAD),
    ("http12", b"GET /echo HTTP/1.2\r\n" + H + b"\r\n", BAD),
    ("http2_version", b"GET /echo HTTP/2.0\r\n" + H + b"\r\n", BAD),
    ("h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", BAD),
    ("lowercase_method", b"get /echo HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("unknown_method", b"FOO /echo HTTP/1.1\r\n" + H + b"\r\n", BAD),
    ("connect_ip", b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n", BAD),
    # Overlong request line and header line (max_header_bytes, 32 KiB by default).
    ("overlong_request_line", b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\n" + H + b"\r\n",
     TOO_LARGE),
    ("overlong_header_name", b"GET /echo HTTP/1.1\r\n" + H + b"X-" + b"n" * 40000 +
     b": 1\r\n\r\n", TOO_LARGE),
]


ACCESS_LOG_METHODS = [
    # Refused before a method was parsed: logged as "-", not as llhttp's method 0 (DELETE).
    (b"\x01GET /echo HTTP/1.1\r\n" + H + b"\r\n", "-"),
    (b"FOO /echo HTTP/1.1\r\n" + H + b"\r\n", "-"),
    (b"get /echo HTTP/1.1\r\n" + H + b"\r\n", "-"),
    # The method was parsed, the rest of the head was not.
    (b"GET /echo HTTP/1.1\r\nX\x01: 1\r\n\r\n", "GET"),
    (b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n", "POST"),
    (b"DELETE /echo HTTP/1.1\r\nHost: attacker.example\r\n\r\n", "DELETE"),
]


@pytest.mark.parametrize("request_bytes,method", ACCESS_LOG_METHODS)
def test_access_log_method_of_refused_requests(fresh, request_bytes, method):
    mark = len(fresh.daemon.log())
    out = transcript(fresh.port, request_bytes)
    assert out.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 421 "))
    lines = [l for l in fresh.daemon.wait_log("event=request ", start=mark)[mark:].splitlines()
             if "event=request " in l]
    assert len(lines) == 1, lines
    assert f" method={method} " in lines[0], lines[0]


@pytest.mark.parametrize("name,request_bytes,expected", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_before_upstream(fresh, name, request_bytes, expected):
    status, reason, code = expected
    out = transcript(fresh.port, request_bytes)
    error_response(status, reason, code, out, close=True)
    assert upstream_got(fresh) == []


# ---- Valid heads whose bodies turn out malformed -------------------------------------------------

CHUNKED_HEAD = b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"

BODY_ERRORS = [
    ("chunk_ext_control_char", b"5;\x01\r\nhello\r\n0\r\n\r\n"),
    ("chunk_size_trailing_space", b"5 \r\nhello\r\n0\r\n\r\n"),
    ("chunk_size_bare_lf", b"5\nhello\r\n0\r\n\r\n"),
    ("chunk_size_overflow", b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ("chunk_size_negative", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk_size_hex_prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk_data_overruns_size", b"5\r\nhelloEXTRA\r\n0\r\n\r\n"),
    ("last_chunk_bare_lf", b"5\r\nhello\r\n0\n\n"),
    ("trailer_bare_lf", b"5\r\nhello\r\n0\r\nX-Trailer: 1\n\r\n"),
    ("chunk_extension_endless", b"5;" + b"e" * 8000),
    ("trailer_fields_over_max_headers", b"5\r\nhello\r\n0\r\n" + b"T: 1\r\n" * 101 + b"\r\n"),
]


@pytest.mark.parametrize("name,body", BODY_ERRORS, ids=[c[0] for c in BODY_ERRORS])
def test_body_errors_in_hand_never_reach_the_enclave(fresh, name, body):
    """The whole request arrives in one write (one read of up to 64 KiB): its body is validated
    to the end before any byte goes upstream, so the enclave sees nothing at all — no request,
    no attestation."""
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=TIMEOUT) as s:
        s.sendall(CHUNKED_HEAD + body)
        out = read_to_close(s)
    error_response(*BAD, out, close=True)
    assert fresh.sim.requests() == []


@pytest.mark.parametrize("name,body", BODY_ERRORS, ids=[c[0] for c in BODY_ERRORS])
def test_body_errors_streamed_cut_the_relayed_request(fresh, name, body):
    """The head and a first good chunk go up before the bad bytes arrive: the exchange is cut
    (400 to the client), and the enclave never receives a complete request."""
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=TIMEOUT) as s:
        s.sendall(CHUNKED_HEAD + b"2\r\nok\r\n")
        wait_app_requests(fresh, 1)
        s.sendall(body)
        out = read_to_close(s)
    error_response(*BAD, out, close=True)
    up = f"127.0.0.1:{fresh.sim.port}".encode()
    expected_head = (b"POST /echo HTTP/1.1\r\nHost: " + up +
                     b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    (head, got), = upstream_got(fresh)
    assert head == expected_head
    assert got.startswith(b"ok")  # and never complete: the enclave would have answered


def test_endless_chunk_extension_is_cut_at_its_bound(fresh):
    """An extension trickled in forever is refused once the chunk-size line passes 4 KiB,
    not after stream_idle_timeout."""
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=TIMEOUT) as s:
        s.sendall(CHUNKED_HEAD + b"5;")
        wait_app_requests(fresh, 1)
        t0 = time.monotonic()
        try:
            for _ in range(100):
                s.sendall(b"e" * 100)
                time.sleep(0.005)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = read_to_close(s)
    assert time.monotonic() - t0 < 5
    doc = error_response(*BAD, out, close=True)
    assert "chunk extensions too long" in doc["error"]["message"]


def test_trailer_over_max_header_bytes_is_refused(fresh):
    """Trailers count against max_header_bytes (32 KiB here): a 40 KB trailer field arrives in
    more than one read, and is refused before the request reaches the enclave."""
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=TIMEOUT) as s:
        s.sendall(CHUNKED_HEAD + b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 40000 + b"\r\n\r\n")
        out = read_to_close(s)
    doc = error_response(*BAD, out, close=True)
    assert "trailer section is too large" in doc["error"]["message"]
    assert upstream_got(fresh) == []


def test_valid_chunked_body_in_hand_is_relayed_exactly(fresh):
    """Validation ahead delivers nothing twice: extensions and trailers are dropped, the data
    arrives once, re-framed."""
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
    out = transcript(fresh.port, CHUNKED_HEAD[:-2] + CLOSE + b"\r\n" + body)
    assert out.startswith(b"HTTP/1.1 200 ")
    (head, got), = upstream_got(fresh)
    assert got == b"hello world"


# ---- Requests relayed: exactly what the enclave receives ---------------------------------------

def echo_ok(raw):
    """The relayed /echo answer: exact head, JSON body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head == (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close" % len(body)), raw
    return json.loads(body)


# Each: (name, request bytes, head the enclave must receive with {up} for its authority, body).
FORWARDED = [
    ("te_chunked_uppercase", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n" +
     CLOSE + b"\r\n" + HELLO_CHUNKED,
     b"POST /echo HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n", b"hello"),
    ("te_whitespace_around_value", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer-Encoding: \t chunked  \r\n" + CLOSE + b"\r\n" + HELLO_CHUNKED,
     b"POST /echo HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n", b"hello"),
    ("chunk_extensions_dropped", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked"
     b"\r\n" + CLOSE + b"\r\n5;name=value\r\nhello\r\n6;q=\"a;b\"\r\n world\r\n"
     b"0;last\r\n\r\n",
     b"POST /echo HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n", b"hello world"),
    ("trailers_dropped", b"POST /echo HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Trailer: X-Checksum\r\n" + CLOSE + b"\r\n5\r\nhello\r\n0\r\nX-Checksum: 1\r\n"
     b"Content-Length: 50\r\n\r\n",
     b"POST /echo HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n", b"hello"),
    ("content_length_whitespace", b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: \t5 \r\n" +
     CLOSE + b"\r\nhello",
     b"POST /echo HTTP/1.1\r\nHost: {up}\r\nContent-Length: 5\r\n\r\n", b"hello"),
    # A request hidden in a body stays a body.
    ("request_in_get_body", b"GET /echo HTTP/1.1\r\n" + H + b"Content-Length: 40\r\n" + CLOSE +
     b"\r\nGET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n",
     b"GET /echo HTTP/1.1\r\nHost: {up}\r\nContent-Length: 40\r\n\r\n",
     b"GET /admin HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    # Listing the framing header in Connection does not make the body disappear upstream.
    ("connection_lists_content_length", b"POST /echo HTTP/1.1\r\n" + H +
     b"Connection: close, Content-Length\r\nContent-Length: 5\r\n\r\nhello",
     b"POST /echo HTTP/1.1\r\nHost: {up}\r\nContent-Length: 5\r\n\r\n", b"hello"),
    ("connection_lists_transfer_encoding", b"POST /echo HTTP/1.1\r\n" + H +
     b"Connection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n" +
     HELLO_CHUNKED,
     b"POST /echo HTTP/1.1\r\nHost: {up}\r\nTransfer-Encoding: chunked\r\n\r\n", b"hello"),
    # Hop-by-hop, framing and forwarding headers spelled with '_' are removed like the '-' ones.
    ("underscore_spellings_removed", b"POST /echo HTTP/1.1\r\n" + H +
     b"Transfer_Encoding: chunked\r\nX_Forwarded_For: 203.0.113.9\r\nContent_Length: 99\r\n"
     b"X_Kept: yes\r\nContent-Length: 5\r\n" + CLOSE + b"\r\nhello",
     b"POST /echo HTTP/1.1\r\nHost: {up}\r\nX_Kept: yes\r\nContent-Length: 5\r\n\r\n", b"hello"),
    # A WebSocket handshake (allow_upgrade = websocket, the default) goes up with Upgrade and
    # Connection: Upgrade, the only hop-by-hop headers ever forwarded (test_websocket.py); any
    # other upgrade goes on as plain HTTP/1.1 with Upgrade and the headers named in Connection
    # removed.
    ("upgrade_websocket", b"GET /echo HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\n"
     b"Connection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     b"Sec-WebSocket-Version: 13\r\n\r\n",
     b"GET /echo HTTP/1.1\r\nHost: {up}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
     b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", b""),
    ("upgrade_h2c", b"GET /echo HTTP/1.1\r\n" + H + b"Connection: Upgrade, HTTP2-Settings, close"
     b"\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
     b"GET /echo HTTP/1.1\r\nHost: {up}\r\n\r\n", b""),
    # The request line is rebuilt from its parts; the target travels byte for byte.
    ("leading_empty_lines", b"\r\n\r\nGET /echo HTTP/1.1\r\n" + H + CLOSE + b"\r\n",
     b"GET /echo HTTP/1.1\r\nHost: {up}\r\n\r\n", b""),
    ("encoded_crlf_stays_encoded", b"GET /echo?a=%0d%0aX-Injected:%201 HTTP/1.1\r\n" + H +
     CLOSE + b"\r\n",
     b"GET /echo?a=%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: {up}\r\n\r\n", b""),
    ("obs_text_value", b"GET /echo HTTP/1.1\r\n" + H + b"X-Name: caf\xc3\xa9\r\n" + CLOSE +
     b"\r\n", b"GET /echo HTTP/1.1\r\nHost: {up}\r\nX-Name: caf\xc3\xa9\r\n\r\n", b""),
    # HTTP/1.0: no Host needed, relayed as HTTP/1.1, answered with Connection: close.
    ("http10_without_keep_alive", b"GET /echo HTTP/1.0\r\n\r\n",
     b"GET /echo HTTP/1.1\r\nHost: {up}\r\n\r\n", b""),
]


@pytest.mark.parametrize("name,request_bytes,head,body", FORWARDED, ids=[c[0] for c in FORWARDED])
def test_forwarded_exactly(fresh, name, request_bytes, head, body):
    out = transcript(fresh.port, request_bytes)
    echo_ok(out)
    up = f"127.0.0.1:{fresh.sim.port}".encode()
    assert upstream_got(fresh) == [(head.replace(b"{up}", up), body)]


def test_options_asterisk_is_relayed(fresh):
    out = transcript(fresh.port, b"OPTIONS * HTTP/1.1\r\n" + H + CLOSE + b"\r\n")
    # The simulator has no OPTIONS * handler: its 404 comes through unchanged.
    assert out == (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
                   b"Connection: close\r\n\r\nnot found\n")
    up = f"127.0.0.1:{fresh.sim.port}".encode()
    assert upstream_got(fresh) == [(b"OPTIONS * HTTP/1.1\r\nHost: " + up + b"\r\n\r\n", b"")]


# ---- Keep-alive, pipelining and Connection: close ------------------------------------------------

def paths(relay):
    return [r["path"] for r in relay.app_requests()]


def test_pipelined_mixed_requests_are_answered_in_order(fresh):
    data = (b"POST /echo?n=1 HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello" +
            b"HEAD /download?bytes=7 HTTP/1.1\r\n" + H + b"\r\n" +
            b"POST /echo?n=3 HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" +
            b"3\r\nabc\r\n0\r\n\r\n" +
            b"GET /echo?n=4 HTTP/1.1\r\n" + H + CLOSE + b"\r\n")
    responses = split_responses(transcript(fresh.port, data), head_requests={1})
    assert len(responses) == 4
    assert json.loads(responses[0].split(b"\r\n\r\n", 1)[1])["body_bytes"] == 5
    assert responses[1] == (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                            b"X-Content-SHA256: " + responses[1].split(b"SHA256: ")[1][:64] +
                            b"\r\nContent-Length: 7\r\n\r\n")
    assert json.loads(responses[2].split(b"\r\n\r\n", 1)[1])["body_bytes"] == 3
    assert echo_ok(responses[3])["path"] == "/echo?n=4"
    assert paths(fresh) == ["/echo?n=1", "/download?bytes=7", "/echo?n=3", "/echo?n=4"]


def test_pipelined_request_after_a_bad_one_is_never_relayed(fresh):
    data = (b"GET /echo?n=1 HTTP/1.1\r\n" + H + b"\r\n" +
            b"GET /echo?n=2 HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n" +
            b"GET /echo?n=3 HTTP/1.1\r\n" + H + b"\r\n")
    first, second = split_responses(transcript(fresh.port, data))
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection" not in first
    error_response(*BAD, second, close=True)
    assert paths(fresh) == ["/echo?n=1"]


def test_client_connection_close_ends_the_pipeline(fresh):
    data = (b"GET /echo?n=1 HTTP/1.1\r\n" + H + CLOSE + b"\r\n" +
            b"GET /echo?n=2 HTTP/1.1\r\n" + H + b"\r\n")
    (only,) = split_responses(transcript(fresh.port, data))
    assert echo_ok(only)["path"] == "/echo?n=1"
    assert paths(fresh) == ["/echo?n=1"]
    # Connection: close is hop-by-hop: the upstream connection stays pooled for the next one.
    assert echo_ok(transcript(fresh.port, b"GET /echo?n=3 HTTP/1.1\r\n" + H + CLOSE + b"\r\n"))
    conns = [r["conn"] for r in fresh.app_requests()]
    assert conns[0] == conns[1]


def test_a_client_that_asked_to_close_is_closed_at_once(fresh):
    """Connection: close, the request read whole and nothing after it: the client sends no more
    (RFC 9112 9.6), so the daemon closes at once instead of shutting its side and waiting for
    the client's FIN for the linger time (2 s). With request bytes left unread it still lingers,
    so that closing cannot reset the answer."""
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /echo?n=1 HTTP/1.1\r\n" + H + CLOSE + b"\r\n")
        assert echo_ok(read_to_close(s))["path"] == "/echo?n=1"
        wait_open_clients(fresh.admin, 0, timeout=1)  # while this side is still open
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /echo?n=2 HTTP/1.1\r\n" + H + CLOSE + b"\r\n" +
                  b"GET /echo?n=3 HTTP/1.1\r\n" + H + b"\r\n")
        (only,) = split_responses(read_to_close(s))
        assert echo_ok(only)["path"] == "/echo?n=2"
        assert open_clients(fresh.admin) == 1  # lingering: its FIN has not come
    wait_open_clients(fresh.admin, 0)


def test_pipelined_requests_before_a_half_close_are_all_answered(fresh):
    """A client that sends its requests and then shuts down its sending side (nc -N, a batch
    job) gets every answer, in order, and the connection ends after the last. The last answer
    says Connection: close when the daemon has read the half-close before that answer's head:
    here the last request is slow (300 ms), so it always has. With fast answers the three may
    all be relayed before the FIN is read; the connection still ends after the last (below)."""
    data = (b"".join(b"GET /echo?n=%d HTTP/1.1\r\n" % i + H + b"\r\n" for i in range(1, 3)) +
            b"GET /slow?delay=0.3 HTTP/1.1\r\n" + H + b"\r\n")
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=TIMEOUT) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        responses = split_responses(read_to_close(s))
    assert [json.loads(r.split(b"\r\n\r\n", 1)[1])["path"] for r in responses[:2]] == [
        "/echo?n=1", "/echo?n=2"]
    assert responses[2].endswith(b"\r\n\r\nslow\n")
    assert [b"Connection: close" in r for r in responses] == [False, False, True]
    assert paths(fresh) == ["/echo?n=1", "/echo?n=2", "/slow?delay=0.3"]


def test_fast_pipelined_requests_before_a_half_close_end_the_connection(fresh):
    data = b"".join(b"GET /echo?n=%d HTTP/1.1\r\n" % i + H + b"\r\n" for i in range(1, 4))
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=TIMEOUT) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        responses = split_responses(read_to_close(s))  # fails if the connection stayed open
    assert [json.loads(r.split(b"\r\n\r\n", 1)[1])["path"] for r in responses] == [
        "/echo?n=1", "/echo?n=2", "/echo?n=3"]
    assert [b"Connection: close" in r for r in responses[:2]] == [False, False]


def test_http10_keep_alive_is_not_kept(fresh):
    data = (b"GET /echo?n=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            b"GET /echo?n=2 HTTP/1.0\r\n\r\n")
    (only,) = split_responses(transcript(fresh.port, data))
    assert echo_ok(only)["path"] == "/echo?n=1"
    assert paths(fresh) == ["/echo?n=1"]


def test_http10_client_gets_a_close_delimited_body(fresh):
    out = transcript(fresh.port, b"GET /download?bytes=100&chunked=1 HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head == (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"X-Content-SHA256: " + head.split(b"SHA256: ")[1][:64] +
                    b"\r\nConnection: close")
    assert len(body) == 100


# ---- Raw upstream responses: exactly what the client receives ----------------------------------

OK2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
UNREACHABLE = (502, "Bad Gateway", "upstream_unreachable")

# Each: (name, the enclave's raw answer, what it does after ("keep" / "close"), and the exact
# client bytes, or UNREACHABLE for a 502 from the proxy).
RESPONSES = [
    ("upstream_connection_close", OK2[:-4] + b"Connection: close\r\n\r\nok", "close", OK2),
    ("close_delimited_body_rechunked", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
     b"until close", "close", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nb\r\nuntil close\r\n0\r\n\r\n"),
    ("http10_response", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "close", OK2),
    ("interim_100_dropped", b"HTTP/1.1 100 Continue\r\n\r\n" + OK2, "keep", OK2),
    ("interim_103_with_length", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n"
     b"Content-Length: 3\r\n\r\n" + OK2, "keep", OK2),
    ("hop_by_hop_removed", b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\n"
     b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n"
     b"Content-Length: 2\r\n\r\nok", "keep", OK2),
    ("chunk_extensions_and_trailers_dropped", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
     b"\r\nTrailer: X-T\r\n\r\n2;ext=1\r\nok\r\n0\r\nX-T: 1\r\n\r\n", "keep",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    ("no_content_with_length", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "keep",
     b"HTTP/1.1 204 No Content\r\n\r\n"),
    ("not_modified_with_length", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
     "keep", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
    ("switching_protocols", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
     b"Connection: Upgrade\r\n\r\n", "keep", UNREACHABLE),
    ("cl_and_te", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2\r\nok\r\n0\r\n\r\n", "keep", UNREACHABLE),
    ("duplicate_cl_differing", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n"
     b"\r\nok!", "keep", UNREACHABLE),
    ("te_gzip_chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     b"2\r\nok\r\n0\r\n\r\n", "keep", UNREACHABLE),
    ("te_gzip_close_delimited", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nokok",
     "close", UNREACHABLE),
    ("bare_lf", b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok", "keep", UNREACHABLE),
    ("bare_cr_header_injection", b"HTTP/1.1 200 OK\rSet-Cookie: x=1\r\nContent-Length: 2\r\n"
     b"\r\nok", "keep", UNREACHABLE),
    ("obs_fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", "keep",
     UNREACHABLE),
    ("nul_in_value", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", "keep",
     UNREACHABLE),
    ("head_over_64k", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n"
     b"Content-Length: 2\r\n\r\nok", "keep", UNREACHABLE),
]


@pytest.mark.parametrize("name,answer,end,expected", RESPONSES, ids=[c[0] for c in RESPONSES])
def test_upstream_answer_transcript(fresh, name, answer, end, expected):
    """The first request gets the raw answer; a pipelined second one on the same client
    connection gets a normal answer, so the client connection survives whatever the first
    answer was."""
    fresh.sim.misbehave("raw_response", data=answer.decode("latin-1"), end=end, count=1)
    data = (b"GET /echo?n=1 HTTP/1.1\r\n" + H + b"\r\n" +
            b"GET /echo?n=2 HTTP/1.1\r\n" + H + CLOSE + b"\r\n")
    first, second = split_responses(transcript(fresh.port, data))
    if expected is UNREACHABLE:
        doc = error_response(*UNREACHABLE, first, close=False)
        assert doc["error"]["message"].startswith("bad response from the upstream")
    else:
        assert first == expected
    assert echo_ok(second)["path"] == "/echo?n=2"
    assert paths(fresh) == ["/echo?n=1", "/echo?n=2"]


def test_an_answer_before_the_end_of_the_upload_says_connection_close(fresh):
    """The enclave answers a POST before reading its body: the client gets the answer with
    Connection: close, and the connection ends after it (the rest of the body is not read)."""
    fresh.sim.misbehave("raw_response", data="HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        end="keep", count=1, early=True)
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=TIMEOUT) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\n" + H + b"Content-Length: 1000000\r\n\r\n" +
                  b"x" * 1000)
        out = read_to_close(s)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def test_upstream_connection_close_is_not_reused(fresh):
    fresh.sim.misbehave("raw_response", data=(OK2[:-4] + b"Connection: close\r\n\r\nok").decode(),
                        end="close", count=1)
    data = (b"GET /echo?n=1 HTTP/1.1\r\n" + H + b"\r\n" +
            b"GET /echo?n=2 HTTP/1.1\r\n" + H + CLOSE + b"\r\n")
    transcript(fresh.port, data)
    first, second = fresh.app_requests()
    assert first["conn"] != second["conn"]


def test_bad_chunk_from_upstream_cuts_the_client(fresh):
    """Once the head went to the client, a malformed body can only end the connection."""
    fresh.sim.misbehave("raw_response", data="HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                        "\r\n2\r\nok\r\nzz\r\n", end="keep", count=1)
    data = (b"GET /echo?n=1 HTTP/1.1\r\n" + H + b"\r\n" +
            b"GET /echo?n=2 HTTP/1.1\r\n" + H + CLOSE + b"\r\n")
    out = transcript(fresh.port, data)
    assert out == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"
    assert paths(fresh) == ["/echo?n=1"]
