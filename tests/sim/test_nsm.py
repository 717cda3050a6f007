"""tests/sim/nsm.py: our CBOR encoder agrees with cbor2 on well-formed items, documents have the
NSM's exact layout and verify with cbor2 + cryptography, the six bindings are what BRIEF §4
says, and each corruption of make_document() does what it names."""
import hashlib
import pathlib
import sys
import time

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import chain as chainmod  # noqa: E402
import nsm  # noqa: E402


KEYS = ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key",
        "user_data", "nonce"]


@pytest.fixture(scope="module")
def chain():
    return chainmod.Chain.create(time.time())


@pytest.mark.parametrize("value", [
    0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -24, -25, -256, -257,
    -2**64, b"", b"x" * 23, b"x" * 24, b"x" * 300, "", "é" * 30, None, True, False,
    [1, [2, b"3"]], {"a": 1, 2: [None]}, [b"\x00" * 70000]])
def test_encoder_matches_cbor2(value):
    assert nsm.enc(value) == cbor2.dumps(value)
    assert cbor2.loads(nsm.enc(value)) == value


def test_indefinite_and_tags():
    assert cbor2.loads(nsm.enc(nsm.Indef({"a": 1}))) == {"a": 1}
    assert nsm.enc(nsm.Indef([1]))[0] == 0x9f
    t = cbor2.loads(nsm.enc(nsm.Tag(18, [1])))
    assert t.tag == 18 and t.value == [1]


def verify(doc, chain):
    item = cbor2.loads(doc)
    item = item.value if isinstance(item, cbor2.CBORTag) else item
    protected, unprotected, payload, sig = item
    der = encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
    chain.certs["leaf"].public_key().verify(
        der, cbor2.dumps(["Signature1", protected, b"", payload]), ec.ECDSA(hashes.SHA384()))
    return protected, unprotected, cbor2.loads(payload)


def test_document_layout(chain):
    nonce = bytes(range(32))
    doc = nsm.make_document(chain, user_data=b"u", nonce=nonce, timestamp_ms=1_700_000_000_000)
    assert doc[:6] == bytes.fromhex("8444a1013822") and doc[6] == 0xa0
    sig_head = doc[-98:-96]
    assert sig_head == b"\x58\x60"  # bstr(96)
    protected, unprotected, p = verify(doc, chain)
    assert protected == bytes.fromhex("a1013822") and unprotected == {}
    assert list(p) == KEYS and p["digest"] == "SHA384" and p["nonce"] == nonce
    assert sorted(p["pcrs"]) == list(range(16)) and all(len(v) == 48 for v in p["pcrs"].values())
    assert p["cabundle"] == chain.cabundle() and p["certificate"] == chain.der("leaf")
    assert p["public_key"] is None and p["timestamp"] == 1_700_000_000_000
    assert verify(nsm.make_document(chain, tagged=True), chain)[2]["nonce"] is None
    assert verify(nsm.make_document(chain, indefinite_map=True), chain)[2]["digest"] == "SHA384"


def self_signed_p256():
    import datetime
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer.test")])
    now = datetime.datetime.utcnow()
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_bindings():
    cert = self_signed_p256()
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    cder = cert.public_bytes(serialization.Encoding.DER)
    ch = hashlib.sha256(cder).digest()
    assert nsm.binding_fields("spki_sha256", cert) == (None, hashlib.sha256(spki).digest())
    assert nsm.binding_fields("public_key_spki", cert) == (spki, None)
    assert nsm.binding_fields("spki_der", cert) == (None, spki)
    assert nsm.binding_fields("cert_sha256", cert) == (None, ch)
    assert nsm.binding_fields("nitriding", cert) == (None, b"\x12\x20" + ch + b"\x12\x20"
                                                     + bytes(32))
    assert nsm.binding_fields("blindai", cert) == (None, b"sha256:" + ch + b";sha256:"
                                                   + bytes(32))


def test_corruptions(chain):
    _, _, p = verify(nsm.make_document(chain, fields={"nonce": nsm.DROP, "extra": 1},
                                       digest="SHA256"), chain)
    assert "nonce" not in p and p["extra"] == 1 and p["digest"] == "SHA256"
    prot = nsm.enc({1: -7})
    assert verify(nsm.make_document(chain, protected=prot), chain)[0] == prot
    assert verify(nsm.make_document(chain, unprotected={4: b"k"}), chain)[1] == {4: b"k"}
    assert cbor2.loads(nsm.make_document(chain, signature=b"\x01" * 95))[3] == b"\x01" * 95
    with pytest.raises(InvalidSignature):
        verify(nsm.make_document(chain, flip_payload_bit=1000), chain)
    doc = nsm.make_document(chain, trailing=b"\x00")
    assert doc[:-1] == nsm.make_document(chain, timestamp_ms=cbor2.loads(
        cbor2.loads(doc[:-1])[2])["timestamp"], signature=cbor2.loads(doc[:-1])[3])
    with pytest.raises(TypeError):
        nsm.make_document(chain, no_such_corruption=1)
