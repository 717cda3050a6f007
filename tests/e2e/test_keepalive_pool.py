"""Keep-alive on both sides: a Python requests session sends 1000 requests one after another;
they reuse pooled upstream connections and the enclave's key is attested once."""
import time


def test_thousand_sequential_requests_attest_once(relay):
    start = time.monotonic()
    with relay.session() as s:
        for i in range(1000):
            r = s.get(f"{relay.url}/echo?i={i}", timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["path"] == f"/echo?i={i}"
            assert time.monotonic() - start < 120, f"too slow: {i} requests"
    stats = relay.sim.stats()
    assert stats["app_requests"] == 1000
    # One evidence request per pin, and the pooled connection carried everything.
    log = relay.sim.requests()
    pins = {r["pin"] for r in log}
    assert stats["evidence_requests"] == len(pins) == 1
    assert stats["connections"] == 1
    assert relay.daemon.log().count("event=attestation ") == 1
    assert relay.daemon.log().count("reused=yes") >= 999


def test_pool_is_reused_across_client_connections(relay):
    for i in range(20):
        # A new client connection each time (no session): the upstream side stays pooled.
        assert relay.get(f"/echo?c={i}").status_code == 200
    stats = relay.sim.stats()
    assert stats["connections"] == 1
    assert stats["evidence_requests"] == 1
