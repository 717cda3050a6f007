"""The nonce of the profiles that carry one (BRIEF §2.4, §4): every attestation sends a fresh
random nonce of the profile's length, and a document that answered an earlier nonce — replayed
byte for byte, still well inside max_age, bound to the same key — is refused."""
import re

import pytest

from proxy_fixtures import on_demand


@pytest.fixture
def start_relay(start_relay):
    return on_demand(start_relay)  # these tests count the attestations requests make


# profile: (nonce bytes, evidence path prefix)
NONCE_PROFILES = {
    "native": (32, "/.well-known/nitro-attestation?nonce="),
    "nitriding": (20, "/enclave/attestation?nonce="),
}
ATTESTATIONS = 5


@pytest.mark.parametrize("profile", sorted(NONCE_PROFILES))
def test_each_attestation_sends_a_distinct_nonce(start_relay, profile):
    size, path = NONCE_PROFILES[profile]
    # Five keys behind the address and no pooling: each request opens a connection to the next
    # key, which the daemon has never seen, so each request attests its own connection.
    relay = start_relay(extra_service=f"profile = {profile}\npool_max_idle = 0\n",
                        sim_args=("--keys", str(ATTESTATIONS), "--profile", profile))
    for i in range(ATTESTATIONS):
        r = relay.get(f"/echo?i={i}")
        assert r.status_code == 200, r.text
    ev = relay.evidence_requests()
    assert len(ev) == ATTESTATIONS
    assert len({e["pin"] for e in ev}) == ATTESTATIONS
    assert len({e["conn"] for e in ev}) == ATTESTATIONS
    nonces = [e["nonce"] for e in ev]
    for e, nonce in zip(ev, nonces):
        assert e["path"] == path + nonce
        assert re.fullmatch(f"[0-9a-f]{{{2 * size}}}", nonce), nonce
    assert len(set(nonces)) == ATTESTATIONS, nonces
    # Not merely distinct: no two nonces share a half (a counter or a fixed prefix would).
    halves = [n[:size] for n in nonces] + [n[size:] for n in nonces]
    assert len(set(halves)) == 2 * ATTESTATIONS, nonces
    log = relay.daemon.log()
    assert log.count("verdict=verified") == ATTESTATIONS
    assert log.count("freshness=nonce") == ATTESTATIONS


@pytest.mark.parametrize("profile", sorted(NONCE_PROFILES))
def test_replayed_document_is_refused_by_its_nonce(start_relay, profile):
    size, path = NONCE_PROFILES[profile]
    extra = f"profile = {profile}\n"
    first = start_relay(extra_service=extra, sim_args=("--profile", profile))
    sim = first.sim
    assert first.get("/echo").status_code == 200
    original = first.evidence_requests()
    assert len(original) == 1
    first.daemon.stop()
    # A second daemon knows no pin: it attests the same key again, with a new nonce, and the
    # enclave answers with the first daemon's document — genuine, fresh (seconds old, max_age
    # is 5 minutes) and bound to this very key; only its nonce is not the one asked for.
    sim.reset()
    sim.misbehave("replay_document")
    relay = start_relay(extra_service=extra, sim=sim)
    r = relay.get("/echo")
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "attestation_failed"
    assert err["message"] == "attestation failed: policy: nonce does not match"
    ev = relay.evidence_requests()
    assert len(ev) == 1
    assert ev[0]["pin"] == original[0]["pin"]
    assert len(ev[0]["nonce"]) == 2 * size and ev[0]["nonce"] != original[0]["nonce"]
    assert relay.app_requests() == []
    line = [l for l in relay.daemon.log().splitlines() if "event=attestation " in l][-1]
    assert "verdict=rejected" in line and "reason=policy_nonce_mismatch" in line
    assert "freshness=nonce" in line
    # The same enclave answering the nonce it was sent is accepted.
    sim.misbehave(None)
    relay.daemon.stop()
    again = start_relay(extra_service=extra, sim=sim)
    assert again.get("/echo").status_code == 200
