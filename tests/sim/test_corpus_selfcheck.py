"""The forged corpus is what it claims to be: every "accept" case verifies with cbor2 and
python3-cryptography alone (chain to the corpus root, ES384 over the Sig_structure)."""
import base64
import json
import pathlib
import subprocess

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

GEN = pathlib.Path(__file__).resolve().parent / "gen_corpus.py"


def document(raw):
    if raw[:1] == b"{":
        env = json.loads(raw)
        raw = base64.b64decode(next(v for k, v in env.items()))
    elif raw[:1] not in (b"\x84", b"\xd2", b"\x9f"):
        raw = base64.b64decode(raw)
    item = cbor2.loads(raw)
    return item.value if isinstance(item, cbor2.CBORTag) else item


def test_accept_cases_verify_independently(tmp_path):
    subprocess.run(["/usr/bin/python3", str(GEN), str(tmp_path)], check=True, timeout=120)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    accepted = [c for c in manifest["cases"] if c["expect"] == "accept"]
    assert len(accepted) >= 20 and len(manifest["cases"]) >= 100
    root = x509.load_pem_x509_certificate((tmp_path / "root.pem").read_bytes())
    for case in accepted:
        protected, unprotected, payload, sig = document((tmp_path / case["file"]).read_bytes())
        assert protected == bytes.fromhex("a1013822") and unprotected == {} and len(sig) == 96
        doc = cbor2.loads(payload)
        certs = [x509.load_der_x509_certificate(d) for d in doc["cabundle"]]
        assert certs[0] == root
        chain = certs + [x509.load_der_x509_certificate(doc["certificate"])]
        for issuer, cert in zip(chain, chain[1:]):
            issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                       ec.ECDSA(hashes.SHA384()))
        to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
        der = encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
        chain[-1].public_key().verify(der, to_sign, ec.ECDSA(hashes.SHA384()))


def _binding_holds(binding, doc, peer_der):
    """BRIEF §4, recomputed here from the peer certificate alone."""
    import hashlib
    from cryptography.hazmat.primitives import serialization
    peer = x509.load_der_x509_certificate(peer_der)
    spki = peer.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    ud, cert_hash = doc["user_data"] or b"", hashlib.sha256(peer_der).digest()
    if binding == "spki_sha256":
        return ud == hashlib.sha256(spki).digest()
    if binding == "public_key_spki":
        return doc["public_key"] == spki
    if binding == "spki_der":
        return ud == spki
    if binding == "cert_sha256":
        return ud == cert_hash
    if binding == "nitriding":
        prefix = b"\x12\x20" + cert_hash
        return ud == prefix or (len(ud) == 68 and ud[:34] == prefix and ud[34:36] == b"\x12\x20")
    if binding == "blindai":
        return len(ud) == 79 and ud[:47] == b"sha256:" + cert_hash + b";sha256:"
    raise AssertionError(binding)


def test_accept_cases_satisfy_their_policy(tmp_path):
    """Beyond the signature: each accept case also meets the policy and binding its manifest
    entry states (digest, timestamp window, nonce, one measurement set, debug, binding)."""
    subprocess.run(["/usr/bin/python3", str(GEN), str(tmp_path)], check=True, timeout=120)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    accepted = [c for c in manifest["cases"] if c["expect"] == "accept"]
    for case in accepted:
        _, _, payload, _ = document((tmp_path / case["file"]).read_bytes())
        doc = cbor2.loads(payload)
        assert doc["digest"] == "SHA384", case["name"]
        assert (case["now_ms"] - case["max_age_ms"] <= doc["timestamp"]
                <= case["now_ms"] + case["skew_ms"]), case["name"]
        if case["nonce"] is not None:
            assert doc["nonce"] == bytes.fromhex(case["nonce"]), case["name"]
        assert any(all(doc["pcrs"].get(int(i)) == bytes.fromhex(v) for i, v in s.items())
                   for s in case["measurements"]), case["name"]
        debug = all(doc["pcrs"].get(i) == bytes(48) for i in (0, 1, 2))
        assert case["allow_debug"] or not debug, case["name"]
        if case["binding"] != "none":
            peer_der = (tmp_path / case["peer_cert"]).read_bytes()
            assert _binding_holds(case["binding"], doc, peer_der), case["name"]
