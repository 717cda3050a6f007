"""Restarts with socket activation lose no request (issue #20, item 2): the test holds the
listening socket, as systemd does, and starts a new daemon on it (LISTEN_FDS) each time the old
one has exited after SIGTERM, while keep-alive clients (requests sessions) and one-shot clients
(curl) send requests without pause. Connections that arrive between two instances wait in the
socket's backlog; requests already read are answered; idle keep-alive connections are closed
only after their next request got an answer with Connection: close."""
import os
import signal
import socket
import subprocess
import threading
import time

import requests

from conftest import free_port
from simulator import service_config


def keepalive_client(url, stop, ok, failed):
    with requests.Session() as s:
        s.trust_env = False
        while not stop.is_set():
            try:
                r = s.get(url + "/echo", timeout=30)
                (ok if r.status_code == 200 else failed).append(r.status_code)
            except requests.RequestException as e:
                failed.append(repr(e))


def curl_client(url, stop, ok, failed):
    while not stop.is_set():
        r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w",
                            "%{http_code}", url + "/echo"], capture_output=True, timeout=30)
        if r.returncode == 0 and r.stdout == b"200":
            ok.append(200)
        else:
            failed.append((r.returncode, r.stdout, r.stderr))


def test_restarts_under_load_lose_no_request(start_daemon, start_sim):
    sim = start_sim()
    port = free_port()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(511)
    fd = lsock.fileno()
    conf = service_config(sim, port)

    def as_fd3():
        os.dup2(fd, 3)

    def start():
        return start_daemon(conf, env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "demo"},
                            wrapper=["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"],
                            preexec_fn=as_fd3, pass_fds=(fd, 3))

    d = start()
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    ok, failed = [], []
    threads = [threading.Thread(target=keepalive_client, args=(url, stop, ok, failed))
               for _ in range(3)]
    threads.append(threading.Thread(target=curl_client, args=(url, stop, ok, failed)))
    for t in threads:
        t.start()
    try:
        restarts = 5
        for _ in range(restarts):
            before = len(ok)
            deadline = time.monotonic() + 10
            while len(ok) < before + 50 and time.monotonic() < deadline:
                time.sleep(0.02)
            d.signal(signal.SIGTERM)
            assert d.wait_exit(timeout=15) == 0
            d = start()
        before = len(ok)
        deadline = time.monotonic() + 10
        while len(ok) < before + 50 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    lsock.close()
    assert failed == []
    assert len(ok) >= 50 * (restarts + 1)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=15) == 0
