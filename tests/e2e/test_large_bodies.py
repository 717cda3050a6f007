"""1 GiB up and 1 GiB down through the daemon, digests checked, with the daemon's resident size
below 64 MiB throughout: bodies stream with backpressure, never buffered whole. An upload is
read from the client in pieces of at most 32 KiB (client.h CLIENT_READ_MAX)."""
import hashlib
import http.client
import json
import re
import signal
import subprocess
import time

import pytest

from proxy_fixtures import RssSampler

GIB = 1 << 30
RSS_LIMIT_KIB = 64 * 1024


class PatternSource:
    """A file-like body of `n` bytes, hashed as it is read."""

    def __init__(self, n):
        self.left = n
        self.block = bytes(range(256)) * 4096  # 1 MiB
        self.sha = hashlib.sha256()

    def read(self, k=1 << 20):
        if self.left <= 0:
            return b""
        d = self.block[:min(k, self.left, len(self.block))]
        self.left -= len(d)
        self.sha.update(d)
        return d


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_one_gib_upload(relay, framing):
    src = PatternSource(GIB)
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=120)
    headers = ({"Content-Length": str(GIB)} if framing == "content-length"
               else {"Transfer-Encoding": "chunked"})
    start = time.monotonic()
    with RssSampler(relay) as rss:
        if framing == "chunked":
            def chunks():
                while True:
                    d = src.read()
                    if not d:
                        return
                    yield d
            conn.request("POST", "/upload", body=chunks(), headers=headers, encode_chunked=True)
        else:
            conn.request("POST", "/upload", body=src, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    conn.close()
    assert resp.status == 200, body
    out = json.loads(body)
    assert out == {"bytes": GIB, "sha256": src.sha.hexdigest()}
    assert rss.samples > 5
    assert rss.max_kib < RSS_LIMIT_KIB, f"daemon RSS reached {rss.max_kib} KiB"
    assert time.monotonic() - start < 240


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True])
def test_one_gib_download(relay, chunked):
    sha = hashlib.sha256()
    n = 0
    start = time.monotonic()
    with RssSampler(relay) as rss, relay.session() as s:
        r = s.get(f"{relay.url}/download?bytes={GIB}{'&chunked=1' if chunked else ''}",
                  stream=True, timeout=120)
        assert r.status_code == 200
        for block in r.iter_content(1 << 20):
            sha.update(block)
            n += len(block)
            assert time.monotonic() - start < 240
    assert n == GIB
    assert sha.hexdigest() == r.headers["X-Content-SHA256"]
    assert rss.samples > 5
    assert rss.max_kib < RSS_LIMIT_KIB, f"daemon RSS reached {rss.max_kib} KiB"


@pytest.mark.slow  # a resident-size bound means nothing under ASan's shadow memory
def test_slow_reader_does_not_make_the_daemon_buffer(relay):
    """A client that reads 64 MiB slowly: the daemon stops reading the enclave instead of
    buffering what the client has not taken."""
    size = 64 << 20
    with RssSampler(relay, interval=0.05) as rss, relay.session() as s:
        r = s.get(f"{relay.url}/download?bytes={size}", stream=True, timeout=60)
        raw = r.raw
        got = len(raw.read(1 << 20))
        time.sleep(1.0)  # the enclave keeps sending; the daemon must hold back
        mid = relay.rss_kib()
        while True:
            d = raw.read(1 << 20)
            if not d:
                break
            got += len(d)
    assert got == size
    assert mid < RSS_LIMIT_KIB and rss.max_kib < RSS_LIMIT_KIB


def test_upload_is_read_in_pieces_of_at_most_32_kib(relay, tmp_path):
    """Each read of a client socket while a body streams takes at most 32 KiB, so an upload goes
    to the enclave in writes of two TLS records that it can decrypt while the next piece is read
    (64 KiB reads cost 20% of upload throughput on loopback: docs/benchmarks.md, "Upload write
    size"). Only a request's first read may fill the 64 KiB input buffer, so that a request sent
    at once is validated whole before it goes upstream (docs/security.md, "Buffered
    validation").
    strace shows every read(2) the daemon makes while 8 MiB pass through; the enclave's
    answer is a few bytes, so any read over 32 KiB would be one of the upload's."""
    pid = relay.daemon.proc.pid
    out = tmp_path / "reads.txt"
    tracer = subprocess.Popen(["strace", "-qq", "-e", "trace=read", "-e", "signal=none",
                               "-o", str(out), "-p", str(pid)], stderr=subprocess.DEVNULL)
    try:
        # Traced once a small request's reads show in strace's output.
        deadline = time.monotonic() + 10
        while not (out.exists() and "read(" in out.read_text()):
            assert time.monotonic() < deadline, "strace did not attach"
            assert tracer.poll() is None, "strace exited"
            relay.get("/echo?probe")
            time.sleep(0.05)
        src = PatternSource(8 << 20)
        conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=60)
        conn.request("POST", "/upload", body=src, headers={"Content-Length": str(8 << 20)})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
    assert resp.status == 200, body
    assert json.loads(body) == {"bytes": 8 << 20, "sha256": src.sha.hexdigest()}
    sizes = [int(n) for n in re.findall(r"^read\(.*\) = (\d+)$", out.read_text(), re.M)]
    assert sum(sizes) >= 8 << 20, f"strace saw {sum(sizes)} bytes read"
    assert max(sizes) <= 64 * 1024, f"a read took {max(sizes)} bytes"
    large = [n for n in sizes if n > 32 * 1024]
    assert len(large) <= 1, f"reads over 32 KiB while the body streamed: {large}"


def test_a_reload_does_not_cut_a_body_already_streaming(relay):
    """A reload lowers max_body_size while an upload streams: that upload keeps the limit it was
    admitted with and completes (it got 413 mid-body, the enclave a truncated request); the
    next request gets the new limit."""
    conf = relay.daemon.conf_path
    pieces, sent = 16, []

    def body():
        for i in range(pieces):
            if i == 4:
                mark = len(relay.daemon.log())
                conf.write_text(conf.read_text() + "max_body_size = 1k\n")
                relay.daemon.signal(signal.SIGHUP)
                relay.daemon.wait_log("event=reload_applied", start=mark)
            chunk = bytes([i]) * 4096
            sent.append(chunk)
            yield chunk
            time.sleep(0.02)

    r = relay.post("/upload", data=body(), timeout=60)
    assert r.status_code == 200, r.text
    whole = b"".join(sent)
    assert r.json() == {"bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    r = relay.post("/upload", data=b"x" * 2048, timeout=60)
    assert r.status_code == 413
