"""Shared fixtures for the end-to-end tests: they start the real attestproxy binary.

The binary comes from $ATTESTPROXY_BIN (scripts/test sets it), else build/daemon/attestproxy.
"""
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

pytest_plugins = ["proxy_fixtures"]

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("ATTESTPROXY_BIN", str(ROOT / "build" / "daemon" / "attestproxy"))
PCR_A = "00" * 47 + "01"


_handed_out = set()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago, and never handed out before in this
    run: the kernel may give the same ephemeral port to two binds in a row, and a test that asks
    for two ports needs two (a CI rehearsal failed once on it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def minimal_config(port=None, extra_daemon="", extra_service=""):
    """A valid configuration with one service; nothing connects upstream until a request."""
    port = port or free_port()
    return (
        "[daemon]\nlog_level = debug\n" + extra_daemon +
        "\n[service demo]\n"
        f"listen = 127.0.0.1:{port}\n"
        "upstream = 127.0.0.1:9\n"
        f"measurement = pcr0={PCR_A}\n" + extra_service
    )


class Daemon:
    """A running attestproxy process; its stderr goes to a file that tests can read."""

    def __init__(self, conf_path, log_path, args=None, env=None, wrapper=None, **popen):
        self.conf_path = conf_path
        self.log_path = log_path
        self._log = open(log_path, "wb")
        cmd = (wrapper or []) + [BIN, "run", "-c", str(conf_path)] + (args or [])
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env, **popen)

    def log(self):
        return pathlib.Path(self.log_path).read_text(errors="replace")

    def wait_log(self, needle, timeout=10.0, start=0):
        """Waits until `needle` appears in the log (after offset `start`); returns the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if needle in text[start:]:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"log never showed {needle!r}; log:\n{self.log()}")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=10.0):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def start_daemon(tmp_path):
    """start_daemon(config_text) -> Daemon, waited until it logged event=started."""
    started = []

    def _start(text, wait=True, args=None, env=None, wrapper=None, **popen):
        conf = tmp_path / f"attestproxy-{len(started)}.conf"
        conf.write_text(text)
        d = Daemon(conf, tmp_path / f"daemon-{len(started)}.log", args, env, wrapper, **popen)
        started.append(d)
        if wait:
            d.wait_log("event=started")
        return d

    yield _start
    for d in started:
        d.stop()


@pytest.fixture
def run_cli():
    """run_cli(*args, input=None) -> CompletedProcess of the attestproxy binary."""

    def _run(*args, input=None, timeout=30):
        return subprocess.run([BIN, *map(str, args)], input=input, capture_output=True,
                              timeout=timeout)

    return _run
