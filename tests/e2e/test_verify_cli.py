"""`attestproxy verify` as a user runs it: real AWS documents, exit codes, input encodings."""
import base64
import json

from conftest import ROOT

V = ROOT / "tests" / "vectors" / "nitro"
REAL2_AT = "1684948069"  # real-2's own timestamp (1684948068582 ms), rounded up
REAL2_PCR0 = ("28de6557cce896cf8c580d8674fbc13c45c1a7636545ef022a01007336b8752b"
              "9a1cd9ce69df2ecacc7696a1203b45c2")


def test_real_document_accepted_at_its_time(run_cli):
    r = run_cli("verify", "--at", REAL2_AT, "--pcr", f"0={REAL2_PCR0}", V / "real-2.cbor")
    assert r.returncode == 0, r.stderr
    assert b"accepted" in r.stdout and r.stderr == b""


def test_real_document_rejected_now_with_reason_on_stderr(run_cli):
    r = run_cli("verify", V / "real-2.cbor")
    assert r.returncode == 1
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rejected: chain: certificate expired")


def test_rfc3339_time_and_pcr_mismatch(run_cli):
    r = run_cli("verify", "--at", "2023-05-24T17:07:49Z", "--pcr", "0=" + "00" * 48,
                V / "real-2.cbor")
    assert r.returncode == 1
    assert r.stderr.decode().startswith("rejected: policy: ")


def test_debug_mode_needs_allow_debug(run_cli):
    at = "1684358512"  # real-1, a debug-mode enclave
    r = run_cli("verify", "--at", at, V / "real-1.cbor")
    assert r.returncode == 1 and b"debug" in r.stderr
    r = run_cli("verify", "--at", at, "--allow-debug", V / "real-1.cbor")
    assert r.returncode == 0, r.stderr


def test_stdin_base64_and_json_envelopes(run_cli):
    raw = (V / "real-2.cbor").read_bytes()
    b64 = base64.encodebytes(raw)  # with newlines every 76 characters
    for data in (raw, b64, json.dumps({"attestation_doc": base64.b64encode(raw).decode()}).encode()):
        r = run_cli("verify", "--at", REAL2_AT, "-", input=data)
        assert r.returncode == 0, r.stderr


def test_json_output_is_parseable(run_cli):
    r = run_cli("verify", "--json", "--at", REAL2_AT, V / "real-2.cbor")
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert out["verdict"]["accepted"] is True
    assert out["document"]["module_id"] == "i-09b153b9b6859a1de-enc01884ebaeb16c078"
    assert out["document"]["pcrs"]["0"] == REAL2_PCR0


def test_binding_to_peer_certificate(run_cli):
    r = run_cli("verify", "--at", "1674047240", "--binding", "spki_der", "--peer-cert",
                V / "bind-real-6-tls-cert.der", V / "real-6.cbor")
    assert r.returncode == 0, r.stderr
    r = run_cli("verify", "--at", "1674047240", "--binding", "spki_der", "--peer-cert",
                V / "bind-real-5-tls-cert.der", V / "real-6.cbor")
    assert r.returncode == 1 and r.stderr.startswith(b"rejected: binding: ")


def test_usage_and_io_errors_exit_2(run_cli):
    assert run_cli("verify").returncode == 2
    assert run_cli("verify", "/nonexistent.cbor").returncode == 2
    assert run_cli("verify", "--pcr", "0=zz", V / "real-2.cbor").returncode == 2
    assert run_cli("verify", "--at", "yesterday", V / "real-2.cbor").returncode == 2
    assert run_cli("verify", "--binding", "spki_der", V / "real-2.cbor").returncode == 2
