"""The WebSocket client of bench/run's `websocket` scenario (docs/benchmarks.md, "WebSocket
tunnels"): messages echoed one at a time over one tunnel, and idle tunnels held open while the
daemon's memory is read. Python `websockets` (Debian python3-websockets).

bench/run runs the echo client as its own process, so that it can sit on the client's core:

    /usr/bin/python3 bench/wsclient.py echo URI MESSAGES SIZE    (prints its figures as JSON)

A wss:// URI is not verified: it is the `direct` contender, the client straight to the enclave
simulator over TLS with no attestation.
"""
import asyncio
import json
import ssl
import statistics
import sys
import time

import websockets

WARMUP = 100  # messages echoed before the measured ones (handshake, attestation, caches)


def client_ssl(uri):
    if not uri.startswith("wss:"):
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(uri):
    return websockets.connect(uri, ssl=client_ssl(uri), ping_interval=None, max_size=None,
                              open_timeout=30)


def latency_figures(lat_us, seconds):
    """msg/s and the median and 99th percentile of the per-message round trips (µs)."""
    s = sorted(lat_us)
    return {"messages": len(s), "msg_s": round(len(s) / seconds, 1),
            "p50_us": round(statistics.median(s), 1), "p99_us": round(s[int(len(s) * 0.99)], 1)}


async def echo(uri, n, size):
    """n messages of `size` bytes, each sent once the previous one came back."""
    msg = b"x" * size
    async with connect(uri) as ws:
        for _ in range(WARMUP):
            await ws.send(msg)
            await ws.recv()
        lat = []
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            await ws.send(msg)
            if await ws.recv() != msg:
                raise RuntimeError("the echo differs from the message")
            lat.append((time.perf_counter() - t) * 1e6)
        total = time.perf_counter() - t0
    return {**latency_figures(lat, total), "size": size, "warmup": WARMUP}


async def idle_tunnels(uri, n, rss_kib, first=20, batch=50):
    """Memory per idle tunnel: `first` tunnels opened (the daemon's one-off allocations), the
    daemon's RSS read (rss_kib()), the others opened in batches; every tunnel then echoes one
    message and all sit idle for a second before the RSS is read again. Closes them all."""
    held = [await connect(uri) for _ in range(first)]
    try:
        before = rss_kib()
        while len(held) < n:
            held += await asyncio.gather(*(connect(uri) for _ in range(min(batch, n - len(held)))))
        for ws in held:
            await ws.send("x")
        for ws in held:
            await ws.recv()
        await asyncio.sleep(1.0)
        after = rss_kib()
    finally:
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    return {"tunnels": n, "rss_before_kib": before, "rss_with_idle_kib": after,
            "kib_per_idle_tunnel": round((after - before) / (n - first), 2)}


def main(argv):
    if len(argv) != 4 or argv[0] != "echo":
        sys.exit("usage: wsclient.py echo URI MESSAGES SIZE")
    print(json.dumps(asyncio.run(echo(argv[1], int(argv[2]), int(argv[3])))))


if __name__ == "__main__":
    main(sys.argv[1:])
