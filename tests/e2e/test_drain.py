"""SIGTERM drains (BRIEF §9): listeners close at once, exchanges in flight finish within
shutdown_timeout, then the daemon exits."""
import signal
import socket
import threading
import time

import requests

from proxy_fixtures import wait_until


def stream_events(relay, path, got, errors):
    try:
        with relay.session() as s:
            r = s.get(relay.url + path, stream=True, timeout=30)
            got.append(("connection", r.headers.get("Connection")))
            for line in r.iter_lines():
                if line.startswith(b"data: "):
                    got.append(("event", line))
    except requests.RequestException as e:
        errors.append(e)


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_in_flight_stream_finishes_after_sigterm(start_relay):
    relay = start_relay(extra_daemon="shutdown_timeout = 20s\n")
    got, errors = [], []
    t = threading.Thread(target=stream_events,
                         args=(relay, "/sse?events=10&interval=200", got, errors))
    t.start()
    deadline = time.monotonic() + 10
    while len([g for g in got if g[0] == "event"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    mark = len(relay.daemon.log())
    relay.daemon.signal(signal.SIGTERM)
    relay.daemon.wait_log("event=stopping", start=mark)
    # No new connection is accepted while draining: the listener is closed at once, while the
    # stream (2 s in all) is still in flight.
    wait_until(lambda: refused(relay.port), "the listener to close", timeout=5)
    assert t.is_alive() and len([g for g in got if g[0] == "event"]) < 10, got
    t.join(20)
    assert not t.is_alive()
    assert errors == []
    assert len([g for g in got if g[0] == "event"]) == 10
    assert relay.daemon.wait_exit(timeout=10) == 0


def test_shutdown_timeout_cuts_what_is_left(start_relay):
    relay = start_relay(extra_daemon="shutdown_timeout = 1s\n")
    got, errors = [], []
    t = threading.Thread(target=stream_events,
                         args=(relay, "/sse?events=100&interval=100", got, errors))
    t.start()
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.monotonic()
    relay.daemon.signal(signal.SIGTERM)
    relay.daemon.wait_exit(timeout=10)
    assert time.monotonic() - start < 5
    t.join(10)
    assert len([g for g in got if g[0] == "event"]) < 100
    assert "event=shutdown_timeout" in relay.daemon.log()


def test_idle_keepalive_clients_do_not_delay_exit(start_relay):
    relay = start_relay(extra_daemon="shutdown_timeout = 30s\n")
    with relay.session() as s:
        assert s.get(relay.url + "/echo", timeout=30).status_code == 200
        # The session's connection stays open and idle.
        start = time.monotonic()
        relay.daemon.signal(signal.SIGTERM)
        assert relay.daemon.wait_exit(timeout=10) == 0
        assert time.monotonic() - start < 3
