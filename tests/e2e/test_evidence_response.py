"""The evidence response as the daemon reads it (daemon/proxy/attest.c): the 64 KiB bound on its
body, with Content-Length and chunked, exactly at and one byte past the bound; and bytes after
the evidence response, which must never be taken for the answer to the next request."""
import pytest

from proxy_fixtures import on_demand


@pytest.fixture
def start_relay(start_relay):
    return on_demand(start_relay)  # these tests count the attestations requests make


BOUND = 64 * 1024
TOO_LARGE = "attestation unavailable: bad evidence response: the evidence response is larger than 64 KiB"


def attestation_line(relay):
    return [l for l in relay.daemon.log().splitlines() if "event=attestation " in l][-1]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_evidence_body_of_exactly_64_kib_is_verified(start_relay, chunked):
    # nitriding evidence is base64, in which whitespace is skipped: a valid document padded with
    # newlines to exactly 65 536 bytes is within the bound and verifies.
    relay = start_relay(extra_service="profile = nitriding\n",
                        sim_args=("--profile", "nitriding"))
    relay.sim.misbehave("evidence_pad", bytes=BOUND, pad="\n", chunked=chunked)
    r = relay.get("/echo")
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/echo"
    line = attestation_line(relay)
    assert "verdict=verified" in line and "reason=ok" in line
    assert relay.sim.stats()["evidence_requests"] == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_evidence_body_of_64_kib_plus_one_is_refused(start_relay, chunked):
    relay = start_relay(extra_service="profile = nitriding\nnegative_cache = 7s\n",
                        sim_args=("--profile", "nitriding"))
    relay.sim.misbehave("evidence_pad", bytes=BOUND + 1, pad="\n", chunked=chunked)
    r = relay.get("/echo")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "7"
    err = r.json()["error"]
    assert err["code"] == "attestation_unavailable"
    assert err["message"] == TOO_LARGE
    line = attestation_line(relay)
    assert "verdict=error" in line and "reason=evidence_too_large" in line
    assert relay.app_requests() == []


def test_evidence_body_of_exactly_64_kib_reaches_the_verifier(start_relay):
    # Raw CBOR cannot carry padding: the 65 536-byte body is read whole and handed to the
    # verifier, which refuses it on its content (a verdict: 502), not on its size (503).
    relay = start_relay(extra_service="profile = native\n", sim_args=("--profile", "native"))
    relay.sim.misbehave("evidence_pad", bytes=BOUND, pad="\0")
    r = relay.get("/echo")
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "attestation_failed"
    assert err["message"] == "attestation failed: envelope: document exceeds 16 KiB"
    line = attestation_line(relay)
    assert "verdict=rejected" in line and "reason=envelope_document_too_large" in line


@pytest.mark.parametrize("record", ["same", "next"])
def test_bytes_after_the_evidence_response_never_reach_a_client(start_relay, record):
    # "same": the extra bytes share the evidence response's TLS record, so the response parser
    # sees them; "next": they are a record of their own, received but not yet decrypted.
    relay = start_relay()
    relay.sim.misbehave("evidence_trailing", record=record)
    with relay.session() as s:
        first = s.get(relay.url + "/echo?n=1", timeout=30)
        second = s.get(relay.url + "/echo?n=2", timeout=30)
    for r, n in ((first, 1), (second, 2)):
        assert r.status_code == 200, r.text
        assert b"SMUGGLED" not in r.content
        assert r.json()["path"] == f"/echo?n={n}"
    log = relay.sim.requests()
    assert [(e["evidence"], e["path"].split("?")[0]) for e in log] == [
        (True, "/.well-known/nitro-attestation"), (False, "/echo"), (False, "/echo")]
    evidence_conn = log[0]["conn"]
    # The connection the evidence came over carried nothing else: the request that waited for
    # the attestation went over a new connection (the pin was attested by then), and the next
    # one over that same new connection from the pool.
    assert log[1]["conn"] != evidence_conn
    assert log[2]["conn"] == log[1]["conn"]
    assert relay.sim.stats()["connections"] == 2
    assert "verdict=verified" in attestation_line(relay)
    relay.daemon.wait_log('why="evidence response ended the connection"')
