"""The attested key set over time (BRIEF §3, §5): refresh before expiry over an idle pooled
connection, a policy change on reload, and a failed re-attestation cutting the key's
connections."""
import re
import signal
import threading
import time

import pytest
import requests

from proxy_fixtures import on_demand, wait_until


@pytest.fixture
def start_relay(start_relay):
    return on_demand(start_relay)  # these tests count the attestations requests make


def evidence_on(relay):
    return [r for r in relay.sim.requests() if r["evidence"]]


def test_refresh_before_expiry_over_the_idle_connection(start_relay):
    relay = start_relay(extra_service="attestation_ttl = 3s\nrefresh_before = 2s\n")
    assert relay.get("/echo?n=1").status_code == 200
    first = relay.sim.requests()
    conn, pin = first[0]["conn"], first[0]["pin"]
    # The pin enters its refresh window 1 s after attestation: it is re-attested over the idle
    # pooled connection, without a request asking for it.
    deadline = time.monotonic() + 5
    while len(evidence_on(relay)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    ev = evidence_on(relay)
    assert len(ev) >= 2
    assert all(e["conn"] == conn and e["pin"] == pin for e in ev)
    # After the original expiry, traffic still flows without an inline attestation.
    time.sleep(max(0, first[0]["t"] + 3.2 - time.time()))
    n_before = len(evidence_on(relay))
    t0 = time.monotonic()
    assert relay.get("/echo?n=2").status_code == 200
    assert time.monotonic() - t0 < 1
    app = relay.app_requests()
    assert app[-1]["conn"] == conn
    # No evidence request was needed by that request itself.
    ev_after = [e for e in evidence_on(relay)[n_before:] if e["t"] < app[-1]["t"]]
    assert ev_after == [] or ev_after[-1]["t"] < app[-1]["t"] - 0.5


def test_policy_change_on_reload_drops_pins(start_relay):
    relay = start_relay()
    assert relay.get("/echo").status_code == 200
    conf = relay.daemon.conf_path
    good = conf.read_text()
    wrong = re.sub(r"measurement = pcr0=[0-9a-f]{96}", "measurement = pcr0=" + "ab" * 48, good)
    assert wrong != good
    mark = len(relay.daemon.log())
    conf.write_text(wrong)
    relay.daemon.signal(signal.SIGHUP)
    relay.daemon.wait_log("event=policy_enforced", start=mark)
    # The pin attested under the old policy is gone; the enclave fails the new one.
    r = relay.get("/echo")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "attestation_failed"
    assert "pcrs match no measurement set" in r.json()["error"]["message"]
    mark = len(relay.daemon.log())
    conf.write_text(good + "negative_cache = 0s\n")
    relay.daemon.signal(signal.SIGHUP)
    relay.daemon.wait_log("event=reload_applied", start=mark)
    assert relay.get("/echo").status_code == 200
    assert relay.sim.stats()["evidence_requests"] == 3
    assert len(relay.app_requests()) == 2


def test_policy_change_aborts_streams_that_no_longer_qualify(start_relay):
    relay = start_relay()
    got = []
    errors = []

    def stream():
        try:
            with relay.session() as s:
                r = s.get(relay.url + "/sse?events=30&interval=200", stream=True, timeout=30)
                for line in r.iter_lines():
                    if line.startswith(b"data: "):
                        got.append(line)
        except requests.RequestException as e:
            errors.append(e)

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(got) >= 3
    conf = relay.daemon.conf_path
    conf.write_text(re.sub(r"measurement = pcr0=[0-9a-f]{96}", "measurement = pcr0=" + "ab" * 48,
                           conf.read_text()))
    relay.daemon.signal(signal.SIGHUP)
    t.join(15)
    assert not t.is_alive()
    # The stream was cut well before its 30 events: the enclave no longer satisfies the policy.
    assert len(got) < 30
    relay.daemon.wait_log("exchanges_aborted=1")


def test_failed_reattestation_cuts_connections_of_the_key(start_relay):
    relay = start_relay(extra_service="attestation_ttl = 4s\nrefresh_before = 3s\n")
    got = []

    def stream():
        try:
            with relay.session() as s:
                r = s.get(relay.url + "/sse?events=40&interval=200", stream=True, timeout=30)
                for line in r.iter_lines():
                    if line.startswith(b"data: "):
                        got.append(line)
        except requests.RequestException:
            pass

    # Two connections to the same key: one streams, the other goes idle in the pool.
    t = threading.Thread(target=stream)
    t.start()
    wait_until(lambda: got, "the stream's first event")  # its connection is busy from now on
    assert relay.get("/echo").status_code == 200
    relay.sim.misbehave("wrong_pcrs")
    # At 1 s the refresh over the idle connection fails: the pin is dropped and the stream cut.
    t.join(15)
    assert not t.is_alive()
    assert len(got) < 40
    log = relay.daemon.wait_log("event=pin_dropped")
    assert "verdict=rejected" in log
    r = relay.get("/echo")
    assert r.status_code in (502, 503)
