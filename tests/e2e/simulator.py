"""Starting the enclave simulator (tests/sim/enclave_sim.py) from end-to-end tests, and talking
to its control API. See tests/sim/README.md."""
import json
import pathlib
import subprocess
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
SIM = ROOT / "tests" / "sim" / "enclave_sim.py"


class Simulator:
    def __init__(self, chain_dir, *args, log_path=None):
        pathlib.Path(chain_dir).mkdir(parents=True, exist_ok=True)
        self.log_path = log_path or pathlib.Path(chain_dir).parent / "sim.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(SIM), "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0",
             "--chain-dir", str(chain_dir), *map(str, args)],
            stdout=subprocess.PIPE, stderr=self._log)
        ready = self.proc.stdout.readline().decode()
        if not ready.startswith("READY "):
            raise RuntimeError(f"simulator did not start: {ready!r} {self.log_path.read_text()}")
        fields = dict(kv.split("=", 1) for kv in ready.split()[1:])
        self.port = int(fields["port"])
        self.control_port = int(fields["control"])
        self.root = fields["root"]
        meas = self.proc.stdout.readline().decode().split()[1:]
        self.pcrs = dict(kv.split("=", 1) for kv in meas)  # {"pcr0": hex, ...}

    def measurement(self):
        """The `measurement = ...` lines for a configuration, one PCR per line."""
        keys = sorted(self.pcrs, key=lambda k: int(k[3:]))
        first, rest = keys[0], keys[1:]
        return (f"measurement = {first}={self.pcrs[first]}\n" +
                "".join(f"    {k}={self.pcrs[k]}\n" for k in rest))

    def control(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}", data=data,
                                     method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def misbehave(self, mode, **params):
        return self.control("POST", "/misbehave", dict(mode=mode, **params))

    def stats(self):
        return self.control("GET", "/stats")

    def requests(self):
        return self.control("GET", "/requests")

    def ws_messages(self):
        """Every WebSocket data frame the simulator received, in order."""
        return self.control("GET", "/ws-messages")

    def reset(self):
        return self.control("POST", "/reset")

    def rotate_key(self):
        return self.control("POST", "/rotate-key")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def service_config(sim, port, extra_service="", extra_daemon="", name="demo"):
    """A configuration with one service in front of `sim`."""
    return (f"[daemon]\nlog_level = debug\nroot_ca = {sim.root}\n{extra_daemon}\n"
            f"[service {name}]\nlisten = 127.0.0.1:{port}\n"
            f"upstream = 127.0.0.1:{sim.port}\n" + sim.measurement() + extra_service)
