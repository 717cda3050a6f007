"""Policy bundles for the end-to-end tests: keys and signed bundles made with the real
`attestproxy policy` commands, and a configuration whose service takes its policy from one."""
import datetime
import subprocess

from conftest import BIN


def utc(offset_s=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Signer:
    """An Ed25519 signing key made by `attestproxy policy keygen`."""

    def __init__(self, directory, name):
        self.name = name
        self.path = directory / f"{name}.pem"
        r = subprocess.run([BIN, "policy", "keygen", "--out", str(self.path), "--key-name", name],
                           capture_output=True, check=True, timeout=30)
        self.config_line = r.stdout.decode().strip()          # policy_key = NAME:BASE64
        self.key = self.config_line.split("=", 1)[1].strip()  # NAME:BASE64

    def sign(self, body):
        r = subprocess.run([BIN, "policy", "sign", "--key", str(self.path), "--key-name",
                            self.name, "-"], input=body.encode(), capture_output=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()


def body(sim_pcrs, version, services=("demo",), issued=None, expires=None, extra_sets=()):
    """A bundle body admitting the simulator's PCRs (and `extra_sets`, lists of pcrN=HEX)."""
    keys = sorted(sim_pcrs, key=lambda k: int(k[3:]))
    sets = [" ".join(f"{k}={sim_pcrs[k].lower()}" for k in keys)] + list(extra_sets)
    return ("attestproxy-policy-bundle v1\n"
            f"version {version}\n"
            f"issued {issued or utc(-60)}\n"
            f"expires {expires or utc(86400)}\n" +
            "".join(f"service {s}\n" for s in services) +
            "allow_debug no\n" +
            "".join(f"measurement {s}\n" for s in sets))


def bundle_config(sim, port, bundle_path, signer_lines, state_dir, extra_service="",
                  extra_daemon=""):
    return (f"[daemon]\nlog_level = debug\nroot_ca = {sim.root}\n" +
            "".join(line + "\n" for line in signer_lines) +
            f"state_dir = {state_dir}\n{extra_daemon}\n"
            f"[service demo]\nlisten = 127.0.0.1:{port}\n"
            f"upstream = 127.0.0.1:{sim.port}\npolicy_bundle = {bundle_path}\n" + extra_service)
