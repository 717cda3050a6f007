"""Fixtures for the relay's end-to-end tests: the enclave simulator (tests/sim) in front of which
the real attestproxy binary runs, and small clients that take no proxy from the environment.

Loaded by conftest.py (`pytest_plugins`). Every network call is to 127.0.0.1; every loop in the
tests that use these fixtures is bounded in count and in time.
"""
import pathlib
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
import requests

from conftest import free_port
from simulator import Simulator, service_config

E2E = pathlib.Path(__file__).resolve().parent


class Relay:
    """A daemon in front of a simulator."""

    def __init__(self, daemon, sim, port):
        self.daemon = daemon
        self.sim = sim
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def session(self):
        """A requests session that ignores HTTP(S)_PROXY from the environment."""
        s = requests.Session()
        s.trust_env = False
        return s

    def get(self, path, **kw):
        with self.session() as s:
            return s.get(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path, **kw):
        with self.session() as s:
            return s.post(self.url + path, timeout=kw.pop("timeout", 30), **kw)

    def app_requests(self):
        """What reached the simulator's application endpoints (not evidence)."""
        return [r for r in self.sim.requests() if not r["evidence"]]

    def evidence_requests(self):
        return [r for r in self.sim.requests() if r["evidence"]]

    def status_field(self, name):
        """A number from the daemon's /proc/PID/status (VmRSS in KiB, voluntary_ctxt_switches)."""
        with open(f"/proc/{self.daemon.proc.pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {name} in /proc/PID/status")

    def rss_kib(self):
        return self.status_field("VmRSS")


def wait_until(condition, what, timeout=10.0, interval=0.02):
    """Polls `condition()` until it is true, at most `timeout` seconds: the way a test orders
    events, instead of a sleep that hopes the other side got there."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def open_clients(admin, service="demo"):
    """The daemon's attestproxy_client_connections_open for `service`, from its admin API."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^attestproxy_client_connections_open\{service="%s"\} (\d+)$' % service,
                  text, re.M)
    return int(m.group(1))


def wait_open_clients(admin, n, timeout=20, service="demo"):
    wait_until(lambda: open_clients(admin, service) == n,
               f"{n} open client connection(s) of {service}", timeout=timeout, interval=0.05)


def wait_listening(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def start_sim(tmp_path):
    """start_sim(*args) -> Simulator, stopped after the test."""
    sims = []

    def _start(*args, chain_dir=None):
        n = len(sims)
        s = Simulator(chain_dir or tmp_path / f"sim{n}" / "chain", *args,
                      log_path=tmp_path / f"sim{n}.log")
        sims.append(s)
        return s

    yield _start
    for s in sims:
        s.stop()


@pytest.fixture
def start_relay(start_daemon, start_sim):
    """start_relay(extra_service="", extra_daemon="", sim=None, sim_args=()) -> Relay."""

    def _start(extra_service="", extra_daemon="", sim=None, sim_args=()):
        sim = sim or start_sim(*sim_args)
        port = free_port()
        d = start_daemon(service_config(sim, port, extra_service, extra_daemon))
        wait_listening(port)
        return Relay(d, sim, port)

    return _start


def on_demand(start_relay):
    """start_relay with warm_attestation = no: the enclave is attested by the first request, not
    at start. For tests that count the attestations requests make; the warm behaviour itself is
    tested in test_warm_attestation.py."""

    def _start(extra_service="", **kw):
        return start_relay(extra_service="warm_attestation = no\n" + extra_service, **kw)

    return _start


@pytest.fixture
def relay(start_relay):
    return start_relay()


class RssSampler:
    """Samples a process's resident size every `interval` seconds while running."""

    def __init__(self, relay, interval=0.1):
        self.relay, self.interval = relay, interval
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.max_kib = max(self.max_kib, self.relay.rss_kib())
                self.samples += 1
            except (OSError, AssertionError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=5)


def npm_package(name):
    """Installs the npm package `name` once into tests/e2e/node_modules (gitignored)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(f"node and npm are needed for the {name} tests")
    if not (E2E / "node_modules" / name / "package.json").exists():
        # --no-save: every package is installed alone; ws and openai go together (the SDK's
        # Realtime client needs ws) so that one install does not prune the other.
        r = subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix",
                            str(E2E), "openai", "ws"], capture_output=True, timeout=240)
        if r.returncode != 0:
            pytest.fail(f"npm install {name} failed:\n" +
                        r.stderr.decode(errors="replace")[-2000:])


@pytest.fixture(scope="session")
def openai_sdk():
    """The Node `openai` package."""
    npm_package("openai")
    return E2E / "openai_client.js"


@pytest.fixture(scope="session")
def node_ws():
    """The Node `ws` package (and `openai`, whose Realtime client uses it): the scripts."""
    npm_package("ws")
    npm_package("openai")
    return E2E / "ws_client.js"
