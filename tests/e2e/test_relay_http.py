"""The relay with plain HTTP clients: curl GET and POST, header rewriting, the token, the
attestation header, pipelining, 100-continue and server-sent events (BRIEF §6, §7)."""
import hashlib
import json
import socket
import subprocess
import time

import pytest

CURL = ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "30"]


def curl(*args):
    r = subprocess.run(CURL + list(args), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def test_curl_get_is_attested_then_relayed(relay):
    out = json.loads(curl(relay.url + "/echo?x=1"))
    assert out["method"] == "GET"
    assert out["path"] == "/echo?x=1"
    # Host is rewritten to the upstream authority.
    assert out["headers"]["host"] == f"127.0.0.1:{relay.sim.port}"
    log = relay.sim.requests()
    assert [r["evidence"] for r in log] == [True, False]
    # The evidence went over the very connection that then carried the request.
    assert log[0]["conn"] == log[1]["conn"] and log[0]["pin"] == log[1]["pin"]
    assert log[0]["path"].startswith("/.well-known/nitro-attestation?nonce=")
    nonce = log[0]["path"].split("nonce=", 1)[1]
    assert len(nonce) == 64 and nonce == nonce.lower() and int(nonce, 16) >= 0


def test_curl_post_body_arrives_intact(relay):
    body = bytes(range(256)) * 1000
    out = json.loads(curl_post(relay.url + "/echo", body))
    assert out["method"] == "POST"
    assert out["body_bytes"] == len(body)
    assert out["body_sha256"] == hashlib.sha256(body).hexdigest()


def curl_post(url, body, *extra):
    r = subprocess.run(CURL + ["-X", "POST", "--data-binary", "@-", "-H",
                               "Content-Type: application/octet-stream", *extra, url],
                       input=body, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def test_chunked_post_and_expect_100_continue(relay):
    body = b"z" * (2 << 20)
    out = json.loads(curl_post(relay.url + "/upload", body, "-H", "Transfer-Encoding: chunked",
                               "-H", "Expect: 100-continue"))
    assert out == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_hop_by_hop_and_forwarded_headers_are_removed(relay):
    r = relay.get("/echo", headers={
        "Connection": "keep-alive, X-Hop-Only",
        "X-Hop-Only": "secret",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Host": "evil.example",
        "Forwarded": "for=203.0.113.9",
        "X-Kept": "yes",
        "Authorization": "Bearer sk-for-the-enclave",
    })
    assert r.status_code == 200
    h = r.json()["headers"]
    for name in ("x-hop-only", "keep-alive", "te", "proxy-authorization", "x-forwarded-for",
                 "x-forwarded-host", "forwarded", "upgrade", "proxy-connection"):
        assert name not in h, name
    assert h["x-kept"] == "yes"
    # Without a daemon token, the client's own Authorization is the enclave's business.
    assert h["authorization"] == "Bearer sk-for-the-enclave"


def test_keep_forwarded(start_relay):
    relay = start_relay(extra_service="keep_forwarded = yes\n")
    h = relay.get("/echo", headers={"X-Forwarded-For": "203.0.113.9"}).json()["headers"]
    assert h["x-forwarded-for"] == "203.0.113.9"


def test_token_is_required_checked_and_stripped(start_relay):
    token = "tok-0123456789abcdef-xyz"
    relay = start_relay(extra_service=f"token = {token}\n")
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                    {"Authorization": f"Basic {token}"}):
        r = relay.get("/echo", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.json()["error"]["service"] == "demo"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert relay.app_requests() == []
    r = relay.get("/echo", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert "authorization" not in r.json()["headers"]
    # The token never appears in the log.
    assert token not in relay.daemon.log()


def test_attestation_header(start_relay):
    relay = start_relay(extra_service="attestation_header = yes\n")
    r = relay.get("/echo")
    assert r.status_code == 200
    fields = dict(kv.strip().split("=", 1) for kv in r.headers["X-Attestation"].split(";"))
    assert fields["pin"] == "sha256:" + relay.sim.requests()[-1]["pin"]
    assert fields["pcr0"] == relay.sim.pcrs["pcr0"]
    assert fields["verified_at"].endswith("Z")
    # Off by default.
    assert "X-Attestation" not in start_relay().get("/echo").headers


FORGED = "pin=sha256:" + "ab" * 32 + "; pcr0=" + "00" * 48 + "; verified_at=2030-01-01T00:00:00Z"


@pytest.mark.parametrize("header_on", [True, False])
def test_the_enclave_cannot_spoof_x_attestation(start_relay, header_on):
    """X-Attestation is the daemon's own header: one the enclave sends is removed (any case or
    '_' spelling), so the client sees only the daemon's, or none when it is off."""
    relay = start_relay(extra_service=f"attestation_header = {'yes' if header_on else 'no'}\n")
    relay.sim.misbehave("raw_response", end="keep", count=1,
                        data=f"HTTP/1.1 200 OK\r\nX-Attestation: {FORGED}\r\n"
                             f"x_attestation: {FORGED}\r\nContent-Length: 2\r\n\r\nok")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head = out.split(b"\r\n\r\n", 1)[0].decode().lower()
    lines = [l for l in head.split("\r\n") if l.startswith(("x-attestation:", "x_attestation:"))]
    assert FORGED.lower() not in head
    if header_on:
        assert len(lines) == 1, head
        assert lines[0].startswith("x-attestation: pin=sha256:" + relay.sim.requests()[-1]["pin"])
    else:
        assert lines == [], head


def test_pipelined_requests_are_answered_in_order(relay):
    reqs = b"".join(f"GET /echo?n={i} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
                    for i in range(5))
    reqs += b"GET /echo?n=last HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as s:
        s.sendall(reqs)
        data = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    paths = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["path"]
             for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert paths == [f"/echo?n={i}" for i in range(5)] + ["/echo?n=last"]


def test_server_sent_events_flow_event_by_event(start_relay):
    relay = start_relay()
    with relay.session() as s:
        r = s.get(relay.url + "/sse?events=5&interval=400", stream=True, timeout=30)
        assert r.status_code == 200
        arrivals = []
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                ev = json.loads(line[6:])
                arrivals.append((ev["seq"], ev["sent_at"], time.time()))
    assert [a[0] for a in arrivals] == list(range(5))
    # Each event reached us before the simulator sent the next one (400 ms later).
    for (seq, sent, got), (_, next_sent, _) in zip(arrivals, arrivals[1:]):
        assert got < next_sent, f"event {seq} arrived {got - sent:.3f}s after it was sent"


def test_head_request(relay):
    with relay.session() as s:
        r = s.head(relay.url + "/download?bytes=12345", timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "12345"
    assert r.content == b""
