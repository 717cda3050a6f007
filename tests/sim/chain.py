"""A test PKI shaped like AWS Nitro's: root -> regional -> zonal -> instance -> NSM leaf.

Every key is P-384 and every certificate is signed with ecdsa-with-SHA384, with the extensions
and validity windows observed on real documents (tests/vectors/nitro/README.md): a 30-year
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
# Knobs of Chain.create() that build a chain a strict verifier must refuse (see its docstring).
KNOBS = ("wrong_root", "expired", "not_yet_valid", "not_ca", "no_certsign", "extra_ca",
         "leaf_curve", "sha256", "leaf_wrong_signer", "leaf_is_ca", "instance_ski")
DIGITAL_SIGNATURE_ONLY = x509.KeyUsage(True, False, False, False, False, False, False, False,
                                       False)


def _name(cn):
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "AWS"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def make_cert(cn, key, issuer_name, issuer_key, not_before, not_after, *, ca, path_length=None,
              leaf=False, hash_alg=None, ski=True, instance=False, key_usage=None):
    """One certificate with the Nitro profile. `issuer_key` None means self-signed.
    `key_usage` (an x509.KeyUsage) replaces the profile's key usage, marked critical."""
    b = (x509.CertificateBuilder()
         .subject_name(_name(cn))
         .issuer_name(issuer_name if issuer_name is not None else _name(cn))
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True))
    if key_usage is not None:
        b = b.add_extension(key_usage, critical=True)
    elif leaf:
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
    """keys[level] and certs[level] for LEVELS (plus "extra" with the extra_ca knob);
    cabundle() is root-first like the NSM's. `pinned_root` is the root a verifier trusts
    (root.pem): certs["root"] unless the wrong_root knob made them differ."""

    def __init__(self, keys, certs, pinned_root=None):
        self.keys = keys
        self.certs = certs
        self.pinned_root = pinned_root if pinned_root is not None else certs["root"]

    @property
    def levels(self):
        return LEVELS[:4] + (("extra",) if "extra" in self.certs else ()) + ("leaf",)

    @classmethod
    def create(cls, now=None, region="us-east-1", leaf_lifetime_s=3 * 3600 + 3,
               leaf_age_s=60, **knobs):
        """A fresh chain valid at `now` (seconds since the epoch). Knobs break it on purpose:
          wrong_root=True        root.pem (pinned_root) is another root with the same name
          expired=LEVEL          LEVEL's certificate expired an hour before now
          not_yet_valid=LEVEL    LEVEL's certificate becomes valid an hour after now
          not_ca=LEVEL           intermediate LEVEL has basicConstraints cA=FALSE
          no_certsign=LEVEL      intermediate LEVEL's keyUsage is digitalSignature only
          extra_ca=True          a fifth CA ("extra") under the instance CA (pathLen 0) issues
                                 the leaf; cabundle() then has 5 entries
          leaf_curve="P-256"     the leaf key is on P-256 (or pass an ec curve instance)
          sha256=LEVEL           LEVEL is signed with ecdsa-with-SHA256
          leaf_wrong_signer=True the leaf names the instance CA but is signed by another key
          leaf_is_ca=True        the leaf has cA=TRUE and keyCertSign
          instance_ski=False     instance CA without SKI/AKI (valid: some real chains)
        LEVEL is one of root, regional, zonal, instance, leaf."""
        unknown = set(knobs) - set(KNOBS)
        if unknown:
            raise TypeError(f"unknown chain knobs: {sorted(unknown)}")
        now = now if now is not None else datetime.datetime.now(datetime.timezone.utc).timestamp()
        keys = {lvl: ec.generate_private_key(ec.SECP384R1()) for lvl in LEVELS}
        curve = knobs.get("leaf_curve")
        if curve is not None:
            curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(),
                     "P-521": ec.SECP521R1()}.get(curve, curve)
            keys["leaf"] = ec.generate_private_key(curve)
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
        for knob, shift in (("expired", lambda nb, na: now - 3600 - na),
                            ("not_yet_valid", lambda nb, na: now + 3600 - nb)):
            lvl = knobs.get(knob)
            if lvl is not None:
                nb, na = windows[lvl]
                windows[lvl] = (nb + shift(nb, na), na + shift(nb, na))

        def extra(lvl):
            kw = {}
            if knobs.get("sha256") == lvl:
                kw["hash_alg"] = hashes.SHA256()
            if knobs.get("not_ca") == lvl:
                kw.update(ca=False, path_length=None)
            if knobs.get("no_certsign") == lvl:
                kw["key_usage"] = DIGITAL_SIGNATURE_ONLY
            return kw

        certs = {}
        certs["root"] = make_cert(names["root"], keys["root"], None, None,
                                  *map(_utc, windows["root"]), ca=True, **extra("root"))
        prev = "root"
        for lvl, plen in (("regional", 2), ("zonal", 1), ("instance", 0)):
            kw = dict(ca=True, path_length=plen, instance=lvl == "instance")
            if lvl == "instance" and knobs.get("instance_ski") is False:
                kw["ski"] = False
            kw.update(extra(lvl))
            certs[lvl] = make_cert(names[lvl], keys[lvl], certs[prev].subject, keys[prev],
                                   *map(_utc, windows[lvl]), **kw)
            prev = lvl
        if knobs.get("extra_ca"):
            keys["extra"] = ec.generate_private_key(ec.SECP384R1())
            certs["extra"] = make_cert(f"extra.{region}.test.nitro-enclaves", keys["extra"],
                                       certs["instance"].subject, keys["instance"],
                                       *map(_utc, windows["instance"]), ca=True,
                                       instance=True)
            prev = "extra"
        leaf_kw = dict(ca=False, leaf=True, ski=False)
        if knobs.get("leaf_is_ca"):
            leaf_kw = dict(ca=True, key_usage=x509.KeyUsage(True, False, False, False, False,
                                                            True, True, False, False))
        leaf_kw.update(extra("leaf"))
        signer = keys[prev]
        if knobs.get("leaf_wrong_signer"):
            signer = ec.generate_private_key(ec.SECP384R1())
        certs["leaf"] = make_cert(names["leaf"], keys["leaf"], certs[prev].subject, signer,
                                  *map(_utc, windows["leaf"]), **leaf_kw)
        pinned = None
        if knobs.get("wrong_root"):
            pinned = make_cert(names["root"], ec.generate_private_key(ec.SECP384R1()), None,
                               None, *map(_utc, windows["root"]), ca=True)
        return cls(keys, certs, pinned)

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
        return [self.der(lvl) for lvl in self.levels[:-1]]

    def leaf_valid_at(self, t):
        c = self.certs["leaf"]
        return _utc(t) >= c.not_valid_before and _utc(t) < c.not_valid_after

    def save(self, directory):
        d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for lvl in self.levels:
            (d / f"{lvl}.crt.pem").write_bytes(self.certs[lvl].public_bytes(
                serialization.Encoding.PEM))
            kp = d / f"{lvl}.key.pem"
            kp.write_bytes(self.keys[lvl].private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            os.chmod(kp, 0o600)
        (d / "root.pem").write_bytes(self.pinned_root.public_bytes(serialization.Encoding.PEM))

    @classmethod
    def load(cls, directory):
        d = pathlib.Path(directory)
        keys, certs = {}, {}
        has_extra = (d / "extra.crt.pem").exists()
        for lvl in LEVELS[:4] + (("extra",) if has_extra else ()) + LEVELS[4:]:
            certs[lvl] = x509.load_pem_x509_certificate((d / f"{lvl}.crt.pem").read_bytes())
            keys[lvl] = serialization.load_pem_private_key((d / f"{lvl}.key.pem").read_bytes(),
                                                           None)
        pinned = None
        if (d / "root.pem").exists():
            pinned = x509.load_pem_x509_certificate((d / "root.pem").read_bytes())
        return cls(keys, certs, pinned)

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
