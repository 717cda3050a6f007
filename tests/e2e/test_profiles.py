"""Every evidence profile of BRIEF §4 against the simulator, and several enclaves behind one
address (a load balancer): each key is attested on first sight, over its own connection."""
import re
import threading

import pytest

PROFILES = {
    # profile: (evidence path prefix, nonce hex digits or None, log freshness)
    "native": ("/.well-known/nitro-attestation?nonce=", 64, "freshness=nonce"),
    "nitriding": ("/enclave/attestation?nonce=", 40, "freshness=nonce"),
    "blindai": ("/enclave/attestation", None, 'freshness="max_age only'),
    "evervault": ("/.well-known/attestation", None, 'freshness="max_age only'),
}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile(start_relay, profile):
    path, nonce_hex, freshness = PROFILES[profile]
    relay = start_relay(extra_service=f"profile = {profile}\n")
    r = relay.get("/echo")
    assert r.status_code == 200, r.text
    ev = relay.evidence_requests()
    assert len(ev) == 1
    assert ev[0]["path"].startswith(path)
    if nonce_hex is None:
        assert "nonce" not in ev[0]["path"]
    else:
        nonce = ev[0]["path"].split("nonce=", 1)[1]
        assert re.fullmatch(f"[0-9a-f]{{{nonce_hex}}}", nonce)
    assert relay.app_requests()[0]["conn"] == ev[0]["conn"]
    line = [l for l in relay.daemon.log().splitlines() if "event=attestation " in l][0]
    assert "verdict=verified" in line and freshness in line


def test_several_enclaves_behind_one_address(start_relay):
    relay = start_relay(sim_args=("--keys", "3"))
    errors = []

    def burst(i):
        try:
            with relay.session() as s:
                for j in range(5):
                    assert s.get(f"{relay.url}/slow?delay=0.2&i={i}&j={j}",
                                 timeout=30).status_code == 200
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    log = relay.sim.requests()
    pins = {r["pin"] for r in log}
    assert len(pins) == 3
    attested_first = {}
    for r in sorted(log, key=lambda r: r["t"]):
        if r["evidence"]:
            attested_first.setdefault(r["pin"], r["t"])
        else:
            assert r["pin"] in attested_first, "traffic reached a key before its attestation"
    # Every key was attested, each over connections that presented it.
    assert set(attested_first) == pins


def test_native_session_refuses_a_document_not_bound_to_the_session(start_relay):
    """native-session sends ?session_nonce=; a document whose user_data names the key alone —
    what any plain native request yields, whatever nonce a relay holding the key asks for — is
    refused, and nothing reaches the enclave's application."""
    relay = start_relay(extra_service="profile = native-session\nnegative_cache = 0s\n")
    r = relay.get("/echo")
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "attestation_failed", err
    assert "user_data does not hash the peer key with this TLS session's exporter" in \
        err["message"], err
    ev = relay.evidence_requests()  # the warm attestation's too
    assert ev and all(re.fullmatch(r"/\.well-known/nitro-attestation\?session_nonce=[0-9a-f]{64}",
                                   e["path"]) for e in ev), ev
    assert relay.app_requests() == []
    line = [l for l in relay.daemon.log().splitlines() if "event=attestation " in l][0]
    assert "verdict=rejected" in line and 'freshness="nonce, bound to the TLS session"' in line
