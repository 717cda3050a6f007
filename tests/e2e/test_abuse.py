"""Abusive clients and hostile upstreams (docs/security.md, "Abuse and hostile peers").

Clients: slowloris header trickles and idle sockets are cut by client_header_timeout and
client_idle_timeout; a stalled upload and a client that never reads its response by
stream_idle_timeout; max_connections answers the excess with 503 too_many_connections; ten
thousand concurrent connections are accepted (the daemon raises its own descriptor limit).

Upstreams (simulator modes; attestation passes, only the application answer misbehaves): one
that never answers, stalls mid-body, answers garbage, resets mid-body, or sends more than its
Content-Length. Each gives the documented client-visible result, and the daemon serves the next
request.

The timeouts are set small so that the whole file runs in well under a minute; every loop is
bounded in count and in time, and every socket is on 127.0.0.1.
"""
import json
import re
import resource
import selectors
import socket
import time

import pytest

import test_conformance
from test_conformance import (error_response, open_clients, read_one, read_to_close, start, stop,
                              wait_open_clients)

# Each case gets the module's relay reset, and the daemon is checked alive and serving after.
fresh = test_conformance.fresh

H = b"Host: localhost\r\n"
GET = b"GET /echo HTTP/1.1\r\n" + H + b"\r\n"
TIMEOUTS = ("client_header_timeout = 500ms\nclient_idle_timeout = 1s\n"
            "first_byte_timeout = 1s\nstream_idle_timeout = 1s\n")


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    r = start(tmp_path_factory.mktemp("abuse"), TIMEOUTS)
    yield r
    stop(r)


def closed_at(s, deadline):
    """Waits (bounded) until the peer closes `s`; returns (time, bytes received before)."""
    got = b""
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return time.monotonic(), got
        if not chunk:
            return time.monotonic(), got
        got += chunk
    raise AssertionError(f"still open; received {got[:200]!r}")


# ---- Slow and idle clients -----------------------------------------------------------------------

def test_slowloris_header_trickle_is_cut(fresh):
    """Twenty clients trickle a never-ending head, one byte per client every 50 ms: each is
    closed without an answer client_header_timeout (500 ms) after its first byte, however
    steadily it sends, while a normal client is served meanwhile."""
    trickle = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000
    log_start = len(fresh.daemon.log())
    socks = [socket.create_connection(("127.0.0.1", fresh.port), timeout=5) for _ in range(20)]
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    started, ended, pos = time.monotonic(), {}, 0
    served_at = None
    try:
        while len(ended) < len(socks) and time.monotonic() - started < 5 and pos < len(trickle):
            for i, s in enumerate(socks):
                if i not in ended:
                    try:
                        s.send(trickle[pos:pos + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        ended[i] = (time.monotonic(), b"")
            pos += 1
            for key, _ in sel.select(timeout=0.05):
                i = key.data
                try:
                    data = key.fileobj.recv(4096)
                except ConnectionResetError:
                    data = b""
                if not data and i not in ended:
                    ended[i] = (time.monotonic(), data)
                    sel.unregister(key.fileobj)
                elif data:
                    raise AssertionError(f"a trickling client got an answer: {data[:200]!r}")
            if served_at is None and time.monotonic() - started > 0.2:
                assert fresh.get("/echo?normal=1", timeout=5).status_code == 200
                served_at = time.monotonic() - started
    finally:
        for s in socks:
            s.close()
    assert len(ended) == len(socks), f"only {len(ended)} of {len(socks)} were cut"
    for t, _ in ended.values():
        assert 0.4 <= t - started <= 2.5, t - started
    assert served_at is not None and served_at < 1.5
    assert [r["path"] for r in fresh.app_requests()] == ["/echo?normal=1"]
    log = fresh.daemon.log()[log_start:]
    assert log.count("event=client_timeout service=demo timeout=client_header_timeout") == 20


def test_idle_connections_are_closed(fresh):
    """A connection that never sends, and a keep-alive one after its response, are closed
    after client_idle_timeout (1 s)."""
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=5) as silent, \
            socket.create_connection(("127.0.0.1", fresh.port), timeout=5) as kept:
        t0 = time.monotonic()
        kept.sendall(GET)
        assert read_one(kept).startswith(b"HTTP/1.1 200 OK\r\n")
        t1 = time.monotonic()
        t_silent, got_silent = closed_at(silent, t0 + 5)
        t_kept, got_kept = closed_at(kept, t1 + 5)
    assert got_silent == got_kept == b""
    assert 0.9 <= t_silent - t0 <= 3
    assert 0.9 <= t_kept - t1 <= 3


def test_stalled_upload_is_cut_and_a_trickled_one_is_not(fresh):
    """stream_idle_timeout bounds each silence of a request body, not its total time: an upload
    that stops is cut after 1 s (the enclave got a truncated request on a connection that is
    closed), an upload trickling a byte every 300 ms goes through."""
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=5) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: 1000\r\n\r\n" + b"x" * 10)
        t0 = time.monotonic()
        t, got = closed_at(s, t0 + 5)
    assert got == b"" and 0.9 <= t - t0 <= 3
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=5) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\n")
        for b in b"hello":
            time.sleep(0.3)
            s.sendall(bytes([b]))
        out = read_one(s)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["bytes"] == 5


def non_readers(port, sizes, wait=2.0):
    """One connection per size, with a small receive buffer, requests a download of that size
    (Connection: close) and reads nothing for `wait` seconds; returns how many bytes each then
    finds before the daemon's close (what the socket buffers held)."""
    socks, got = [], []
    try:
        for n in sizes:
            s = socket.socket()
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /download?bytes=%d HTTP/1.1\r\n" % n + H +
                      b"Connection: close\r\n\r\n")
        time.sleep(wait)
        for s in socks:
            got.append(len(closed_at(s, time.monotonic() + 10)[1]))
    finally:
        for s in socks:
            s.close()
    return got


def test_client_that_never_reads_is_cut(fresh):
    """Clients that request downloads and never read are closed stream_idle_timeout (1 s) after
    the last byte they took: while the enclave is still sending (the daemon stopped reading it
    when the client's write queue filled), and when the whole response was read from the
    enclave but sits in the client's write queue. They find a truncated response."""
    log_start = len(fresh.daemon.log())
    (held,) = non_readers(fresh.port, [64 << 20])
    assert 0 < held < 64 << 20
    # Responses just larger than what the socket buffers hold: the enclave's part completes,
    # the rest waits in the write queue (below its 256 KiB bound) for a reader that never comes.
    # Buffer sizes vary from one connection to the next, hence a spread of sizes.
    sizes = [held + k * 32 * 1024 for k in range(1, 8)]
    got = non_readers(fresh.port, sizes)
    log = fresh.daemon.log()[log_start:]
    # The state each connection was cut in: relaying (the enclave still sending) or flushing.
    conns = re.findall(r'event=client_close service=demo conn=(\d+) '
                       r'why="the client stopped reading the response"', log)
    cut = [re.search(r"event=client_state service=demo conn=%s from=(\w+) to=closing" % c,
                     log).group(1) for c in conns]
    assert cut[0] == "relaying", cut
    # The smallest may fit whole and end normally; the largest may be cut while relaying.
    assert "flushing" in cut[1:], ("no case where the whole response was queued", cut, held, sizes, got)
    assert len(cut) - 1 == sum(g < n for n, g in zip(sizes, got)), (cut, sizes, got)


def test_client_that_pipelines_without_reading_is_bounded(fresh):
    """Thousands of pipelined requests whose answers fit in one TLS record each, from a client
    that reads nothing: the daemon stops taking requests once its write queue to that client
    is full (CLIENT_WRITE_HIGH), so memory stays bounded instead of growing by every answer.
    When the client reads, the rest are answered, all of them, in order. (One that stays
    blocked past stream_idle_timeout is cut like any client that stops reading.)"""
    body = b"z" * 16000
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    fresh.sim.misbehave("raw_response", data=answer.decode(), end="keep")
    rss0 = fresh.rss_kib()
    n = 1500
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", fresh.port))
        s.sendall((b"GET /x HTTP/1.1\r\n" + H + b"\r\n") * (n + 1))
        time.sleep(0.6)  # below stream_idle_timeout (1 s), which cuts a client that stops reading
        answered = len(fresh.app_requests())
        grown = fresh.rss_kib() - rss0
        print(f"\nwhile not reading: {answered} of {n + 1} requests answered by the enclave, "
              f"RSS +{grown} KiB")
        assert answered < 400, answered
        # ASan's allocator keeps freed memory in quarantine: resident size means nothing there.
        with open(f"/proc/{fresh.daemon.proc.pid}/maps") as maps:
            if "libasan" not in maps.read():
                assert grown < 8 * 1024, grown
        want = (n + 1) * len(answer)
        got = 0
        deadline = time.monotonic() + 30
        while got < want and time.monotonic() < deadline:
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {got} of {want} bytes"
            got += len(chunk)
        assert got == want
        assert len(fresh.app_requests()) == n + 1
    finally:
        s.close()


def test_client_that_pipelines_and_stops_reading_is_cut(fresh):
    """The same client, blocked past stream_idle_timeout (1 s here): cut, and logged as a client
    that stopped reading."""
    body = b"z" * 16000
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    fresh.sim.misbehave("raw_response", data=answer.decode(), end="keep")
    log_start = len(fresh.daemon.log())
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", fresh.port))
        s.sendall((b"GET /x HTTP/1.1\r\n" + H + b"\r\n") * 500)
        t0 = time.monotonic()
        fresh.daemon.wait_log('why="the client stopped reading the response"', start=log_start,
                              timeout=10)
        assert 0.9 < time.monotonic() - t0 < 5
    finally:
        s.close()


# ---- Connection limits ---------------------------------------------------------------------------

def test_max_connections_refuses_the_excess(tmp_path):
    """With max_connections = 4 held, a burst of 100 more connections each gets either the
    documented 503 too_many_connections (at most 64 at once) or, beyond that, a plain close;
    none reaches the enclave, the held ones keep working, and service resumes after."""
    relay = start(tmp_path, "max_connections = 4\nclient_idle_timeout = 30s\n")
    admin = relay.admin
    try:
        wait_open_clients(admin, 0)  # the readiness probe is gone
        held = [socket.create_connection(("127.0.0.1", relay.port), timeout=5) for _ in range(4)]
        wait_open_clients(admin, 4)
        burst = []
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
            try:
                s.sendall(GET)
            except (BrokenPipeError, ConnectionResetError):
                pass  # already refused and closed
            burst.append(s)
        refused = silent = 0
        for s in burst:
            out = read_to_close(s)
            s.close()
            if out:
                error_response(503, "Service Unavailable", "too_many_connections", out,
                               close=True, extra="Retry-After: 1\r\n")
                refused += 1
            else:
                silent += 1
        assert 1 <= refused <= 64 and refused + silent == 100, (refused, silent)
        assert open_clients(admin) == 4
        held[0].sendall(GET)
        assert read_one(held[0]).startswith(b"HTTP/1.1 200 OK\r\n")
        assert [r["path"] for r in relay.app_requests()] == ["/echo"]
        for s in held:
            s.close()
        wait_open_clients(admin, 0)
        assert relay.get("/echo").status_code == 200
    finally:
        stop(relay)


def connect_many(port, n, deadline):
    socks = []
    try:
        while len(socks) < n:
            assert time.monotonic() < deadline, f"only {len(socks)} connections in time"
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def test_ten_thousand_concurrent_connections(tmp_path):
    """10 000 client connections at once, with the daemon started at a soft descriptor limit
    of 1024: it raises its own limit to the hard one (and logs it), accepts them all, relays
    requests over some of them, and answers a request on every one."""
    n = 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 1000:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) is too small for {n} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    relay = start(tmp_path, f"max_connections = {n}\n", log_level="info",
                  preexec_fn=low_soft_limit)
    admin = relay.admin
    socks = []
    try:
        log = relay.daemon.log()
        assert re.search(r"event=fd_limit soft=%d hard=%d was=1024 " % (hard, hard), log), log
        wait_open_clients(admin, 0)
        t0 = time.monotonic()
        socks = connect_many(relay.port, n, t0 + 30)
        wait_open_clients(admin, n)
        # Real exchanges over a spread of the held connections.
        for i in range(0, n, n // 20):
            socks[i].sendall(b"GET /echo?i=%d HTTP/1.1\r\n" % i + H + b"\r\n")
            assert read_one(socks[i]).startswith(b"HTTP/1.1 200 OK\r\n")
        assert len(relay.app_requests()) == 20
        # And an answer on every one: a Host the daemon refuses itself, 421 and close.
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: not-allowed.example\r\n\r\n")
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, bytearray())
        answered, deadline = 0, time.monotonic() + 30
        while answered < n and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data:
                    key.data.extend(data)
                    continue
                assert bytes(key.data).startswith(b"HTTP/1.1 421 Misdirected Request\r\n")
                sel.unregister(key.fileobj)
                answered += 1
        assert answered == n
        wait_open_clients(admin, 0)
        assert relay.daemon.proc.poll() is None
    finally:
        for s in socks:
            s.close()
        stop(relay)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---- Hostile upstreams ---------------------------------------------------------------------------

def test_upstream_that_never_answers(fresh):
    """504 upstream_timeout after first_byte_timeout; the client connection stays usable."""
    fresh.sim.misbehave("stall", seconds=3)
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(GET)
        out = read_one(s)
        elapsed = time.monotonic() - t0
        error_response(504, "Gateway Timeout", "upstream_timeout", out, close=False)
        assert 0.9 <= elapsed <= 3
        fresh.sim.misbehave(None)
        s.sendall(GET)
        assert read_one(s).startswith(b"HTTP/1.1 200 OK\r\n")


def test_upstream_that_stalls_mid_body(fresh):
    """Once the head went to the client, a stall can only cut the client connection, after
    stream_idle_timeout: the client has a head and part of the body, then EOF."""
    fresh.sim.misbehave("raw_response", end="keep", count=1,
                        data="HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(GET)
        t, out = closed_at(s, t0 + 5)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"
    assert 0.9 <= t - t0 <= 3


def test_upstream_that_answers_garbage(fresh):
    """502 upstream_unreachable naming the parse error; that upstream connection is dropped
    and the next request on the same client connection goes over a new one."""
    fresh.sim.misbehave("garbage_response", count=1)
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=10) as s:
        s.sendall(GET)
        doc = error_response(502, "Bad Gateway", "upstream_unreachable", read_one(s),
                             close=False)
        assert doc["error"]["message"].startswith("bad response from the upstream: ")
        s.sendall(GET)
        assert read_one(s).startswith(b"HTTP/1.1 200 OK\r\n")
    first, second = fresh.app_requests()
    assert first["conn"] != second["conn"]


def test_upstream_that_resets_mid_body(fresh):
    """The client got the head and part of the body: it is cut (EOF or reset), so it can tell
    from Content-Length that the body is incomplete."""
    fresh.sim.misbehave("reset_mid_body", bytes=1 << 20, count=1)
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=10) as s:
        s.sendall(GET)
        _, out = closed_at(s, time.monotonic() + 10)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 1048576"
    assert len(body) <= (1 << 19)


@pytest.mark.parametrize("delay_ms", [0, 300])
def test_upstream_that_sends_more_than_its_content_length(fresh, delay_ms):
    """The client gets exactly Content-Length bytes. The excess (here a whole second response)
    never reaches any client: arriving with the response it keeps the connection out of the
    pool; arriving later, on the idle pooled connection, it closes that connection."""
    log_start = len(fresh.daemon.log())
    fresh.sim.misbehave("excess_body", delay_ms=delay_ms, count=1)
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=10) as s:
        s.sendall(GET)
        assert read_one(s) == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        time.sleep(delay_ms / 1000 + 0.3)
        s.sendall(GET)
        out = read_one(s)
    assert out.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    assert b"SMUGGLED" not in out
    first, second = fresh.app_requests()
    assert first["conn"] != second["conn"]
    if delay_ms:
        assert "unexpected data on an idle upstream connection" in fresh.daemon.log()[log_start:]


def test_excess_in_the_next_record_is_not_the_answer_to_a_pipelined_request(fresh):
    """A response that fills its TLS record exactly (16 384 bytes), with a forged second
    response right behind it in the next record: when the client has already pipelined its
    next request, the connection that still holds undelivered bytes is not reused for it. The
    second request gets a real answer over a new connection, and the forged one reaches no
    client."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
    length = 16384 - len(head % 16000)
    first = (head % length) + b"a" * length
    assert len(first) == 16384
    forged = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
    fresh.sim.misbehave("raw_response", data=first.decode(), then=forged, end="keep", count=1)
    with socket.create_connection(("127.0.0.1", fresh.port), timeout=10) as s:
        s.sendall(GET + GET)
        assert read_one(s) == first
        out = read_one(s)
    assert b"SMUGGLED" not in out
    assert out.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    one, two = fresh.app_requests()
    assert one["conn"] != two["conn"]
    assert "the upstream sent bytes past the response" in fresh.daemon.log()
