"""Keep-alive on both sides: a Python requests session sends 1000 requests one after another;
they reuse pooled upstream connections and the enclave's key is attested once. Concurrent
keep-alive clients are answered alike with batching under load off and at its longest and with
busy polling on, the batching sleep lasts what it says (1 us of timer slack), and busy polling
keeps the daemon awake between a lone request's events but not once traffic stops."""
import os
import threading
import time

import pytest


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


@pytest.mark.parametrize("polling", [
    "batch_wait_us = 0\n",
    "batch_wait_us = 1000\n",
    "busy_poll_us = 1000\n",
    "batch_wait_us = 0\nbusy_poll_us = 1000\n",
], ids=["no-batching", "batching", "busy-polling", "busy-polling-only"])
def test_concurrent_keepalive_clients_whatever_the_polling(start_relay, polling):
    """batch_wait_us and busy_poll_us change when the daemon polls, never what it relays: 32
    keep-alive clients at once, 25 requests each, every answer the right one."""
    relay = start_relay(extra_daemon=polling)
    errors = []

    def client(k):
        try:
            with relay.session() as s:
                for i in range(25):
                    r = s.get(f"{relay.url}/echo?k={k}&i={i}", timeout=30)
                    assert r.status_code == 200, r.text
                    assert r.json()["path"] == f"/echo?k={k}&i={i}"
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"client {k}: {e}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert relay.sim.stats()["app_requests"] == 32 * 25


def test_batching_sleep_has_one_microsecond_of_timer_slack(relay):
    """The kernel's default 50 us of timer slack would stretch the 20 us batching sleep up to
    70 us, and the clients' and the enclave's core would idle waiting for it (docs/benchmarks.md,
    "Batching and timer slack"): the daemon sets its own to 1 us."""
    with open(f"/proc/{relay.daemon.proc.pid}/timerslack_ns") as f:
        assert int(f.read()) == 1000


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_busy_polling_keeps_the_daemon_awake_between_events_and_lets_an_idle_one_sleep(
        start_relay):
    """busy_poll_us keeps the daemon polling after a read, at most that long (docs/operations.md,
    "Latency at light load: busy_poll_us"). One request at a time: a daemon that sleeps in its
    poll blocks twice per request (waiting for the enclave, then for the client); with 1000 us
    of busy polling the next event finds it awake (0.06 per request here, against 1.99 without).
    Once requests stop, it sleeps again instead of spinning."""
    relay = start_relay(extra_daemon="busy_poll_us = 1000\n")
    pid = relay.daemon.proc.pid
    n = 200
    with relay.session() as s:
        assert s.get(f"{relay.url}/echo?warm=1", timeout=10).status_code == 200
        before = relay.status_field("voluntary_ctxt_switches")  # times it blocked
        for i in range(n):
            assert s.get(f"{relay.url}/echo?i={i}", timeout=10).status_code == 200
        per_request = (relay.status_field("voluntary_ctxt_switches") - before) / n
    assert per_request < 1.0, f"{per_request:.2f} sleeps per request: busy polling did not poll"
    time.sleep(0.5)
    before = cpu_seconds(pid)
    time.sleep(3)
    idle = cpu_seconds(pid) - before
    assert idle < 0.15, f"{idle:.2f} s of CPU in 3 s without traffic: the daemon kept spinning"
