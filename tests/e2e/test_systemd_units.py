"""The shipped systemd units: `systemd-analyze verify` is clean, the hardening is what the brief
asks for, and `systemd-analyze security` rates the service at the exposure docs/operations.md
records.

`systemd-analyze verify` exits 0 even on unknown keys and bad values, so these tests fail on ANY
output. ExecStart= must name an existing executable, so the units are verified inside a
temporary root tree holding the real binary at /usr/sbin/attestproxy, /bin/kill and a copy of
the host's /lib/systemd/system (for the targets the units refer to).
"""
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT

ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None,
                                reason="systemd-analyze is missing (apt-get install systemd)")

# The exposure measured with systemd 252 (Debian 12); a change to the unit that raises it must
# be deliberate (and update docs/operations.md).
EXPOSURE_MAX = 1.1
UNIT_DIR = "usr/lib/systemd/system"


def render_service(sbindir="/usr/sbin", sysconfdir="/etc"):
    """systemd/attestproxy.service.in with the paths a /usr package uses, as meson renders it."""
    text = (ROOT / "systemd" / "attestproxy.service.in").read_text()
    assert set(re.findall(r"@([A-Z_]+)@", text)) == {"SBINDIR", "SYSCONFDIR"}
    return text.replace("@SBINDIR@", sbindir).replace("@SYSCONFDIR@", sysconfdir)


def make_root(tmp_path, service_text=None, with_binary=True):
    """A root tree in which the units can be verified: merged /usr, systemd's own units."""
    root = tmp_path / "root"
    for d in ("usr/bin", "usr/sbin", "usr/lib/systemd", "etc/systemd/system", "run", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib"):
        (root / link).symlink_to("usr/" + link)
    shutil.copytree("/lib/systemd/system", root / UNIT_DIR, symlinks=True)
    shutil.copy2("/usr/bin/kill", root / "usr/bin/kill")
    if with_binary:
        shutil.copy2(BIN, root / "usr/sbin/attestproxy")
    (root / UNIT_DIR / "attestproxy.service").write_text(service_text or render_service())
    shutil.copy2(ROOT / "systemd" / "attestproxy.socket", root / UNIT_DIR / "attestproxy.socket")
    return root


def verify(root, *units):
    paths = [str(root / UNIT_DIR / u) for u in units]
    return subprocess.run([ANALYZE, "verify", "--man=no", f"--root={root}", *paths],
                          capture_output=True, text=True, timeout=120)


def exposure(root, unit="attestproxy.service"):
    r = subprocess.run([ANALYZE, "security", "--offline=true", f"--root={root}", unit],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for " + re.escape(unit) + r": (\d+\.\d+)", r.stdout)
    assert m, f"no exposure figure in:\n{r.stdout}\n{r.stderr}"
    return float(m.group(1)), r


def directives(text):
    """[(section, key, value)] of a unit file, in order (repeated keys kept)."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def test_units_verify_without_any_output(tmp_path):
    root = make_root(tmp_path)
    r = verify(root, "attestproxy.service", "attestproxy.socket")
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    assert r.stdout == "", r.stdout


def test_the_check_would_catch_mistakes(tmp_path):
    """A negative control: the same check flags a bad key and a missing ExecStart binary, so a
    clean result above means something."""
    root = make_root(tmp_path / "a", render_service().replace("[Service]\n",
                                                               "[Service]\nNoSuchKey=1\n"))
    assert "NoSuchKey" in verify(root, "attestproxy.service").stderr
    root = make_root(tmp_path / "b", with_binary=False)
    r = verify(root, "attestproxy.service")
    assert "/usr/sbin/attestproxy" in r.stderr and "not executable" in r.stderr


def test_service_directives_follow_the_brief():
    d = directives(render_service())
    svc = {}
    for section, key, value in d:
        if section == "Service":
            svc.setdefault(key, []).append(value)
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Type"] == "notify"
    assert one["ExecStart"] == "/usr/sbin/attestproxy run -c /etc/attestproxy/attestproxy.conf"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Restart"] == "on-failure"
    assert one["RestartPreventExitStatus"] == "2"  # an invalid configuration
    assert one["DynamicUser"] == "yes"
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert one["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert svc["SystemCallFilter"][0] == "@system-service"
    assert one["UMask"] == "0077"
    assert one["RuntimeDirectory"] == "attestproxy"
    assert one["ConfigurationDirectory"] == "attestproxy"
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges",
                "MemoryDenyWriteExecute", "LockPersonality", "RestrictNamespaces",
                "RestrictRealtime", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict"
    assert one["SystemCallArchitectures"] == "native"
    # The drain (shutdown_timeout, default 30s) must fit inside the stop timeout.
    assert one["TimeoutStopSec"].endswith("s") and int(one["TimeoutStopSec"][:-1]) > 30
    # The watchdog is offered, commented out.
    assert "#WatchdogSec=" in render_service()


def test_socket_unit_matches_the_example_configuration():
    sock = {k: v for s, k, v in directives((ROOT / "systemd" / "attestproxy.socket").read_text())
            if s == "Socket"}
    example = (ROOT / "config" / "attestproxy.conf").read_text()
    service = example[example.index("[service whisper]"):]
    listen = re.search(r"^listen = (\S+)$", service, re.M).group(1)
    assert sock["ListenStream"] == listen
    assert sock["FileDescriptorName"] == "whisper"
    assert sock["Service"] == "attestproxy.service"


def test_security_exposure_is_recorded_and_low(tmp_path):
    root = make_root(tmp_path)
    level, r = exposure(root)
    assert level <= EXPOSURE_MAX, r.stdout
    # systemd's own comparison (exposure x 10) agrees.
    t = subprocess.run([ANALYZE, "security", "--offline=true", f"--root={root}",
                        f"--threshold={int(round(EXPOSURE_MAX * 10))}", "attestproxy.service"],
                       capture_output=True, text=True, timeout=120)
    assert t.returncode == 0, t.stdout[-2000:]
    doc = (ROOT / "docs" / "operations.md").read_text()
    m = re.search(r"exposure level of \*\*(\d+\.\d+)\*\*", doc)
    assert m, "docs/operations.md must record the systemd-analyze security exposure"
    assert float(m.group(1)) == level, (
        f"docs/operations.md records {m.group(1)}, systemd-analyze says {level}")
