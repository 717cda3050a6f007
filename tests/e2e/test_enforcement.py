"""Live enforcement on running traffic (BRIEF §3-§5, docs/enforcement.md): refresh cycles that
never stall a request, a policy change by SIGHUP or by editing the policy file that cuts an SSE
stream within a second and is undone by the next change, every binding end to end, a replayed
document on a profile without a nonce, and a TTL lapse while the evidence endpoint fails.

Timings are measured and printed (pytest -s shows them); the asserted bounds leave room for the
sanitizer build, which runs this file too."""
import os
import pathlib
import re
import signal
import statistics
import threading
import time

import pytest
import requests

from conftest import free_port
from proxy_fixtures import on_demand, Relay, wait_listening, wait_until
from simulator import service_config

WRONG_PCR0 = "ab" * 48


@pytest.fixture
def start_relay(start_relay):
    return on_demand(start_relay)  # these tests count the attestations requests make


def evidence_times(relay):
    return [r["t"] for r in relay.evidence_requests()]


class SseStream:
    """A chat-free SSE stream through the relay, in a thread: when each event arrived and when
    the stream ended (cleanly or cut)."""

    def __init__(self, relay, events=50, interval_ms=100):
        self.relay = relay
        self.path = f"/sse?events={events}&interval={interval_ms}"
        self.events = []
        self.ended_at = None
        self.error = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        try:
            with self.relay.session() as s:
                r = s.get(self.relay.url + self.path, stream=True, timeout=30)
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith(b"data: "):
                        self.events.append(time.monotonic())
        except (requests.RequestException, AssertionError) as e:
            self.error = e
        finally:
            self.ended_at = time.monotonic()

    def wait_events(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.events) >= n, f"only {len(self.events)} events"

    def join(self, timeout=15):
        self._t.join(timeout)
        assert not self._t.is_alive(), "the stream was not cut"


def wrong_policy(text):
    changed = re.sub(r"pcr0=[0-9a-f]{96}", "pcr0=" + WRONG_PCR0, text, count=1)
    assert changed != text
    return changed


def assert_refused_as_failed(relay):
    """New requests are refused with 502 attestation_failed and relay nothing."""
    relayed = len(relay.app_requests())
    for _ in range(2):
        r = relay.get("/echo")
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["code"] == "attestation_failed"
        assert "pcrs match no measurement set" in err["message"]
    assert len(relay.app_requests()) == relayed


def test_requests_continue_across_three_refresh_cycles(start_relay):
    relay = start_relay(extra_service="attestation_ttl = 2s\nrefresh_before = 1s\n")
    latencies = []
    statuses = []
    t_end = time.monotonic() + 7.0
    with relay.session() as s:
        while time.monotonic() < t_end and len(latencies) < 2000:
            t0 = time.monotonic()
            r = s.get(relay.url + "/echo", timeout=10)
            latencies.append(time.monotonic() - t0)
            statuses.append(r.status_code)
            time.sleep(0.02)
    ev = evidence_times(relay)
    lat = sorted(latencies)
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    print(f"\n{len(lat)} requests over 7 s, {len(ev)} attestations: "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
    assert set(statuses) == {200}
    # The first attestation plus at least three refreshes, one per second of refresh window.
    assert len(ev) >= 4
    gaps = [b - a for a, b in zip(ev, ev[1:])]
    assert all(g < 2.0 for g in gaps), gaps
    # No pin ever lapsed: every refresh happened before expiry, over an idle connection.
    log = relay.daemon.log()
    assert "event=pin_expired" not in log
    assert "event=pin_dropped" not in log
    # No request waited for an attestation: the slowest is far below an inline one plus
    # handshake would be under load, and the median is unaffected by the refreshes.
    assert lat[-1] < 1.0
    assert statistics.median(latencies) < 0.1


def test_sighup_policy_change_cuts_sse_within_a_second_and_back_restores(start_relay):
    relay = start_relay(extra_service="negative_cache = 0s\n")
    conf = relay.daemon.conf_path
    good = conf.read_text()
    stream = SseStream(relay, events=100, interval_ms=100)
    stream.wait_events(3)
    conf.write_text(wrong_policy(good))
    t_signal = time.monotonic()
    relay.daemon.signal(signal.SIGHUP)
    stream.join()
    cut_after = stream.ended_at - t_signal
    print(f"\nSSE stream cut {cut_after * 1000:.0f} ms after SIGHUP, "
          f"after {len(stream.events)} of 100 events")
    assert cut_after < 1.0
    assert len(stream.events) < 100
    assert "exchanges_aborted=1" in relay.daemon.wait_log("event=policy_enforced")
    assert_refused_as_failed(relay)

    mark = len(relay.daemon.log())
    conf.write_text(good)
    relay.daemon.signal(signal.SIGHUP)
    relay.daemon.wait_log("event=reload_applied", start=mark)
    r = relay.get("/echo")
    assert r.status_code == 200, r.text


def write_atomically(path, text):
    """As editors and configuration management do: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.rename(tmp, path)


def test_policy_file_edit_cuts_sse_without_a_signal_and_restore_brings_service_back(
        start_daemon, start_sim, tmp_path):
    sim = start_sim()
    policy = tmp_path / "policy" / "enclave.conf"
    policy.parent.mkdir()
    policy.write_text("[policy]\n" + sim.measurement())
    port = free_port()
    # The service takes its measurements from the watched file instead of inline keys.
    text = service_config(sim, port, f"policy_file = {policy}\nnegative_cache = 0s\n"
                                     "warm_attestation = no\n")
    text = text.replace(sim.measurement(), "")
    relay = Relay(start_daemon(text), sim, port)
    wait_listening(port)
    assert relay.get("/echo").status_code == 200

    good = policy.read_text()
    stream = SseStream(relay, events=100, interval_ms=100)
    stream.wait_events(3)
    mark = len(relay.daemon.log())
    t_edit = time.monotonic()
    write_atomically(policy, wrong_policy(good))
    stream.join()
    cut_after = stream.ended_at - t_edit
    print(f"\nSSE stream cut {cut_after * 1000:.0f} ms after the policy file was replaced")
    assert cut_after < 1.0
    log = relay.daemon.wait_log("event=policy_enforced", start=mark)
    assert "event=policy_file_changed" in log[mark:]
    assert_refused_as_failed(relay)

    mark = len(relay.daemon.log())
    write_atomically(policy, good)
    relay.daemon.wait_log("event=reload_applied", start=mark)
    r = relay.get("/echo")
    assert r.status_code == 200, r.text


BINDINGS = ("spki_sha256", "public_key_spki", "spki_der", "cert_sha256", "nitriding", "blindai")


@pytest.mark.parametrize("binding", BINDINGS)
def test_each_binding_end_to_end(start_relay, binding):
    relay = start_relay(extra_service=f"binding = {binding}\n",
                        sim_args=("--binding", binding, "--profile", "native"))
    r = relay.get("/echo")
    assert r.status_code == 200, r.text
    assert len(relay.evidence_requests()) == 1
    assert relay.app_requests()[0]["conn"] == relay.evidence_requests()[0]["conn"]
    assert "verdict=verified" in relay.daemon.log()


@pytest.mark.parametrize("served,expected", [("spki_der", "spki_sha256"),
                                             ("spki_sha256", "public_key_spki"),
                                             ("cert_sha256", "spki_sha256")])
def test_mismatched_binding_is_refused(start_relay, served, expected):
    relay = start_relay(extra_service=f"binding = {expected}\n",
                        sim_args=("--binding", served, "--profile", "native"))
    r = relay.get("/echo")
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "attestation_failed"
    assert relay.app_requests() == []
    assert "verdict=rejected" in relay.daemon.log()


def test_replayed_document_older_than_max_age_is_refused_without_a_nonce(start_relay):
    relay = start_relay(extra_service="profile = blindai\nmax_age = 60s\nnegative_cache = 0s\n",
                        sim_args=("--profile", "blindai"))
    relay.sim.misbehave("replay_old", age_s=120)
    r = relay.get("/echo")
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "attestation_failed"
    assert "old" in err["message"] or "age" in err["message"], err["message"]
    assert relay.app_requests() == []
    line = [l for l in relay.daemon.log().splitlines() if "event=attestation " in l][-1]
    assert "verdict=rejected" in line and 'freshness="max_age only' in line
    # The same enclave with a document inside max_age is accepted.
    relay.sim.misbehave(None)
    assert relay.get("/echo").status_code == 200


def test_ttl_lapse_while_evidence_fails_lets_the_stream_finish_and_refuses_new_requests(
        start_relay):
    relay = start_relay(extra_service="attestation_ttl = 3s\nrefresh_before = 2s\n"
                                      "negative_cache = 10s\n")
    assert relay.get("/echo").status_code == 200
    verified = time.monotonic()
    relay.sim.misbehave("evidence_500")
    # A stream that outlives the pin: it started while the pin was fresh and may finish. A
    # second connection to the same key goes idle in the pool: the refresh tries it at 1 s.
    stream = SseStream(relay, events=30, interval_ms=100)
    stream.wait_events(1)
    assert relay.get("/echo").status_code == 200
    stream.join(timeout=15)
    assert stream.error is None
    assert len(stream.events) == 30
    assert stream.ended_at - verified > 3.0  # it ran past the expiry
    log = relay.daemon.wait_log("event=pin_expired")
    assert "reason=ttl_lapsed" in log
    assert "event=pin_dropped" not in log  # unavailable evidence is no rejection
    # The refresh obtained no evidence: the pin kept its life and nothing was cut.
    assert len(relay.evidence_requests()) >= 2
    r = relay.get("/echo")
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "attestation_unavailable"
    assert int(r.headers["Retry-After"]) >= 1


def test_rejected_reattestation_cuts_a_stream_whose_pin_had_already_lapsed(start_relay):
    """BRIEF §5: a key that fails re-attestation is cut everywhere, in-flight exchanges
    included — also when its pin lapsed while they ran (no refresh could run: refresh_before
    is 0) and was swept from the set before the failing attestation."""
    relay = start_relay(extra_service="attestation_ttl = 2s\nrefresh_before = 0s\n"
                                      "negative_cache = 0s\n")
    assert relay.get("/echo").status_code == 200
    stream = SseStream(relay, events=80, interval_ms=100)
    stream.wait_events(1)
    relay.daemon.wait_log("event=pin_expired", timeout=10)
    assert stream.ended_at is None  # a lapse lets the exchange go on
    relay.sim.misbehave("wrong_pcrs")
    t_refused = time.monotonic()
    r = relay.get("/echo")
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "attestation_failed"
    stream.join()
    print(f"\nstream cut {(stream.ended_at - t_refused) * 1000:.0f} ms after the rejection, "
          f"after {len(stream.events)} of 80 events")
    assert len(stream.events) < 80
    assert stream.ended_at - t_refused < 1.0
    log = relay.daemon.wait_log("event=pin_dropped")
    line = [l for l in log.splitlines() if "event=pin_dropped" in l][-1]
    assert "reason=reattestation_failed" in line and "connections_cut=1" in line, line


def test_a_first_attestation_refused_logs_no_dropped_pin(start_relay):
    relay = start_relay(extra_service="negative_cache = 0s\n")
    relay.sim.misbehave("wrong_pcrs")
    assert relay.get("/echo").status_code == 502
    assert "verdict=rejected" in relay.daemon.log()
    assert "event=pin_dropped" not in relay.daemon.log()


def test_the_trust_root_is_compared_by_content_on_reload(start_daemon, start_sim, tmp_path):
    """A reload reads root_ca afresh: the same root under another path changes nothing; another
    root written over the configured file drops every pin and cuts the streams attested under
    the old one, and requests are refused until the enclave's chain leads to the root again."""
    sim = start_sim()
    other = start_sim()  # another test PKI: its root signed nothing this enclave presents
    original = pathlib.Path(sim.root).read_bytes()
    trust = tmp_path / "trust.pem"
    trust.write_bytes(original)
    port = free_port()
    text = service_config(sim, port, "negative_cache = 0s\nwarm_attestation = no\n").replace(
        f"root_ca = {sim.root}", f"root_ca = {trust}")
    relay = Relay(start_daemon(text), sim, port)
    wait_listening(port)
    conf = relay.daemon.conf_path
    assert relay.get("/echo").status_code == 200

    # The same certificate at another path: no change, the pin stays, nothing re-attests.
    copy = tmp_path / "trust-copy.pem"
    copy.write_bytes(original)
    mark = len(relay.daemon.log())
    conf.write_text(conf.read_text().replace(f"root_ca = {trust}", f"root_ca = {copy}"))
    relay.daemon.signal(signal.SIGHUP)
    relay.daemon.wait_log("event=reload_applied", start=mark)
    assert relay.get("/echo").status_code == 200
    assert len(relay.evidence_requests()) == 1
    assert "event=trust_root_changed" not in relay.daemon.log()

    # Another root written over the configured file, same path: everything attested is cut.
    stream = SseStream(relay, events=100, interval_ms=100)
    stream.wait_events(2)
    mark = len(relay.daemon.log())
    copy.write_bytes(pathlib.Path(other.root).read_bytes())
    t_signal = time.monotonic()
    relay.daemon.signal(signal.SIGHUP)
    stream.join()
    print(f"\nSSE stream cut {(stream.ended_at - t_signal) * 1000:.0f} ms after the reload")
    assert stream.ended_at - t_signal < 1.0
    log = relay.daemon.wait_log("event=policy_enforced", start=mark)
    assert "event=trust_root_changed" in log[mark:]
    enforced = [l for l in log[mark:].splitlines() if "event=policy_enforced" in l][-1]
    assert "reason=trust_root_changed" in enforced and "exchanges_aborted=1" in enforced
    relayed = len(relay.app_requests())
    r = relay.get("/echo")
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "attestation_failed"
    assert len(relay.app_requests()) == relayed

    # The enclave's own root back: served again after a fresh attestation.
    mark = len(relay.daemon.log())
    copy.write_bytes(original)
    relay.daemon.signal(signal.SIGHUP)
    relay.daemon.wait_log("event=reload_applied", start=mark)
    assert "event=trust_root_changed" in relay.daemon.log()[mark:]
    assert relay.get("/echo").status_code == 200


def test_an_attestation_in_flight_across_a_policy_change_is_discarded_and_redone(start_relay):
    """The evidence requested under the old settings is not judged by the new ones: the
    attestation running when the policy changes is discarded, and the waiting request attests
    again on a new connection and is served."""
    relay = start_relay(extra_service="negative_cache = 0s\n")
    conf = relay.daemon.conf_path
    relay.sim.misbehave("evidence_delay", seconds=1.5)
    result = {}

    def request():
        result["r"] = relay.get("/echo", timeout=20)

    t = threading.Thread(target=request, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not relay.evidence_requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(relay.evidence_requests()) == 1
    relay.sim.misbehave(None)  # the next evidence request is answered at once
    mark = len(relay.daemon.log())
    # A second measurement set: the policy changes and still admits this enclave.
    conf.write_text(conf.read_text().replace(
        "[service demo]\n", f"[service demo]\nmeasurement = pcr0={WRONG_PCR0}\n", 1))
    relay.daemon.signal(signal.SIGHUP)
    relay.daemon.wait_log("event=policy_enforced", start=mark)
    t.join(20)
    assert not t.is_alive()
    assert result["r"].status_code == 200, result["r"].text
    log = relay.daemon.log()[mark:]
    assert "reason=configuration_changed" in log
    assert len(relay.evidence_requests()) == 2
    assert len(relay.app_requests()) == 1


def test_a_refresh_that_cannot_extend_the_pin_is_not_repeated_at_once(start_daemon, start_sim,
                                                                       tmp_path):
    """A pin whose expiry is bound by the NSM certificate (leaf_not_after - cert_margin), not by
    the TTL, stays inside its refresh window after a successful refresh: the same certificate
    gives the same expiry. The window opens while the only connection is busy; when that
    exchange ends the pin is refreshed once, then not again before the retry interval
    (negative_cache, 5 s) — before, every connection going idle re-attested it, ~1 000 times in
    3 s."""
    import datetime
    from cryptography import x509
    chain = tmp_path / "chain"
    sim = start_sim(chain_dir=chain)
    leaf = x509.load_pem_x509_certificate((chain / "leaf.crt.pem").read_bytes())
    leaf_end = leaf.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()
    opens_in = 3  # seconds until the pin's refresh window opens
    refresh_before = int(leaf_end - 3600 - time.time() - opens_in)
    port = free_port()
    relay = Relay(start_daemon(service_config(
        sim, port, f"attestation_ttl = 5h\ncert_margin = 1h\nrefresh_before = {refresh_before}s\n"
                   "first_byte_timeout = 60s\n")), sim, port)
    wait_listening(port)
    # The one connection stays busy across the opening of the window.
    assert relay.get(f"/slow?delay={opens_in + 2}").status_code == 200
    ended = len(relay.evidence_requests())
    time.sleep(0.5)
    for _ in range(20):  # connections going idle again and again
        assert relay.get("/echo").status_code == 200
    time.sleep(1.5)
    refreshes = len(relay.evidence_requests()) - ended
    print(f"\nevidence requests in the 2 s after the busy exchange ended: {refreshes}")
    assert refreshes <= 1
    assert relay.daemon.log().count("event=attestation ") <= 3


class SlowForwarder:
    """A TCP forwarder on loopback that holds each new connection for `hold_s` before joining it
    to `target_port`: a daemon connecting through it sits in its TLS handshake meanwhile."""

    def __init__(self, target_port, hold_s):
        import socket
        self.target_port, self.hold_s = target_port, hold_s
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.accepted = 0  # connections taken in (and held), for tests to wait on
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.accepted += 1
            def join(c=c):
                time.sleep(self.hold_s)
                u = socket.create_connection(("127.0.0.1", self.target_port))
                for a, b in ((c, u), (u, c)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()
            threading.Thread(target=join, daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        import socket
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.srv.close()


def test_a_connection_still_handshaking_when_the_upstream_moves_is_not_used(start_daemon,
                                                                          start_sim, tmp_path):
    """A reload moves the upstream from A to B while a connection to A is still in its TLS
    handshake (held 1 s by a forwarder). That connection would pass attestation — A satisfies
    the same policy — but never carries the request: it is closed at the gate, and the request
    goes to B over a new connection. Before, it was attested, served the request and was
    pooled, and A went on receiving traffic after the reload."""
    chain = tmp_path / "chain"
    a = start_sim(chain_dir=chain)
    b = start_sim(chain_dir=chain)  # the same test PKI and measurements: only the address moves
    fwd = SlowForwarder(a.port, hold_s=1.0)
    try:
        port = free_port()
        text = service_config(a, port, "negative_cache = 0s\nwarm_attestation = no\n").replace(
            f"upstream = 127.0.0.1:{a.port}", f"upstream = 127.0.0.1:{fwd.port}")
        daemon = start_daemon(text)
        wait_listening(port)
        relay = Relay(daemon, b, port)
        result = {}
        held_before = fwd.accepted
        t = threading.Thread(target=lambda: result.update(r=relay.get("/echo", timeout=20)),
                             daemon=True)
        t.start()
        # The daemon's connection to A is in the forwarder's hands, waiting for its handshake.
        wait_until(lambda: fwd.accepted > held_before, "the daemon's connection to A", timeout=5)
        mark = len(daemon.log())
        daemon.conf_path.write_text(text.replace(f"upstream = 127.0.0.1:{fwd.port}",
                                                 f"upstream = 127.0.0.1:{b.port}"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reason=upstream_changed", start=mark)
        t.join(20)
        assert result["r"].status_code == 200, result["r"].text
        for _ in range(3):
            assert relay.get("/echo").status_code == 200
        at_a = [r for r in a.requests() if not r["evidence"]]
        at_b = [r for r in b.requests() if not r["evidence"]]
        assert (len(at_a), len(at_b)) == (0, 4), (at_a, at_b)
        assert "the upstream settings changed while it was connecting" in daemon.log()[mark:]
    finally:
        fwd.close()


def test_an_upstream_change_is_enforced_when_the_policy_changes_too(start_daemon, start_sim,
                                                                   tmp_path):
    """One reload moves the upstream from A to B and adds a measurement set A still satisfies.
    The move is what counts: the exchanges in flight to A are cut and every later request goes
    to B. (Before, only the policy change was seen: the exchanges to A finished, their
    connections went back to the pool, and A went on receiving requests.)"""
    chain = tmp_path / "chain"
    a = start_sim(chain_dir=chain)
    b = start_sim(chain_dir=chain)
    port = free_port()
    text = service_config(a, port, "negative_cache = 0s\n")
    daemon = start_daemon(text)
    wait_listening(port)
    relay = Relay(daemon, b, port)
    results = []
    threads = [threading.Thread(target=lambda: results.append(relay.get("/slow?delay=3",
                                                                       timeout=20)),
                                daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len([r for r in a.requests() if r["path"].startswith("/slow")]) == 3,
               "three slow requests at A", timeout=10)
    mark = len(daemon.log())
    moved = text.replace(f"upstream = 127.0.0.1:{a.port}", f"upstream = 127.0.0.1:{b.port}")
    daemon.conf_path.write_text(moved + "measurement = pcr0=" + "33" * 48 + "\n")
    daemon.signal(signal.SIGHUP)
    log = daemon.wait_log("event=policy_enforced", start=mark)[mark:]
    assert "reason=upstream_changed" in log and "exchanges_aborted=3" in log, log
    for t in threads:
        t.join(20)
    # Each is cut (502), or — a GET whose reused connection was cut before any response byte —
    # retried, and then served by B.
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {200, 502}, [r.text for r in results]
    assert codes.count(200) == len([r for r in b.requests() if r["path"].startswith("/slow")])
    before = len([r for r in a.requests() if not r["evidence"]])
    for _ in range(4):
        assert relay.get("/echo").status_code == 200
    assert len([r for r in a.requests() if not r["evidence"]]) == before
    assert len([r for r in b.requests() if r["path"] == "/echo"]) == 4


def test_a_shorter_ttl_on_reload_applies_to_the_pins_already_attested(start_relay):
    relay = start_relay(extra_service="attestation_ttl = 1h\nrefresh_before = 0s\n")
    assert relay.get("/echo").status_code == 200
    time.sleep(1.2)
    conf = relay.daemon.conf_path
    mark = len(relay.daemon.log())
    conf.write_text(conf.read_text().replace("attestation_ttl = 1h", "attestation_ttl = 1s"))
    relay.daemon.signal(signal.SIGHUP)
    log = relay.daemon.wait_log("event=pins_shortened", start=mark)
    assert "pins=1" in log[mark:]
    assert "event=policy_enforced" not in log[mark:]  # nothing else changed: no pin dropped
    # The pin was verified over a second ago: under the new TTL it has expired, and the next
    # request attests afresh.
    assert relay.get("/echo").status_code == 200
    assert len(relay.evidence_requests()) == 2
