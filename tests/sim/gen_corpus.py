#!/usr/bin/python3
"""Writes a forged and valid attestation-document corpus for the daemon's verifier tests:

    /usr/bin/python3 tests/sim/gen_corpus.py OUTDIR

OUTDIR gets root.pem (the test root; chain/ holds the whole test PKI), peer.der and other.der
(self-signed TLS certificates for binding cases), one <name>.bin per case and manifest.json:
{"root_ca": "root.pem", "now_ms": ..., "cases": [{name (also as "case"), file, expect, stage,
now_ms, nonce, measurements, allow_debug, max_age_ms, skew_ms, binding, peer_cert, why}, ...]}.
One case per rule of BRIEF §2.3-§2.4; `stage` is where a strict verifier must
reject. Built from tests/sim/chain.py and nsm.py, independently of the daemon's verifier.
"""
import base64
import datetime
import hashlib
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import chain as chainmod  # noqa: E402
import nsm  # noqa: E402
from nsm import Indef, Raw, Tag, enc  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

NOW_S = 1_790_000_000  # 2026-09-21T14:13:20Z: a fixed instant keeps the manifest stable
NOW_MS = NOW_S * 1000
MAX_AGE = 300_000
SKEW = 60_000
NONCE = bytes(range(32))
N = 0xffffffff_ffffffff_ffffffff_ffffffff_ffffffff_ffffffff_c7634d81_f4372ddf_581a0db2_48b0a77a_ecec196a_ccc52973


def utc(t):
    return datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc).replace(tzinfo=None)


def self_signed(key, cn="enclave.test", hash_alg=None):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(utc(NOW_S - 86400)).not_valid_after(utc(NOW_S + 86400))
            .sign(key, hash_alg or hashes.SHA256()))


class Corpus:
    def __init__(self, out):
        self.out = pathlib.Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.chain = chainmod.Chain.create(NOW_S)
        self.chain.save(self.out / "chain")
        (self.out / "root.pem").write_bytes((self.out / "chain" / "root.pem").read_bytes())
        self.pcrs = nsm.default_pcrs("corpus")
        self.meas = [{str(i): self.pcrs[i].hex() for i in (0, 1, 2)}]
        self.peer = self_signed(ec.generate_private_key(ec.SECP256R1()))
        self.other = self_signed(ec.generate_private_key(ec.SECP256R1()), "other.test")
        for name, cert in (("peer.der", self.peer), ("other.der", self.other)):
            (self.out / name).write_bytes(cert.public_bytes(serialization.Encoding.DER))
        self.cases = []

    # -- building blocks ---------------------------------------------------------------------

    def payload(self, **over):
        m = nsm.payload_map(self.chain, self.pcrs, None, None, NONCE, NOW_MS - 1000)
        for k, v in over.items():
            if v is DROP:
                m.pop(k)
            else:
                m[k] = v
        return m

    def sign(self, payload_bytes, key=None, protected=nsm.PROTECTED_ES384):
        return nsm.sign_raw(key or self.chain.keys["leaf"],
                            nsm.sig_structure(protected, payload_bytes))

    def doc(self, payload_obj=None, indef=False, tagged=False, key=None, **over):
        m = payload_obj if payload_obj is not None else self.payload(**over)
        p = enc(Indef(m) if indef else m)
        d = enc([nsm.PROTECTED_ES384, {}, p, self.sign(p, key)])
        return enc(Tag(18, Raw(d))) if tagged else d

    def add(self, name, data, expect, stage, why, **kw):
        f = f"{name}.bin"
        (self.out / f).write_bytes(data)
        case = {"name": name, "case": name, "file": f, "expect": expect, "stage": stage, "now_ms": NOW_MS,
                "nonce": NONCE.hex(), "measurements": self.meas, "allow_debug": False,
                "max_age_ms": MAX_AGE, "skew_ms": SKEW, "binding": "none", "peer_cert": None,
                "why": why}
        case.update(kw)
        self.cases.append(case)

    def accept(self, name, data, why, **kw):
        self.add(name, data, "accept", None, why, **kw)

    def reject(self, name, data, stage, why, **kw):
        self.add(name, data, "reject", stage, why, **kw)

    def chain_with(self, **knobs):
        """A copy of the chain with some certificates replaced (knobs: level -> (key, cert))."""
        c = chainmod.Chain(dict(self.chain.keys), dict(self.chain.certs))
        for lvl, (k, cert) in knobs.items():
            c.keys[lvl], c.certs[lvl] = k, cert
        return c

    def doc_for_chain(self, c, cabundle=None):
        m = self.payload(certificate=c.der("leaf"),
                         cabundle=cabundle if cabundle is not None else c.cabundle())
        p = enc(m)
        return enc([nsm.PROTECTED_ES384, {}, p, self.sign(p, c.keys["leaf"])])

    def cert(self, lvl, issuer_lvl, c=None, key=None, nb=None, na=None, **kw):
        """A new certificate for `lvl` issued by `issuer_lvl` of chain `c` (default ours)."""
        c = c or self.chain
        key = key or ec.generate_private_key(ec.SECP384R1())
        old = c.certs[lvl]
        cn = old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        profile = {"regional": dict(ca=True, path_length=2), "zonal": dict(ca=True, path_length=1),
                   "instance": dict(ca=True, path_length=0, instance=True),
                   "leaf": dict(ca=False, leaf=True, ski=False)}[lvl]
        profile.update(kw)
        cert = chainmod.make_cert(cn, key, c.certs[issuer_lvl].subject, c.keys[issuer_lvl],
                                  nb or old.not_valid_before, na or old.not_valid_after, **profile)
        return key, cert


DROP = object()


def generate(out):
    C = Corpus(out)
    peer_spki = nsm.spki_der(C.peer)

    # ---- accepted -------------------------------------------------------------------------
    C.accept("ok_baseline", C.doc(), "an NSM-shaped document, untagged, definite map")
    C.accept("ok_tag18", C.doc(tagged=True), "COSE_Sign1 wrapped in tag 18 (AWS: readers accept)")
    C.accept("ok_indefinite_map", C.doc(indef=True), "indefinite-length payload map (2025+ NSM)")
    C.accept("ok_nulls", C.doc(public_key=None, user_data=None, nonce=None),
             "null public_key/user_data/nonce, no nonce expected", nonce=None)
    pcrs17 = dict(C.pcrs)
    pcrs17[16] = hashlib.sha384(b"app").digest()
    C.accept("ok_17_pcrs", C.doc(pcrs=pcrs17), "PCR16 locked by the application")
    C.accept("ok_1024_fields", C.doc(public_key=b"\x01" * 1024, user_data=b"\x01" * 1024),
             "1024-byte public_key and user_data, as AWS's own test sends")
    C.accept("ok_1024_nonce", C.doc(nonce=b"\x02" * 1024), "a 1024-byte nonce, sent and echoed",
             nonce=(b"\x02" * 1024).hex())
    C.accept("ok_age_edge", C.doc(timestamp=NOW_MS - MAX_AGE), "exactly max_age old")
    C.accept("ok_future_edge", C.doc(timestamp=NOW_MS + SKEW), "exactly skew in the future")
    other_set = {"0": hashlib.sha384(b"old release").hexdigest()}
    C.accept("ok_second_set", C.doc(), "the second of two measurement sets matches",
             measurements=[other_set] + C.meas)
    dbg = dict(C.pcrs)
    for i in (0, 1, 2):
        dbg[i] = bytes(48)
    C.accept("ok_debug_allowed", C.doc(pcrs=dbg), "debug-mode enclave with allow_debug",
             allow_debug=True, measurements=[{"3": bytes(48).hex()}])
    for b in ("spki_sha256", "public_key_spki", "spki_der", "cert_sha256", "nitriding",
              "blindai"):
        pk, ud = nsm.binding_fields(b, C.peer)
        C.accept(f"ok_binding_{b}", C.doc(public_key=pk, user_data=ud),
                 f"{b} binding to the peer certificate", binding=b, peer_cert="peer.der")
    ud = b"\x12\x20" + hashlib.sha256(nsm.cert_der(C.peer)).digest()
    C.accept("ok_binding_nitriding_short", C.doc(user_data=ud),
             "nitriding binding without the application hash", binding="nitriding",
             peer_cert="peer.der")
    raw = C.doc()
    b64 = base64.encodebytes(raw)
    C.accept("ok_envelope_base64", b64, "base64 with newlines every 76 characters")
    for key in ("attestation_doc", "attestation_document", "document", "body"):
        C.accept(f"ok_envelope_json_{key}",
                 json.dumps({key: base64.b64encode(raw).decode()}).encode(),
                 f"JSON envelope with the document in {key}")

    # ---- envelope -------------------------------------------------------------------------
    C.reject("env_garbage", b"\x00\x01not evidence at all", "cose",
             "neither CBOR, JSON nor base64: handed to the CBOR decoder (docs/attestation.md)")
    C.reject("env_bad_base64", b"QUJDRA==QUJD$$$$", "envelope", "base64-looking but malformed")
    C.reject("env_json_no_key", json.dumps({"doc": base64.b64encode(raw).decode()}).encode(),
             "envelope", "JSON without a known key")
    C.reject("env_json_not_string", json.dumps({"attestation_doc": 12}).encode(), "envelope",
             "JSON key with a number")
    C.reject("env_too_large", base64.b64encode(b"\x84" + b"\x00" * 17000), "envelope",
             "over 16 KiB once decoded")
    C.reject("env_empty", b"", "envelope", "empty body")

    # ---- COSE -----------------------------------------------------------------------------
    p = enc(C.payload())
    sig = C.sign(p)
    P = nsm.PROTECTED_ES384
    C.reject("cose_not_array", enc({"a": 1}), "cose", "a map, not COSE_Sign1")
    C.reject("cose_3_elements", enc([P, {}, p]), "cose", "array of 3")
    C.reject("cose_5_elements", enc([P, {}, p, sig, b""]), "cose", "array of 5")
    C.reject("cose_tag98", enc(Tag(98, Raw(enc([P, {}, p, sig])))), "cose", "tag 98 (COSE_Sign)")
    C.reject("cose_tag18_twice", enc(Tag(18, Tag(18, Raw(enc([P, {}, p, sig]))))), "cose",
             "tag 18 nested in tag 18")
    p7 = enc({1: -7})
    C.reject("cose_alg_es256", enc([p7, {}, p, C.sign(p, protected=p7)]), "cose",
             "protected header {1: -7}")
    pext = enc({1: -35, 4: b"kid"})
    C.reject("cose_protected_extra", enc([pext, {}, p, C.sign(p, protected=pext)]), "cose",
             "protected header with a kid")
    C.reject("cose_protected_map", enc([{1: -35}, {}, p, sig]), "cose",
             "protected header as a map instead of a bstr")
    C.reject("cose_unprotected_nonempty", enc([P, {4: b"kid"}, p, sig]), "cose",
             "unprotected header not empty (unsigned, attacker-controlled)")
    C.reject("cose_unprotected_null", enc([P, None, p, sig]), "cose", "unprotected header null")
    C.reject("cose_sig_95", enc([P, {}, p, sig[:95]]), "cose", "95-byte signature")
    C.reject("cose_sig_97", enc([P, {}, p, sig + b"\x00"]), "cose", "97-byte signature")
    r, s = int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big")
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    C.reject("cose_sig_der", enc([P, {}, p, encode_dss_signature(r, s)]), "cose",
             "ASN.1 DER signature instead of raw r||s")
    good = enc([P, {}, p, sig])
    C.reject("cose_trailing_byte", good + b"\x00", "cose", "a byte after the COSE array")
    C.reject("cose_truncated", good[:-10], "cose", "the signature cut short")
    chunked = b"\x5f" + enc(p[:100]) + enc(p[100:]) + b"\xff"
    C.reject("cose_payload_indefinite_bstr", enc([P, {}, Raw(chunked), sig]), "cose",
             "payload as an indefinite-length (chunked) byte string")
    C.reject("cose_payload_not_bstr", enc([P, {}, C.payload(), sig]), "cose",
             "payload as a map instead of a bstr")
    C.reject("cose_payload_empty", enc([P, {}, b"", C.sign(b"")]), "cose", "empty payload")
    C.accept("ok_indefinite_array", enc(Indef([P, {}, p, sig])),
             "indefinite-length outer array of exactly 4 (equivalent per RFC 8949; decision in "
             "docs/attestation.md)")

    # ---- payload --------------------------------------------------------------------------
    for k in ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"):
        C.reject(f"payload_missing_{k}", C.doc(**{k: DROP}), "payload", f"{k} missing")
    m = C.payload()
    m["extra"] = 1
    C.reject("payload_unknown_key", C.doc(payload_obj=m), "payload", "a tenth, unknown key")
    dup = enc(C.payload())
    dup = bytes([dup[0] + 1]) + dup[1:] + enc("nonce") + enc(NONCE)  # map(10) with nonce twice
    C.reject("payload_duplicate_key", enc([P, {}, dup, C.sign(dup)]), "payload",
             "nonce appears twice")
    C.reject("payload_null_timestamp", C.doc(timestamp=None), "payload", "null mandatory key")
    C.reject("payload_timestamp_text", C.doc(timestamp="1790000000000"), "payload",
             "timestamp as text")
    C.reject("payload_pcrs_array", C.doc(pcrs=[C.pcrs[0]]), "payload", "pcrs as an array")
    C.reject("payload_cabundle_map", C.doc(cabundle={0: C.chain.der("root")}), "payload",
             "cabundle as a map")
    C.reject("payload_user_data_text", C.doc(user_data="text"), "payload", "user_data as text")
    C.reject("payload_empty_module_id", C.doc(module_id=""), "payload", "empty module_id")
    C.reject("payload_timestamp_zero", C.doc(timestamp=0), "payload", "timestamp 0")
    C.reject("payload_pcrs_empty", C.doc(pcrs={}), "payload", "no PCRs")
    many = {i: hashlib.sha384(bytes([i])).digest() for i in range(33)}
    C.reject("payload_33_pcrs", C.doc(pcrs=many), "payload", "33 PCR entries")
    p32 = dict(C.pcrs)
    p32[32] = bytes(48)
    C.reject("payload_pcr_index_32", C.doc(pcrs=p32), "payload", "PCR index 32")
    dp = enc(C.payload())
    pc = enc(dict(sorted(C.pcrs.items())))
    pc_dup = bytes([pc[0] + 1]) + pc[1:] + enc(0) + enc(C.pcrs[0])
    dp = dp.replace(pc, pc_dup)
    C.reject("payload_pcr_duplicate_index", enc([P, {}, dp, C.sign(dp)]), "payload",
             "PCR 0 twice")
    p47 = dict(C.pcrs)
    p47[5] = bytes(47)
    C.reject("payload_pcr_47_bytes", C.doc(pcrs=p47), "payload", "a 47-byte PCR")
    C.reject("payload_certificate_empty", C.doc(certificate=b""), "payload", "empty certificate")
    C.reject("payload_certificate_1025", C.doc(certificate=b"\x30" * 1025), "payload",
             "certificate over 1024 bytes")
    C.reject("payload_cabundle_empty", C.doc(cabundle=[]), "payload", "empty cabundle")
    C.reject("payload_cabundle_entry_text", C.doc(cabundle=["root"]), "payload",
             "cabundle entry as text")
    for k in ("public_key", "user_data", "nonce"):
        C.reject(f"payload_{k}_1025", C.doc(**{k: b"\x01" * 1025}), "payload",
                 f"{k} of 1025 bytes")
    C.reject("payload_tag_inside", C.doc(timestamp=Tag(1, NOW_MS - 1000)), "payload",
             "a tag inside the payload")
    ik = {1 if k == "module_id" else k: v for k, v in C.payload().items()}
    C.reject("payload_integer_key", C.doc(payload_obj=ik), "payload", "an integer key")

    # ---- chain ----------------------------------------------------------------------------
    other = chainmod.Chain.create(NOW_S)
    C.reject("chain_foreign_root", C.doc_for_chain(other), "chain",
             "a complete chain under another root")
    C.reject("chain_cabundle0_not_root",
             C.doc_for_chain(C.chain, [other.der("root")] + C.chain.cabundle()[1:]), "chain",
             "cabundle[0] is not the pinned root")
    C.reject("chain_leaf_first_order", C.doc_for_chain(C.chain, C.chain.cabundle()[::-1]),
             "chain", "cabundle in leaf-first order")
    cb = C.chain.cabundle()
    C.reject("chain_missing_intermediate", C.doc_for_chain(C.chain, [cb[0], cb[1], cb[3]]),
             "chain", "the zonal CA is missing")
    k, c = C.cert("leaf", "instance", nb=utc(NOW_S - 4 * 3600), na=utc(NOW_S - 3600))
    C.reject("chain_leaf_expired", C.doc_for_chain(C.chain_with(leaf=(k, c))), "chain",
             "leaf expired an hour ago")
    k, c = C.cert("leaf", "instance", nb=utc(NOW_S + 3600), na=utc(NOW_S + 4 * 3600))
    C.reject("chain_leaf_not_yet_valid", C.doc_for_chain(C.chain_with(leaf=(k, c))), "chain",
             "leaf valid only from an hour from now")
    ki, ci = C.cert("instance", "zonal", nb=utc(NOW_S - 2 * 86400), na=utc(NOW_S - 3600))
    ch = C.chain_with(instance=(ki, ci))
    kl, cl = C.cert("leaf", "instance", c=ch)
    C.reject("chain_intermediate_expired", C.doc_for_chain(C.chain_with(instance=(ki, ci),
                                                                        leaf=(kl, cl))),
             "chain", "the instance CA expired")
    for name, kw, why in (("chain_intermediate_not_ca", dict(ca=False, path_length=None),
                           "instance CA with cA=FALSE"),
                          ("chain_intermediate_no_certsign", dict(instance=False),
                           "instance CA without keyCertSign")):
        ki, ci = C.cert("instance", "zonal", **kw)
        if name == "chain_intermediate_no_certsign":
            # keyUsage digitalSignature only: rebuild without keyCertSign.
            key = ec.generate_private_key(ec.SECP384R1())
            b = (x509.CertificateBuilder().subject_name(C.chain.certs["instance"].subject)
                 .issuer_name(C.chain.certs["zonal"].subject).public_key(key.public_key())
                 .serial_number(x509.random_serial_number())
                 .not_valid_before(C.chain.certs["instance"].not_valid_before)
                 .not_valid_after(C.chain.certs["instance"].not_valid_after)
                 .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                 .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                              False, False), critical=True))
            ki, ci = key, b.sign(C.chain.keys["zonal"], hashes.SHA384())
        ch = C.chain_with(instance=(ki, ci))
        kl, cl = C.cert("leaf", "instance", c=ch)
        C.reject(name, C.doc_for_chain(C.chain_with(instance=(ki, ci), leaf=(kl, cl))), "chain",
                 why)
    # pathLen: an extra CA under the instance CA, whose pathLen is 0.
    kx = ec.generate_private_key(ec.SECP384R1())
    cx = chainmod.make_cert("extra.test.nitro-enclaves", kx, C.chain.certs["instance"].subject,
                            C.chain.keys["instance"], utc(NOW_S - 3600), utc(NOW_S + 86400),
                            ca=True, path_length=None, instance=True)
    kl = ec.generate_private_key(ec.SECP384R1())
    cl = chainmod.make_cert("leaf.extra.test", kl, cx.subject, kx, utc(NOW_S - 60),
                            utc(NOW_S + 3 * 3600), ca=False, leaf=True, ski=False)
    bundle = C.chain.cabundle() + [cx.public_bytes(serialization.Encoding.DER)]
    C.reject("chain_pathlen_exceeded", C.doc_for_chain(C.chain_with(leaf=(kl, cl)), bundle),
             "chain", "a fifth CA under the instance CA whose pathLen is 0")
    kp = ec.generate_private_key(ec.SECP256R1())
    k, c = C.cert("leaf", "instance", key=kp)
    C.reject("chain_leaf_p256", C.doc_for_chain(C.chain_with(leaf=(k, c))), "chain",
             "leaf key on P-256")
    k, c = C.cert("leaf", "instance", hash_alg=hashes.SHA256())
    C.reject("chain_sha256_signature", C.doc_for_chain(C.chain_with(leaf=(k, c))), "chain",
             "leaf signed with ecdsa-with-SHA256")
    stranger = ec.generate_private_key(ec.SECP384R1())
    k = ec.generate_private_key(ec.SECP384R1())
    c = chainmod.make_cert("leaf", k, C.chain.certs["instance"].subject, stranger,
                           utc(NOW_S - 60), utc(NOW_S + 3 * 3600), ca=False, leaf=True,
                           ski=False)
    C.reject("chain_leaf_wrong_issuer_key", C.doc_for_chain(C.chain_with(leaf=(k, c))), "chain",
             "leaf signed by a key other than the instance CA's")
    C.reject("chain_cert_trailing_bytes",
             C.doc_for_chain(C.chain, cb[:3] + [cb[3] + b"\x00"]), "chain",
             "a byte after the instance CA's DER")
    k, c = C.cert("leaf", "instance", ca=True, path_length=None, leaf=False, ski=True)
    C.reject("chain_leaf_is_ca", C.doc_for_chain(C.chain_with(leaf=(k, c))), "chain",
             "the leaf is a CA")

    # ---- signature ------------------------------------------------------------------------
    flipped = bytearray(p)
    flipped[p.index(C.pcrs[0]) + 7] ^= 1  # inside PCR0, like SVR2's TestSignatureInvalid
    C.reject("sig_payload_bitflip", enc([P, {}, bytes(flipped), sig]), "signature",
             "one payload bit flipped after signing")
    C.reject("sig_other_key", enc([P, {}, p, C.sign(p, stranger)]), "signature",
             "signed by another P-384 key")
    C.reject("sig_r_zero", enc([P, {}, p, bytes(48) + sig[48:]]), "signature", "r = 0")
    C.reject("sig_s_ge_n", enc([P, {}, p, sig[:48] + N.to_bytes(48, "big")]), "signature",
             "s = n")
    C.reject("sig_all_zero", enc([P, {}, p, bytes(96)]), "signature", "all-zero signature")

    # ---- policy ---------------------------------------------------------------------------
    C.reject("policy_digest_sha256", C.doc(digest="SHA256"), "policy", "digest SHA256")
    wrong = dict(C.pcrs)
    wrong[0] = hashlib.sha384(b"other image").digest()
    C.reject("policy_pcr0_mismatch", C.doc(pcrs=wrong), "policy", "PCR0 differs")
    C.reject("policy_pcr_absent", C.doc(), "policy", "the set names PCR20, absent here",
             measurements=[{"0": C.pcrs[0].hex(), "20": bytes(48).hex()}])
    C.reject("policy_debug", C.doc(pcrs=dbg), "policy", "debug mode without allow_debug",
             measurements=[{"3": bytes(48).hex()}])
    C.reject("policy_too_old", C.doc(timestamp=NOW_MS - MAX_AGE - 1), "policy",
             "1 ms older than max_age")
    C.reject("policy_future", C.doc(timestamp=NOW_MS + SKEW + 1), "policy",
             "1 ms beyond the skew")
    C.reject("policy_nonce_differs", C.doc(nonce=bytes(32)), "policy", "another nonce")
    C.reject("policy_nonce_null", C.doc(nonce=None), "policy", "no nonce though one was sent")

    # ---- binding --------------------------------------------------------------------------
    for b in ("spki_sha256", "public_key_spki", "spki_der", "cert_sha256", "nitriding",
              "blindai"):
        pk, ud = nsm.binding_fields(b, C.other)
        C.reject(f"binding_{b}_other_key", C.doc(public_key=pk, user_data=ud), "binding",
                 f"{b} binding to another certificate", binding=b, peer_cert="peer.der")
    C.reject("binding_spki_sha256_short", C.doc(user_data=hashlib.sha256(peer_spki).digest()[:31]),
             "binding", "31-byte user_data", binding="spki_sha256", peer_cert="peer.der")
    bad = b"\x12\x21" + hashlib.sha256(nsm.cert_der(C.peer)).digest()
    C.reject("binding_nitriding_bad_prefix", C.doc(user_data=bad), "binding",
             "multihash prefix 12 21", binding="nitriding", peer_cert="peer.der")

    manifest = {"root_ca": "root.pem", "now_ms": NOW_MS, "cases": C.cases}
    (C.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return C.cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gen_corpus.py OUTDIR")
    cases = generate(sys.argv[1])
    print(f"{len(cases)} cases in {sys.argv[1]}")
