"""The simulator serves what it claims: its evidence verifies with cbor2 and python3-cryptography
alone (no code shared with enclave_sim.py, nsm.py or chain.py, nor with the daemon), over the very
TLS connection it answers on, for every profile; a demo endpoint and the control API work.

Starts tests/sim/enclave_sim.py as a subprocess; bounded (a few seconds, 30 s at worst).
"""
import base64
import hashlib
import http.client
import json
import pathlib
import secrets
import ssl
import subprocess
import urllib.request

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

SIM = pathlib.Path(__file__).resolve().parent / "enclave_sim.py"
NSM_KEYS = ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key",
            "user_data", "nonce"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    chain_dir = tmp_path_factory.mktemp("chain")
    proc = subprocess.Popen(["/usr/bin/python3", str(SIM), "--listen", "127.0.0.1:0",
                             "--control", "127.0.0.1:0", "--chain-dir", str(chain_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ready = proc.stdout.readline().decode()
        meas = proc.stdout.readline().decode()
        assert ready.startswith("READY "), ready
        fields = dict(kv.split("=", 1) for kv in ready.split()[1:])
        assert set(fields) == {"port", "control", "root"}
        assert meas.startswith("MEASUREMENT "), meas
        pcrs = {int(k[3:]): bytes.fromhex(v)
                for k, v in (kv.split("=", 1) for kv in meas.split()[1:])}
        yield {"port": int(fields["port"]), "control": int(fields["control"]),
               "root": pathlib.Path(fields["root"]), "pcrs": pcrs}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def connect(sim):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", sim["port"], context=ctx, timeout=10)
    conn.connect()
    return conn


def served_cert(conn):
    return x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))


def get(conn, path, method="GET", body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def control(sim, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{sim['control']}{path}", data=data,
                                 method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def verify_document(raw, root_pem):
    """Independent verification; returns the payload map."""
    item = cbor2.loads(raw)
    assert isinstance(item, list) and len(item) == 4, "untagged COSE_Sign1 of 4 elements"
    protected, unprotected, payload, sig = item
    assert protected == bytes.fromhex("a1013822") and cbor2.loads(protected) == {1: -35}
    assert unprotected == {} and isinstance(payload, bytes) and len(sig) == 96
    assert raw[:2] == b"\x84\x44", "NSM layout: array(4), bstr(4) protected"
    doc = cbor2.loads(payload)
    assert list(doc) == NSM_KEYS, "the 9 keys in NSM order"
    assert doc["digest"] == "SHA384" and isinstance(doc["module_id"], str) and doc["module_id"]
    assert all(isinstance(k, int) and len(v) == 48 for k, v in doc["pcrs"].items())
    root = x509.load_pem_x509_certificate(root_pem)
    assert doc["cabundle"][0] == root.public_bytes(serialization.Encoding.DER)
    certs = [x509.load_der_x509_certificate(d) for d in doc["cabundle"] + [doc["certificate"]]]
    assert len(certs) == 5, "root, regional, zonal, instance, leaf"
    for issuer, cert in zip(certs, certs[1:]):
        assert cert.issuer == issuer.subject
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
        assert cert.public_key().curve.name == "secp384r1"
        issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                   ec.ECDSA(hashes.SHA384()))
    leaf = certs[-1]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    der = encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
    leaf.public_key().verify(der, to_sign, ec.ECDSA(hashes.SHA384()))
    return doc


def spki(cert):
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def test_native_evidence_verifies_and_binds_this_connection(sim):
    conn = connect(sim)
    cert = served_cert(conn)
    nonce = secrets.token_bytes(32)
    status, hdrs, body = get(conn, f"/.well-known/nitro-attestation?nonce={nonce.hex()}")
    assert status == 200 and hdrs["Content-Type"] == "application/cbor"
    doc = verify_document(body, sim["root"].read_bytes())
    assert doc["user_data"] == hashlib.sha256(spki(cert)).digest()
    assert doc["nonce"] == nonce and doc["public_key"] is None
    for i, v in sim["pcrs"].items():
        assert doc["pcrs"][i] == v
    assert sorted(doc["pcrs"]) == list(range(16))
    assert any(doc["pcrs"][i] != bytes(48) for i in (0, 1, 2))
    # A second request on the same (kept-alive) connection gets a fresh document.
    nonce2 = secrets.token_bytes(32)
    _, _, body2 = get(conn, f"/.well-known/nitro-attestation?nonce={nonce2.hex()}")
    assert verify_document(body2, sim["root"].read_bytes())["nonce"] == nonce2
    conn.close()


def test_other_profiles(sim):
    conn = connect(sim)
    cert = served_cert(conn)
    cert_hash = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    root = sim["root"].read_bytes()
    nonce = secrets.token_bytes(20)
    status, _, body = get(conn, f"/enclave/attestation?nonce={nonce.hex()}")
    assert status == 200 and body.endswith(b"\n")
    doc = verify_document(base64.b64decode(body), root)
    assert doc["nonce"] == nonce and doc["user_data"][:34] == b"\x12\x20" + cert_hash
    status, _, body = get(conn, "/enclave/attestation")
    doc = verify_document(body, root)
    assert doc["nonce"] is None
    assert doc["user_data"] == b"sha256:" + cert_hash + b";sha256:" + bytes(32)
    status, _, body = get(conn, "/.well-known/attestation")
    doc = verify_document(base64.b64decode(json.loads(body)["attestation_doc"]), root)
    assert doc["user_data"] == spki(cert)
    conn.close()


def test_demo_endpoint_and_control_api(sim):
    control(sim, "POST", "/reset")
    conn = connect(sim)
    pin = hashlib.sha256(spki(served_cert(conn))).hexdigest()
    assert pin in control(sim, "GET", "/pins")
    get(conn, "/.well-known/nitro-attestation?nonce=" + "00" * 32)
    status, hdrs, body = get(conn, "/download?bytes=100000")
    assert status == 200 and len(body) == 100000
    assert hashlib.sha256(body).hexdigest() == hdrs["X-Content-SHA256"]
    payload = secrets.token_bytes(70000)
    status, _, body = get(conn, "/upload", "POST", payload)
    assert json.loads(body) == {"bytes": 70000, "sha256": hashlib.sha256(payload).hexdigest()}
    status, _, body = get(conn, "/v1/chat/completions", "POST",
                          json.dumps({"model": "m", "messages": []}),
                          {"Content-Type": "application/json"})
    chat = json.loads(body)
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["content"]
    conn.close()
    stats = control(sim, "GET", "/stats")
    assert stats["evidence_requests"] == 1 and stats["app_requests"] == 3
    log = control(sim, "GET", "/requests")
    assert [r["evidence"] for r in log] == [True, False, False, False]
    assert {r["pin"] for r in log} == {pin} and len({r["conn"] for r in log}) == 1


def test_misbehave_bad_signature_is_detected(sim):
    control(sim, "POST", "/misbehave", {"mode": "bad_signature"})
    try:
        conn = connect(sim)
        _, _, body = get(conn, "/.well-known/nitro-attestation?nonce=" + "11" * 32)
        conn.close()
        with pytest.raises(InvalidSignature):
            verify_document(body, sim["root"].read_bytes())
    finally:
        control(sim, "POST", "/misbehave", {"mode": None})
