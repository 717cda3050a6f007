"""A test PKI shaped like AWS Nitro's: root -> regional -> zonal -> instance -> NSM leaf.

Every key is P-384 and every certificate is signed with ecdsa-with-SHA384, with the extensions
and validity windows observed on real documents (shared/vectors/nitro/README.md): a 30-year
root, a ~20-day regional CA (pathLen 2), a ~6-day zonal CA (pathLen 1), a 24-hour instance CA
(pathLen 0) and a 3-hour leaf without SKI/AKI. Written independently of the daemon's verifier.
"""
import datetime
import os
import pathlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LEVELS = ("root", "regional", "zonal", "instance", "leaf")


def _name(cn):
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "AWS"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def make_cert(cn, key, issuer_name, issuer_key, not_before, not_after, *, ca, path_length=None,
              leaf=False, hash_alg=None, ski=True, instance=False):
    """One certificate with the Nitro profile. `issuer_key` None means self-signed."""
    b = (x509.CertificateBuilder()
         .subject_name(_name(cn))
         .issuer_name(issuer_name if issuer_name is not None else _name(cn))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True))
    if leaf:
        b = b.add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False,
                                          False), critical=False)
    elif instance:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, False, False,
                                          False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, ca, ca, False, False),
                            critical=True)
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False)
    signer = issuer_key if issuer_key is not None else key
    if ski and issuer_key is not None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    return b.sign(signer, hash_alg or hashes.SHA384())


def _utc(t):
    return datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc).replace(tzinfo=None)


class Chain:
    """keys[level] and certs[level] for LEVELS; cabundle() is root-first like the NSM's."""

    def __init__(self, keys, certs):
        self.keys = keys
        self.certs = certs

    @classmethod
    def create(cls, now=None, region="us-east-1", leaf_lifetime_s=3 * 3600 + 3,
               leaf_age_s=60):
        now = now if now is not None else datetime.datetime.now(datetime.timezone.utc).timestamp()
        keys = {lvl: ec.generate_private_key(ec.SECP384R1()) for lvl in LEVELS}
        tag = secrets.token_hex(8)
        inst = "i-" + secrets.token_hex(8)[:17]
        names = {
            "root": "test.nitro-enclaves",
            "regional": f"{tag}.{region}.test.nitro-enclaves",
            "zonal": f"{secrets.token_hex(8)}.zonal.{region}.test.nitro-enclaves",
            "instance": f"{inst}.{region}.test.nitro-enclaves",
            "leaf": f"{inst}-enc{secrets.token_hex(8)}.{region}.test",
        }
        windows = {
            "root": (now - 86400 * 365, now + 86400 * 365 * 30),
            "regional": (now - 86400 * 2, now + 86400 * 18),
            "zonal": (now - 86400, now + 86400 * 5),
            "instance": (now - 3600, now + 86400 - 3600),
            "leaf": (now - leaf_age_s, now - leaf_age_s + leaf_lifetime_s),
        }
        certs = {}
        certs["root"] = make_cert(names["root"], keys["root"], None, None,
                                  *map(_utc, windows["root"]), ca=True)
        prev = "root"
        for lvl, plen in (("regional", 2), ("zonal", 1), ("instance", 0)):
            certs[lvl] = make_cert(names[lvl], keys[lvl], certs[prev].subject, keys[prev],
                                   *map(_utc, windows[lvl]), ca=True, path_length=plen,
                                   instance=lvl == "instance")
            prev = lvl
        certs["leaf"] = make_cert(names["leaf"], keys["leaf"], certs["instance"].subject,
                                  keys["instance"], *map(_utc, windows["leaf"]), ca=False,
                                  leaf=True, ski=False)
        return cls(keys, certs)

    def renew_leaf(self, now=None, lifetime_s=3 * 3600 + 3, age_s=60, **kw):
        """A new NSM leaf under the same instance CA (the NSM re-issues it every few hours)."""
        now = now if now is not None else datetime.datetime.now(datetime.timezone.utc).timestamp()
        key = ec.generate_private_key(ec.SECP384R1())
        cn = self.certs["leaf"].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        cert = make_cert(cn, key, self.certs["instance"].subject, self.keys["instance"],
                         _utc(now - age_s), _utc(now - age_s + lifetime_s), ca=False, leaf=True,
                         ski=False, **kw)
        return key, cert

    def der(self, level):
        return self.certs[level].public_bytes(serialization.Encoding.DER)

    def cabundle(self):
        return [self.der(lvl) for lvl in ("root", "regional", "zonal", "instance")]

    def leaf_valid_at(self, t):
        c = self.certs["leaf"]
        return _utc(t) >= c.not_valid_before and _utc(t) < c.not_valid_after

    def save(self, directory):
        d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for lvl in LEVELS:
            (d / f"{lvl}.crt.pem").write_bytes(self.certs[lvl].public_bytes(
                serialization.Encoding.PEM))
            kp = d / f"{lvl}.key.pem"
            kp.write_bytes(self.keys[lvl].private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            os.chmod(kp, 0o600)
        (d / "root.pem").write_bytes(self.certs["root"].public_bytes(serialization.Encoding.PEM))

    @classmethod
    def load(cls, directory):
        d = pathlib.Path(directory)
        keys, certs = {}, {}
        for lvl in LEVELS:
            certs[lvl] = x509.load_pem_x509_certificate((d / f"{lvl}.crt.pem").read_bytes())
            keys[lvl] = serialization.load_pem_private_key((d / f"{lvl}.key.pem").read_bytes(),
                                                           None)
        return cls(keys, certs)

    @classmethod
    def load_or_create(cls, directory, min_leaf_life_s=1800):
        """The chain in `directory`; re-created when missing or when its leaf is about to expire
        (the root changes then, so callers must read root.pem afresh)."""
        d = pathlib.Path(directory)
        now = datetime.datetime.now(datetime.timezone.utc).timestamp()
        if (d / "leaf.crt.pem").exists():
            chain = cls.load(d)
            if chain.leaf_valid_at(now + min_leaf_life_s):
                return chain
            # Keep the root (and so the trust anchor configured for it) when possible.
            key, cert = chain.renew_leaf(now)
            chain.keys["leaf"], chain.certs["leaf"] = key, cert
            if chain.leaf_valid_at(now + min_leaf_life_s) and all(
                    _utc(now + min_leaf_life_s) < chain.certs[l].not_valid_after
                    for l in ("regional", "zonal", "instance")):
                chain.save(d)
                return chain
        chain = cls.create(now)
        chain.save(d)
        return chain
