"""Attestation failures refuse traffic with the right JSON error, and the simulator proves that
no application request reached it (BRIEF §2, §6)."""
import json
import time
import urllib.request

import pytest

from conftest import free_port
from proxy_fixtures import on_demand


@pytest.fixture
def start_relay(start_relay):
    return on_demand(start_relay)  # these tests count the attestations requests make


# mode -> (status, code, fragment of the verifier's reason in the message)
REJECTIONS = {
    "wrong_pcrs": (502, "attestation_failed", "policy: pcrs match no measurement set"),
    "debug_pcrs": (502, "attestation_failed", "debug-mode"),
    "bad_signature": (502, "attestation_failed", "signature:"),
    "wrong_nonce": (502, "attestation_failed", "nonce"),
    "missing_nonce": (502, "attestation_failed", "nonce"),
    "replay_old": (502, "attestation_failed", "policy:"),
    "expired_leaf": (502, "attestation_failed", "chain:"),
    "garbage_evidence": (502, "attestation_failed", "attestation failed: "),
    "bind_other_key": (502, "attestation_failed", "binding:"),
    "evidence_500": (503, "attestation_unavailable", "HTTP 500"),
}


@pytest.mark.parametrize("mode", sorted(REJECTIONS))
def test_refused_with_json_error_and_nothing_relayed(start_relay, mode):
    status, code, fragment = REJECTIONS[mode]
    relay = start_relay()
    relay.sim.misbehave(mode)
    r = relay.post("/echo", data=b"must never reach the enclave")
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["service"] == "demo"
    assert fragment in err["message"], err["message"]
    assert r.headers["Content-Type"] == "application/json"
    # The pin is negative-cached: the next request is refused without asking the enclave.
    evidence_before = relay.sim.stats()["evidence_requests"]
    r2 = relay.get("/echo")
    assert r2.status_code == 503
    assert r2.json()["error"]["code"] == "attestation_unavailable"
    assert int(r2.headers["Retry-After"]) >= 1
    assert relay.sim.stats()["evidence_requests"] == evidence_before
    # No application request reached the simulator, on any key.
    assert relay.app_requests() == []
    assert relay.sim.stats()["app_requests"] == 0
    # One structured attestation event, with the verdict.
    line = [l for l in relay.daemon.log().splitlines() if "event=attestation " in l][0]
    assert ("verdict=rejected" if status == 502 else "verdict=error") in line
    assert "service=demo" in line and "pin=" in line


def test_recovers_after_negative_cache(start_relay):
    relay = start_relay(extra_service="negative_cache = 1s\n")
    relay.sim.misbehave("wrong_pcrs")
    assert relay.get("/echo").status_code == 502
    relay.sim.misbehave(None)
    assert relay.get("/echo").status_code == 503  # still negative-cached
    import time
    time.sleep(1.2)
    r = relay.get("/echo")
    assert r.status_code == 200
    assert len(relay.app_requests()) == 1


def test_unreachable_upstream(start_relay, start_sim):
    sim = start_sim()
    sim.stop()  # nothing listens on its port any more
    relay = start_relay(sim=sim)
    r = relay.get("/echo")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unreachable"


def test_an_enclave_that_goes_down_is_the_services_last_failure(start_relay):
    """While the pin stays fresh, requests to an enclave that went away get 502
    upstream_unreachable, and /attestation's last_failure says so (it stayed null)."""
    admin = free_port()
    relay = start_relay(extra_daemon=f"admin_listen = 127.0.0.1:{admin}\n")
    assert relay.get("/echo").status_code == 200
    relay.sim.stop()
    r = relay.get("/echo")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable", r.text
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/attestation", timeout=10) as a:
        svc = json.loads(a.read())["services"]["demo"]
    failure = svc["last_failure"]
    assert failure is not None, svc
    assert failure["verdict"] == "error" and failure["reason"] == "upstream_unreachable", failure
    assert "connection refused" in failure["message"], failure
    assert svc["ready"] is True  # the attested key is still in force


def test_an_interim_100_continue_keeps_first_byte_timeout(start_relay):
    """first_byte_timeout runs until the final response's head: a 100 Continue from the
    enclave does not swap it for the longer stream_idle_timeout."""
    relay = start_relay(extra_service="first_byte_timeout = 1s\nstream_idle_timeout = 10s\n")
    relay.sim.misbehave("raw_response", data="HTTP/1.1 100 Continue\r\n\r\n",
                        then="HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", delay_ms=4000,
                        end="keep", count=1)
    t0 = time.monotonic()
    r = relay.get("/echo")
    elapsed = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "upstream_timeout"
    assert "first_byte_timeout" in r.json()["error"]["message"]
    assert 0.9 < elapsed < 2.5, elapsed


def test_first_byte_timeout(start_relay):
    relay = start_relay(extra_service="first_byte_timeout = 500ms\n")
    relay.sim.misbehave("stall", seconds=5)
    r = relay.get("/echo")
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
