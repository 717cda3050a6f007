"""tests/sim/chain.py builds what it claims: the default chain passes `openssl verify` with only
its root.pem trusted and has the AWS profile; each knob of Chain.create() breaks exactly the rule
it names (checked by openssl where openssl checks that rule, by inspection otherwise), and
save()/load() round-trips."""
import pathlib
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import chain as chainmod  # noqa: E402

NOW = time.time()


def openssl_verify(c, directory):
    """`openssl verify` of the leaf, trusting root.pem only, at NOW. Returns (ok, output)."""
    c.save(directory)
    d = pathlib.Path(directory)
    untrusted = d / "untrusted.pem"
    untrusted.write_bytes(b"".join(c.certs[lvl].public_bytes(serialization.Encoding.PEM)
                                   for lvl in c.levels[1:-1]))
    r = subprocess.run(["openssl", "verify", "-attime", str(int(NOW)), "-no-CApath",
                        "-no-CAfile", "-CAfile", str(d / "root.pem"), "-untrusted",
                        str(untrusted), str(d / "leaf.crt.pem")],
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0, r.stdout + r.stderr


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def test_default_chain_has_the_aws_profile(tmp_path):
    c = chainmod.Chain.create(NOW)
    ok, out = openssl_verify(c, tmp_path)
    assert ok, out
    for lvl, plen in (("root", None), ("regional", 2), ("zonal", 1), ("instance", 0)):
        cert = c.certs[lvl]
        bc = ext(cert, x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == plen
        ku = ext(cert, x509.KeyUsage)
        assert ku.critical and ku.value.key_cert_sign
        assert cert.public_key().curve.name == "secp384r1"
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    assert c.certs["root"].issuer == c.certs["root"].subject
    leaf = c.certs["leaf"]
    assert ext(leaf, x509.BasicConstraints).critical and not ext(leaf,
                                                                  x509.BasicConstraints).value.ca
    ku = ext(leaf, x509.KeyUsage)
    assert not ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert not any(isinstance(e.value, (x509.SubjectKeyIdentifier,
                                        x509.AuthorityKeyIdentifier)) for e in leaf.extensions)
    life = {lvl: (c.certs[lvl].not_valid_after - c.certs[lvl].not_valid_before).total_seconds()
            for lvl in chainmod.LEVELS}
    assert life["leaf"] <= 3 * 3600 + 60 and life["instance"] <= 86400
    assert life["zonal"] <= 7 * 86400 and life["regional"] <= 21 * 86400
    assert life["root"] >= 29 * 365 * 86400
    # Round trip.
    back = chainmod.Chain.load(tmp_path)
    assert back.cabundle() == c.cabundle() and back.der("leaf") == c.der("leaf")
    assert back.pinned_root == c.certs["root"]


OPENSSL_REFUSES = {  # name: (knobs, openssl's reason)
    "wrong_root": (dict(wrong_root=True), "unable to get local issuer certificate"),
    "leaf_expired": (dict(expired="leaf"), "certificate has expired"),
    "leaf_not_yet_valid": (dict(not_yet_valid="leaf"), "certificate is not yet valid"),
    "zonal_expired": (dict(expired="zonal"), "certificate has expired"),
    "instance_not_yet_valid": (dict(not_yet_valid="instance"), "certificate is not yet valid"),
    "instance_not_ca": (dict(not_ca="instance"), "invalid CA certificate"),
    "regional_no_certsign": (dict(no_certsign="regional"), "invalid CA certificate"),
    "extra_ca": (dict(extra_ca=True), "path length constraint exceeded"),
    "leaf_wrong_signer": (dict(leaf_wrong_signer=True), "certificate signature failure"),
}


@pytest.mark.parametrize("name", sorted(OPENSSL_REFUSES))
def test_knob_is_refused_by_openssl(tmp_path, name):
    knobs, reason = OPENSSL_REFUSES[name]
    c = chainmod.Chain.create(NOW, **knobs)
    ok, out = openssl_verify(c, tmp_path)
    assert not ok and reason in out, out
    if name == "extra_ca":
        assert len(c.cabundle()) == 5
        assert chainmod.Chain.load(tmp_path).cabundle() == c.cabundle()
    if name == "wrong_root":
        assert chainmod.Chain.load(tmp_path).pinned_root != c.certs["root"]


def test_knobs_openssl_accepts_but_nitro_forbids(tmp_path):
    """P-256, SHA-256 and a CA leaf are legal X.509; the Nitro profile forbids them."""
    c = chainmod.Chain.create(NOW, leaf_curve="P-256")
    assert c.certs["leaf"].public_key().curve.name == "secp256r1"
    c = chainmod.Chain.create(NOW, sha256="leaf")
    assert isinstance(c.certs["leaf"].signature_hash_algorithm, hashes.SHA256)
    assert isinstance(c.certs["instance"].signature_hash_algorithm, hashes.SHA384)
    c = chainmod.Chain.create(NOW, leaf_is_ca=True)
    assert ext(c.certs["leaf"], x509.BasicConstraints).value.ca
    c = chainmod.Chain.create(NOW, instance_ski=False)
    assert not any(isinstance(e.value, x509.SubjectKeyIdentifier)
                   for e in c.certs["instance"].extensions)
    ok, out = openssl_verify(c, tmp_path)
    assert ok, out  # a real shape (real-1..7 have it): must stay valid
    with pytest.raises(TypeError):
        chainmod.Chain.create(NOW, no_such_knob=True)
