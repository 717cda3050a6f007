"""Attestation documents built like the Nitro Secure Module's, from a tests/sim/chain.py chain.

A tiny CBOR encoder of our own (not cbor2) so that exactly the bytes the NSM emits — and, for
the negative corpus, malformed variants no library would produce — can be written.
"""
import hashlib
import struct
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PROTECTED_ES384 = bytes.fromhex("a1013822")  # {1: -35}


class Tag:
    def __init__(self, tag, value):
        self.tag, self.value = tag, value


class Indef:
    """An indefinite-length map (dict) or array (list)."""

    def __init__(self, value):
        self.value = value


class Raw:
    """Bytes inserted as they are."""

    def __init__(self, data):
        self.data = data


def head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for ai, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | ai]) + struct.pack(fmt, n)
    raise ValueError("integer too large")


def enc(v):
    if isinstance(v, Raw):
        return v.data
    if v is None:
        return b"\xf6"
    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, (bytes, bytearray)):
        return head(2, len(v)) + bytes(v)
    if isinstance(v, str):
        b = v.encode()
        return head(3, len(b)) + b
    if isinstance(v, Tag):
        return head(6, v.tag) + enc(v.value)
    if isinstance(v, Indef):
        if isinstance(v.value, dict):
            return b"\xbf" + b"".join(enc(k) + enc(x) for k, x in v.value.items()) + b"\xff"
        return b"\x9f" + b"".join(enc(x) for x in v.value) + b"\xff"
    if isinstance(v, (list, tuple)):
        return head(4, len(v)) + b"".join(enc(x) for x in v)
    if isinstance(v, dict):
        return head(5, len(v)) + b"".join(enc(k) + enc(x) for k, x in v.items())
    raise TypeError(type(v))


def sig_structure(protected, payload):
    return enc(["Signature1", protected, b"", payload])


def sign_raw(key, data):
    """ES384 over `data`, as the 96-byte r||s COSE uses."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


def default_pcrs(seed="attestproxy-sim"):
    """16 deterministic PCRs: 0..2 and 4 non-zero (3 and 5..15 zero, as on real enclaves)."""
    pcrs = {i: bytes(48) for i in range(16)}
    for i in (0, 1, 2, 4):
        pcrs[i] = hashlib.sha384(f"{seed}-pcr{i}".encode()).digest()
    return pcrs


def payload_map(chain, pcrs, public_key=None, user_data=None, nonce=None, timestamp_ms=None,
                module_id=None, leaf_der=None, digest="SHA384"):
    """The 9 keys in NSM order, as a dict (insertion order is preserved by enc())."""
    return {
        "module_id": module_id or "i-0123456789abcdef0-enc0123456789abcdef",
        "digest": digest,
        "timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
        "pcrs": dict(sorted(pcrs.items())),
        "certificate": leaf_der if leaf_der is not None else chain.der("leaf"),
        "cabundle": chain.cabundle(),
        "public_key": public_key,
        "user_data": user_data,
        "nonce": nonce,
    }


DROP = object()  # as a `fields` value: leave that key out of the payload
CORRUPTIONS = ("fields", "protected", "unprotected", "signature", "flip_payload_bit",
               "trailing", "digest", "certificate", "cabundle")


def make_document(chain, pcrs=None, public_key=None, user_data=None, nonce=None,
                  timestamp_ms=None, module_id=None, tagged=False, indefinite_map=False,
                  signing_key=None, payload=None, **corruptions):
    """COSE_Sign1 bytes exactly like the NSM's (untagged unless `tagged`).

    Corruptions (none by default), for negative tests:
      fields={key: value or DROP}  replace, add (appended after the 9) or drop payload keys
      digest=, certificate=, cabundle=  shorthands for those fields
      protected=bytes     another protected header, signed over as given
      unprotected=value   another unprotected header (not signed, as in COSE)
      signature=bytes     replaces the signature (raw, any length)
      flip_payload_bit=N  flips bit N of the payload after signing (a forged payload)
      trailing=bytes      appended after the COSE_Sign1 item
    """
    unknown = set(corruptions) - set(CORRUPTIONS)
    if unknown:
        raise TypeError(f"unknown corruptions: {sorted(unknown)}")
    protected = corruptions.get("protected", PROTECTED_ES384)
    if payload is None:
        m = payload_map(chain, pcrs if pcrs is not None else default_pcrs(), public_key,
                        user_data, nonce, timestamp_ms, module_id)
        fields = dict(corruptions.get("fields", {}))
        for k in ("digest", "certificate", "cabundle"):
            if k in corruptions:
                fields[k] = corruptions[k]
        for k, v in fields.items():
            if v is DROP:
                m.pop(k, None)
            else:
                m[k] = v
        payload = enc(Indef(m) if indefinite_map else m)
    sig = sign_raw(signing_key or chain.keys["leaf"], sig_structure(protected, payload))
    sig = corruptions.get("signature", sig)
    if "flip_payload_bit" in corruptions:
        bit = corruptions["flip_payload_bit"] % (8 * len(payload))
        flipped = bytearray(payload)
        flipped[bit // 8] ^= 1 << (bit % 8)
        payload = bytes(flipped)
    doc = enc([protected, corruptions.get("unprotected", {}), payload, sig])
    doc = enc(Tag(18, Raw(doc))) if tagged else doc
    return doc + corruptions.get("trailing", b"")


# ---- Bindings (BRIEF §4): what user_data / public_key carry for a TLS certificate ----------

def spki_der(cert):
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def binding_fields(binding, cert, app_hash=bytes(32)):
    """(public_key, user_data) that bind a document to TLS certificate `cert`."""
    if binding == "spki_sha256":
        return None, hashlib.sha256(spki_der(cert)).digest()
    if binding == "public_key_spki":
        return spki_der(cert), None
    if binding == "spki_der":
        return None, spki_der(cert)
    if binding == "cert_sha256":
        return None, hashlib.sha256(cert_der(cert)).digest()
    if binding == "nitriding":
        return None, b"\x12\x20" + hashlib.sha256(cert_der(cert)).digest() + b"\x12\x20" + app_hash
    if binding == "blindai":
        return None, (b"sha256:" + hashlib.sha256(cert_der(cert)).digest() + b";sha256:"
                      + app_hash)
    raise ValueError(binding)
