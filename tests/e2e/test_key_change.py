"""A restarted or re-keyed enclave is a new pin: no request is written to a connection whose key
was not attested first, whether the connection is new or pooled (BRIEF §2.1, §3)."""
import time

from simulator import Simulator


def assert_every_app_request_followed_attestation(log):
    """Each application request went over a connection whose key had already been attested
    over that same connection or an earlier one."""
    attested = {}
    for r in sorted(log, key=lambda r: r["t"]):
        if r["evidence"]:
            attested.setdefault(r["pin"], r["t"])
        else:
            assert r["pin"] in attested, f"request {r['path']} reached unattested key {r['pin']}"
            assert attested[r["pin"]] <= r["t"]


def test_rotated_key_is_attested_before_use(relay):
    assert relay.get("/echo?n=1").status_code == 200
    old_pin = relay.sim.requests()[0]["pin"]
    relay.sim.rotate_key()
    # Two requests at once: one takes the pooled connection (old key, still attested), the
    # other needs a new connection, which meets the new key.
    with relay.session() as a, relay.session() as b:
        import threading
        results = []

        def get(s, i):
            results.append(s.get(f"{relay.url}/slow?delay=0.5&n={i}", timeout=30).status_code)

        t = [threading.Thread(target=get, args=(s, i)) for i, s in enumerate((a, b))]
        for x in t:
            x.start()
        for x in t:
            x.join(30)
    assert results == [200, 200]
    log = relay.sim.requests()
    pins = {r["pin"] for r in log}
    assert len(pins) == 2 and old_pin in pins
    new_pin = (pins - {old_pin}).pop()
    new_conn = [r for r in log if r["pin"] == new_pin]
    assert new_conn[0]["evidence"], "the first request on the new key was not an evidence request"
    assert_every_app_request_followed_attestation(log)


def test_restarted_enclave_pooled_connection_never_carries_traffic_unattested(start_relay,
                                                                              tmp_path):
    relay = start_relay()
    with relay.session() as s:
        assert s.get(relay.url + "/echo?before").status_code == 200
        old_pin = relay.sim.requests()[0]["pin"]
        port = relay.sim.port
        chain = tmp_path / "sim0" / "chain"
        # The enclave restarts with a new TLS key on the same address; the daemon still holds
        # the old connection in its pool.
        relay.sim.stop()
        sim2 = Simulator(chain, "--listen", f"127.0.0.1:{port}", log_path=tmp_path / "sim2.log")
        try:
            relay.sim = sim2
            time.sleep(0.2)
            for i in range(3):
                r = s.get(f"{relay.url}/echo?after={i}", timeout=30)
                assert r.status_code == 200, r.text
            log = sim2.requests()
            assert log[0]["evidence"], "traffic reached the restarted enclave before attestation"
            assert all(r["pin"] != old_pin for r in log)
            assert_every_app_request_followed_attestation(log)
            assert sim2.stats()["evidence_requests"] == 1
        finally:
            sim2.stop()
    daemon_log = relay.daemon.log()
    assert daemon_log.count("event=attestation ") == 2
