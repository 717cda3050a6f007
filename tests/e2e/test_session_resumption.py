"""TLS session resumption is off unless configured (BRIEF §2.7).

A resumed session carries no certificate: it proves that the server holds the session-ticket
key (or the session cache), not the attested key. The hostile server here is the simulator
after `rotate-key` with share_tickets: the same OpenSSL context, so the same ticket key and
session cache, but a new certificate key X that is never attested (its evidence carries wrong
PCRs). Established connections are dropped, so every request after the swap needs a new one.
"""
import signal
import time

import pytest

from proxy_fixtures import Relay, wait_listening
from conftest import free_port
from simulator import service_config


def swap_to_unattested_key_sharing_tickets(sim):
    """Returns X's pin; from now on the simulator's evidence fails the policy."""
    pins = sim.control("POST", "/rotate-key", {"share_tickets": True, "drop_connections": True})
    sim.misbehave("wrong_pcrs")
    return pins[0]


def upstream_closes(relay):
    return sum(1 for line in relay.daemon.log().splitlines()
               if "event=upstream_state" in line and "to=closing" in line)


def drop_and_wait(relay):
    """The simulator closes every connection; waits until the daemon saw its pooled one go, so
    that the next request needs a new connection."""
    before = upstream_closes(relay)
    relay.sim.control("POST", "/drop-connections")
    deadline = time.monotonic() + 5
    while upstream_closes(relay) == before:
        assert time.monotonic() < deadline, "the daemon never saw its connection close"
        time.sleep(0.02)


def start(start_daemon, sim, extra=""):
    port = free_port()
    d = start_daemon(service_config(sim, port, "negative_cache = 0s\n" + extra))
    wait_listening(port)
    return Relay(d, sim, port)


@pytest.mark.parametrize("tls_max", ["1.3", "1.2"])
def test_default_never_resumes_so_an_unattested_key_gets_nothing(start_daemon, start_sim,
                                                                 tls_max):
    sim = start_sim("--tls-max", tls_max)
    relay = start(start_daemon, sim)
    # Several connections to the attested key A: with resumption off none of them resumes.
    for _ in range(3):
        assert relay.get("/echo").status_code == 200
        drop_and_wait(relay)
    assert sim.stats()["connections"] == 3
    assert sim.stats().get("resumed", 0) == 0
    assert "resumed=yes" not in relay.daemon.log()

    x = swap_to_unattested_key_sharing_tickets(sim)
    for _ in range(3):
        r = relay.get("/echo")
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "attestation_failed"
    reached_x = [r for r in relay.app_requests() if r["pin"] == x]
    assert reached_x == []
    assert sim.stats().get("resumed", 0) == 0


@pytest.mark.parametrize("tls_max", ["1.3", "1.2"])
def test_resumption_when_enabled_trusts_the_ticket_key(start_daemon, start_sim, tls_max):
    """The documented risk of session_resumption = yes, shown: a server that shares the ticket
    key of an attested one is served without attesting its own key. This is why it is off by
    default and why docs/evidence-protocol.md requires ticket keys made inside the enclave."""
    sim = start_sim("--tls-max", tls_max)
    relay = start(start_daemon, sim, "session_resumption = yes\n")
    for _ in range(2):
        assert relay.get("/echo").status_code == 200
        drop_and_wait(relay)
    assert sim.stats().get("resumed", 0) == 1
    assert "resumed=yes" in relay.daemon.log()

    x = swap_to_unattested_key_sharing_tickets(sim)
    assert relay.get("/echo").status_code == 200
    assert [r for r in relay.app_requests() if r["pin"] == x] != []


def test_turning_resumption_off_by_reload_forgets_the_session(start_daemon, start_sim):
    sim = start_sim()
    relay = start(start_daemon, sim, "session_resumption = yes\n")
    assert relay.get("/echo").status_code == 200
    conf = relay.daemon.conf_path
    conf.write_text(conf.read_text().replace("session_resumption = yes", "session_resumption = no"))
    mark = len(relay.daemon.log())
    relay.daemon.signal(signal.SIGHUP)
    relay.daemon.wait_log("event=reload_applied", start=mark)
    x = swap_to_unattested_key_sharing_tickets(sim)
    assert relay.get("/echo").status_code == 502
    assert [r for r in relay.app_requests() if r["pin"] == x] == []
