"""Warm attestation (issue #20, item 1): with no client traffic at all, the daemon attests each
service at start over one connection that it keeps in the pool, becomes ready (READY=1, /readyz)
and, when the enclave fails, says why (/readyz, STATUS=, /attestation) and retries with
back-off. warm_attestation = no restores attestation on the first request."""
import json
import re
import time
import urllib.error
import urllib.request

from conftest import free_port
from simulator import service_config
from test_ops_daemon import Notify


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start(start_daemon, sim, tmp_path, extra_service="", extra_daemon=""):
    admin = free_port()
    notify = Notify(tmp_path / "notify.sock")
    port = free_port()
    d = start_daemon(service_config(sim, port, extra_service,
                                    f"admin_listen = 127.0.0.1:{admin}\n"
                                    "ready_requires_attestation = yes\n" + extra_daemon),
                     env={"NOTIFY_SOCKET": notify.path})
    return d, f"http://127.0.0.1:{admin}", notify, port


def test_ready_without_any_request(start_daemon, start_sim, tmp_path):
    sim = start_sim()
    d, admin, notify, port = start(start_daemon, sim, tmp_path)
    assert re.fullmatch(r"READY=1\nSTATUS=ready: [^\n]+", notify.wait_for("READY=1"))
    assert get(admin + "/readyz") == (200, b"ready\n")
    # Exactly one connection and one attestation, and no application request.
    assert sim.stats() == {"evidence_requests": 1, "app_requests": 0, "connections": 1,
                           "ws_messages": 0}
    doc = json.loads(get(admin + "/attestation")[1])
    assert doc["services"]["demo"]["pins"][0]["connections"] == 1  # kept in the pool
    # The first request is warm: it takes that connection and attests nothing.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/echo", timeout=10) as r:
        assert r.status == 200
    assert sim.stats() == {"evidence_requests": 1, "app_requests": 1, "connections": 1,
                           "ws_messages": 0}
    notify.close()


def test_a_failing_enclave_keeps_it_not_ready_and_says_why(start_daemon, start_sim, tmp_path):
    sim = start_sim("--misbehave", "wrong_pcrs")
    d, admin, notify, _ = start(start_daemon, sim, tmp_path, "negative_cache = 0\n")
    status = notify.wait_for("STATUS=waiting for attestation: demo: attestation failed")
    assert "pcr" in status and "next in 1 s" in status
    st, body = get(admin + "/readyz")
    assert st == 503
    svc = json.loads(body)["services"]["demo"]
    assert svc["ready"] is False and svc["state"] in ("backoff", "connecting", "attesting")
    assert "attestation failed" in svc["reason"] and svc["failed_attempts"] >= 1
    failure = json.loads(get(admin + "/attestation")[1])["services"]["demo"]["last_failure"]
    assert failure["verdict"] == "rejected" and failure["reason"].startswith("policy_pcr")
    # Retries back off: 1 s, 2 s, 4 s ... between attempts, not a tight loop.
    d.wait_log("retry_in_ms=4000", timeout=10)
    delays = [int(x) for x in re.findall(r"event=warm_attestation_failed .*retry_in_ms=(\d+)",
                                         d.log())]
    assert delays[:3] == [1000, 2000, 4000]
    assert sim.stats()["evidence_requests"] == 3
    notify.close()


def test_warm_attestation_off_connects_nothing_before_a_request(start_daemon, start_sim,
                                                                tmp_path):
    sim = start_sim()
    d, admin, notify, port = start(start_daemon, sim, tmp_path, "warm_attestation = no\n")
    time.sleep(1.0)
    assert sim.stats()["connections"] == 0
    st, body = get(admin + "/readyz")
    assert st == 503
    assert json.loads(body)["services"]["demo"]["state"] == "waiting_for_request"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/echo", timeout=10) as r:
        assert r.status == 200
    assert notify.wait_for("READY=1")
    assert sim.stats()["evidence_requests"] == 1
    notify.close()


def test_the_pin_is_refreshed_without_traffic_when_the_pool_is_empty(start_daemon, start_sim,
                                                                     tmp_path):
    sim = start_sim()
    # The pooled connection closes after 200 ms idle; the refresh (due 1 s after each
    # attestation) finds the pool empty and opens a connection for it.
    d, admin, notify, _ = start(start_daemon, sim, tmp_path,
                                "attestation_ttl = 3s\nrefresh_before = 2s\n"
                                "pool_idle_timeout = 200ms\n")
    notify.wait_for("READY=1")
    time.sleep(4.5)
    assert get(admin + "/readyz") == (200, b"ready\n")
    assert "event=pin_expired" not in d.log()
    assert sim.stats()["evidence_requests"] >= 4
    assert sim.stats()["app_requests"] == 0
    notify.close()
