"""A short run of the bounded soak (bench/soak, docs/operations.md "Soak"): mixed traffic over
three enclave keys while pins refresh every 2 s, the policy changes every 5 s (by SIGHUP and by
replacing the watched policy file, alternately) and the enclave re-keys — no request may fail,
and descriptors and memory must come back flat."""
import json
import subprocess
import sys

import pytest

from conftest import BIN, ROOT


@pytest.mark.slow
def test_short_soak_is_flat_and_loses_no_request(tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "soak"), "--duration", "25",
                        "--warmup", "5", "--clients", "4", "--reload-every", "5",
                        "--rotate-every", "9", "--bin", BIN, "--out", str(out)],
                       capture_output=True, timeout=120)
    assert out.exists(), r.stdout.decode() + r.stderr.decode()
    res = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in res.items() if k not in ("samples", "metrics")}))
    assert res["errors"] == {}
    assert res["requests_ok"] > 500
    assert res["sighup_reloads"] >= 2 and res["file_reloads"] >= 2 and res["rotations"] >= 2
    assert res["daemon_exit"] == 0
    assert res["fds"]["last"] <= res["fds"]["baseline"] + 8
    assert r.returncode == 0, r.stdout.decode()[-2000:]
    # Every reload was a real policy change: pins were dropped and attested again.
    dropped = [m for m in res["metrics"]
               if 'event="pin_dropped",reason="policy_changed"' in m]
    assert dropped and int(dropped[0].rsplit(" ", 1)[1]) >= 4
