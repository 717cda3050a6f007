"""`attestproxy attest -c FILE SERVICE`: connect once, attest, print the verified summary."""
import json

import pytest

from conftest import free_port
from simulator import Simulator, service_config


@pytest.fixture
def sim(tmp_path):
    s = Simulator(tmp_path / "chain")
    yield s
    s.stop()


def attest(run_cli, tmp_path, text, service="demo"):
    conf = tmp_path / "attest.conf"
    conf.write_text(text)
    return run_cli("attest", "-c", conf, service)


def test_attest_prints_verified_summary(sim, tmp_path, run_cli):
    r = attest(run_cli, tmp_path, service_config(sim, free_port()))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["accepted"] is True and out["service"] == "demo"
    assert out["pin"].startswith("sha256:") and out["attestation"]["pin"] == out["pin"]
    assert out["attestation"]["pcrs"]["0"] == sim.pcrs["pcr0"]
    assert out["profile"] == "native" and out["binding"] == "spki_sha256"
    assert out["policy_digest"].startswith("sha256:")
    assert "event=attestation" in r.stderr.decode()
    # One connection, one evidence request, and nothing else.
    assert sim.stats() == {"evidence_requests": 1, "app_requests": 0, "connections": 1,
                           "ws_messages": 0}


@pytest.mark.parametrize("mode,reason", [
    ("wrong_pcrs", "policy: pcrs match no measurement set"),
    ("debug_pcrs", "policy: debug-mode enclave"),
    ("bad_signature", "signature: "),
    ("wrong_nonce", "policy: nonce"),
    ("bind_other_key", "binding: "),
    ("expired_leaf", "chain: certificate expired"),
    ("garbage_evidence", "cose: "),
])
def test_attest_refuses_with_reason(sim, tmp_path, run_cli, mode, reason):
    sim.misbehave(mode)
    r = attest(run_cli, tmp_path, service_config(sim, free_port()))
    assert r.returncode == 1
    lines = [l for l in r.stderr.decode().splitlines() if l.startswith("rejected: ")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("rejected: attestation failed: " + reason), lines[0]
    assert json.loads(r.stdout)["accepted"] is False


def test_attest_unreachable_exits_1(tmp_path, run_cli, sim):
    text = service_config(sim, free_port()).replace(f"127.0.0.1:{sim.port}",
                                                    f"127.0.0.1:{free_port()}")
    r = attest(run_cli, tmp_path, text)
    assert r.returncode == 1
    assert "connection refused" in r.stderr.decode()


def test_attest_unknown_service_exits_2(sim, tmp_path, run_cli):
    r = attest(run_cli, tmp_path, service_config(sim, free_port()), service="nope")
    assert r.returncode == 2
    assert b"no service 'nope'" in r.stderr


def test_attest_usage(run_cli):
    assert run_cli("attest").returncode == 2
    r = run_cli("attest", "--help")
    assert r.returncode == 0 and b"Usage: attestproxy attest" in r.stdout
