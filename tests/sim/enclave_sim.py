#!/usr/bin/python3
"""The enclave simulator: an HTTPS service that behaves like an application inside a Nitro
enclave, serving fresh attestation evidence for every profile of BRIEF §4 over the same TLS
connection as its demo endpoints, and misbehaving on demand. See tests/sim/README.md.

Written with the standard library, python3-cryptography and our own CBOR encoder (nsm.py), and
independently of the daemon's attestation code.
"""
import argparse
import asyncio
import base64
import datetime
import hashlib
import ipaddress
import itertools
import json
import pathlib
import secrets
import socket
import ssl
import struct
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import chain as chainmod  # noqa: E402
import nsm  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

HEAD_MAX = 64 * 1024
JSON_BODY_MAX = 1 << 20
BODY_LOG_MAX = 4096  # request body bytes kept in the request log
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
WS_PATHS = ("/ws/echo", "/ws/events", "/v1/realtime")
WS_LOG_TEXT_MAX = 200  # characters of a text message kept in the message log
MODES = ("wrong_pcrs", "debug_pcrs", "bad_signature", "wrong_nonce", "missing_nonce",
         "replay_old", "expired_leaf", "garbage_evidence", "bind_other_key", "evidence_500",
         "evidence_delay", "replay_document", "evidence_trailing", "evidence_pad",
         "drop_mid_stream", "stall", "close_after_headers", "raw_response", "garbage_response",
         "reset_mid_body", "excess_body", "ws_bad_accept")
# Hostile application responses (evidence stays valid, so attestation passes): each is a
# raw_response preset, see raw_params().
RAW_MODES = ("raw_response", "garbage_response", "reset_mid_body", "excess_body")
RAW_ENDS = ("keep", "close", "reset")
PROFILE_BINDING = {"native": "spki_sha256", "nitriding": "nitriding", "blindai": "blindai",
                   "evervault": "spki_der"}
BINDINGS = ("spki_sha256", "public_key_spki", "spki_der", "cert_sha256", "nitriding", "blindai")


class Identity:
    """One enclave TLS key and its self-signed certificate (the key documents bind)."""

    tls_max = "1.3"  # --tls-max, set by Sim before any identity is made

    def __init__(self, workdir):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.utcnow()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enclave.test")])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                                 x509.DNSName("enclave.test")]),
                                    critical=False)
                     .sign(self.key, hashes.SHA256()))
        tag = secrets.token_hex(4)
        cert_path = pathlib.Path(workdir) / f"tls-{tag}.crt"
        key_path = pathlib.Path(workdir) / f"tls-{tag}.key"
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(self.key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        self.cert_path, self.key_path = str(cert_path), str(key_path)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if Identity.tls_max == "1.2":
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(self.cert_path, self.key_path)
        self.pin = hashlib.sha256(nsm.spki_der(self.cert)).hexdigest()


class Sim:
    def __init__(self, args):
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="enclave-sim-")
        self.chain = chainmod.Chain.load_or_create(args.chain_dir)
        self.pcrs = nsm.default_pcrs()
        for item in args.pcr:
            n, _, hx = item.partition("=")
            self.pcrs[int(n)] = bytes.fromhex(hx)
        Identity.tls_max = args.tls_max
        self.identities = [Identity(self.workdir) for _ in range(args.keys)]
        self.rr = itertools.count()
        self.mode = None
        self.mode_params = {}
        for m in args.misbehave:
            self.set_mode(m, {})
        self.conn_ids = itertools.count(1)
        self.writers = set()
        self.reset()
        self.server = None
        self.listen_ctx = self._listen_context()

    def _listen_context(self):
        """With one key the identity's own context listens. With several (enclaves behind a
        load balancer), sni_callback picks one per connection (OpenSSL calls it for every
        ClientHello, with or without SNI) and session tickets are off: separate enclaves do not
        share ticket keys, so a ticket of one must never resume on another."""
        if len(self.identities) == 1:
            return self.identities[0].ctx
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.identities[0].cert_path, self.identities[0].key_path)
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
        for ident in self.identities:
            ident.ctx.num_tickets = 0
            ident.ctx.options |= ssl.OP_NO_TICKET
        ctx.sni_callback = self._pick_identity
        return ctx

    def _pick_identity(self, sslobj, servername, ctx):
        ident = self.identities[next(self.rr) % len(self.identities)]
        sslobj.context = ident.ctx
        return None

    def identity_of(self, writer):
        obj = writer.get_extra_info("ssl_object")
        for ident in self.identities + self.retired:
            if obj is not None and obj.context is ident.ctx:
                return ident
        return self.identities[0]

    def reset(self):
        self.stats = {"evidence_requests": 0, "app_requests": 0, "connections": 0,
                      "ws_messages": 0}
        self.requests = []
        self.ws_messages = []  # every WebSocket data frame received, in order
        self.retired = getattr(self, "retired", [])
        # The last evidence body served per profile, for replay_document (kept across resets:
        # a replay test resets the log between the original and the replay).
        self.served = getattr(self, "served", {})

    def set_mode(self, mode, params):
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        if mode == "raw_response" and params.get("end", "close") not in RAW_ENDS:
            raise ValueError(f"raw_response: end must be one of {', '.join(RAW_ENDS)}")
        self.mode, self.mode_params = mode, params

    async def rotate(self, share_tickets=False, drop_connections=False):
        """A restarted enclave: new TLS keys, new TLS state (ticket keys) and a new listening
        socket on the same port. Established connections keep their old key, as they would
        with a real restart behind a proxy that keeps them open until they drain.

        share_tickets: the hostile case of docs/security.md, "Session resumption" — a server
        with another certificate key but the same session-ticket key and session cache (one
        OpenSSL context whose certificate is replaced), so that a ticket issued under the old
        key resumes on it. drop_connections: established connections are closed too."""
        if share_tickets:
            if len(self.identities) != 1:
                raise ValueError("share_tickets needs a single key")
            old = self.identities[0]
            new = Identity(self.workdir)
            old.ctx.load_cert_chain(new.cert_path, new.key_path)
            new.ctx = old.ctx  # identity_of() now names the new key for this context
            self.retired.append(old)
            self.identities = [new]
        else:
            self.retired.extend(self.identities)
            self.identities = [Identity(self.workdir) for _ in range(len(self.identities))]
        self.listen_ctx = self._listen_context()
        if drop_connections:
            for w in list(self.writers):
                w.close()
        await self.start_tls()

    async def start_tls(self):
        host, port = host_port(self.args.listen)
        if self.server is not None:
            port = self.server.sockets[0].getsockname()[1]
            self.server.close()
            await self.server.wait_closed()
        self.server = await asyncio.start_server(self.handle, host, port, ssl=self.listen_ctx,
                                                 limit=HEAD_MAX, backlog=1024)
        return self.server.sockets[0].getsockname()[1]

    # ---- Evidence -------------------------------------------------------------------------

    def document(self, profile, ident, nonce):
        pcrs = dict(self.pcrs)
        ts = int(time.time() * 1000)
        leaf_key, leaf_der = self.chain.keys["leaf"], self.chain.der("leaf")
        binding = self.args.binding or PROFILE_BINDING[profile]
        cert = ident.cert
        mode = self.mode
        if mode == "wrong_pcrs":
            pcrs[0] = hashlib.sha384(b"some other enclave image").digest()
        elif mode == "debug_pcrs":
            for i in (0, 1, 2):
                pcrs[i] = bytes(48)
        elif mode == "wrong_nonce" and nonce is not None:
            nonce = secrets.token_bytes(len(nonce))
        elif mode == "missing_nonce":
            nonce = None
        elif mode == "replay_old":
            ts -= int(self.mode_params.get("age_s", 600)) * 1000
        elif mode == "expired_leaf":
            leaf_key, cert_obj = self.chain.renew_leaf(time.time() - 4 * 3600)
            leaf_der = cert_obj.public_bytes(serialization.Encoding.DER)
        elif mode == "bind_other_key":
            cert = Identity(self.workdir).cert
        public_key, user_data = nsm.binding_fields(binding, cert)
        m = nsm.payload_map(self.chain, pcrs, public_key, user_data, nonce, ts,
                            leaf_der=leaf_der)
        payload = nsm.enc(m)
        sig = nsm.sign_raw(leaf_key, nsm.sig_structure(nsm.PROTECTED_ES384, payload))
        if mode == "bad_signature":
            sig = sig[:-1] + bytes([sig[-1] ^ 1])
        return nsm.enc([nsm.PROTECTED_ES384, {}, payload, sig])

    async def evidence(self, w, profile, query):
        self.stats["evidence_requests"] += 1
        nonce = None
        # session_nonce (session-bound evidence, docs/evidence-protocol.md §12) is taken as it
        # comes, not bound to the TLS session: Python's ssl has no TLS exporter. The document
        # is then what a relay forwarding the request to a real enclave would get back, and
        # the daemon must refuse it; the companion (daemon/enclave/) implements the binding.
        key = "session_nonce" if "session_nonce" in query else "nonce"
        if key in query:
            try:
                nonce = bytes.fromhex(query[key][0])
            except ValueError:
                return await send(w, 400, {"Content-Type": "text/plain"}, b"bad nonce\n")
        if self.mode == "evidence_delay":
            await asyncio.sleep(float(self.mode_params.get("seconds", 1)))
        if self.mode == "evidence_500":
            return await send(w, 500, {"Content-Type": "text/plain"}, b"nsm unavailable\n")
        if self.mode == "garbage_evidence":
            return await send(w, 200, {"Content-Type": "application/cbor"},
                              b"\x84garbage, not a document")
        if self.mode == "replay_document":
            # An earlier document, byte for byte: its nonce is the one an earlier request sent.
            if profile not in self.served:
                return await send(w, 500, {"Content-Type": "text/plain"}, b"nothing to replay\n")
            ctype, body = self.served[profile]
            return await send(w, 200, {"Content-Type": ctype}, body)
        doc = self.document(profile, self.identity_of(w), nonce)
        if profile == "nitriding":
            ctype, body = "text/plain", base64.b64encode(doc) + b"\n"
        elif profile == "evervault":
            ctype = "application/json"
            body = json.dumps({"attestation_doc": base64.b64encode(doc).decode()}).encode()
        else:
            ctype, body = "application/cbor", doc
        self.served[profile] = (ctype, body)
        if self.mode == "evidence_pad":
            # The body padded to exactly `bytes` bytes with `pad` (whitespace, which base64 and
            # JSON bodies may carry; a CBOR body then has trailing bytes), optionally chunked.
            size = int(self.mode_params.get("bytes", 65536))
            pad = self.mode_params.get("pad", "\n").encode("latin-1")
            if size < len(body) or len(pad) != 1:
                return await send(w, 500, {"Content-Type": "text/plain"}, b"bad evidence_pad\n")
            body += pad * (size - len(body))
            if self.mode_params.get("chunked"):
                await start_chunked(w, 200, {"Content-Type": ctype})
                for i in range(0, len(body), 16384):
                    await write_chunk(w, body[i:i + 16384])
                return await end_chunked(w)
        if self.mode == "evidence_trailing":
            # A correct evidence response followed, without waiting, by `data` (by default a
            # complete response of its own): in the same TLS record (`record` "same"), or in the
            # next one ("next": a second write, encrypted on its own and sent with the first).
            # The connection then serves the next request.
            extra = self.mode_params.get(
                "data", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED").encode("latin-1")
            head = response_head(200, {"Content-Type": ctype, "Content-Length": str(len(body))})
            if self.mode_params.get("record", "same") == "next":
                w.write(head + body)
                w.write(extra)
            else:
                w.write(head + body + extra)
            return await w.drain()
        return await send(w, 200, {"Content-Type": ctype}, body)

    # ---- Connections ----------------------------------------------------------------------

    async def handle(self, reader, writer):
        conn = next(self.conn_ids)
        self.stats["connections"] += 1
        ident = self.identity_of(writer)
        obj = writer.get_extra_info("ssl_object")
        if obj is not None and obj.session_reused:
            self.stats["resumed"] = self.stats.get("resumed", 0) + 1
        self.writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        ConnectionError):
                    return
                req = parse_head(head)
                if req is None:
                    await send(writer, 400, {"Connection": "close"}, b"bad request\n")
                    return
                method, target, headers = req
                url = urllib.parse.urlsplit(target)
                query = urllib.parse.parse_qs(url.query)
                evidence = url.path in ("/.well-known/nitro-attestation", "/enclave/attestation",
                                        "/.well-known/attestation")
                entry = {"conn": conn, "pin": ident.pin, "method": method, "path": target,
                         "evidence": evidence, "nonce": query.get("nonce", [None])[0],
                         "t": time.time(),
                         "head": head.decode("latin-1"), "body": ""}
                self.requests.append(entry)
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                try:
                    body = Body(reader, headers, log=entry)
                except ValueError:
                    await send(writer, 400, {"Connection": "close"}, b"bad content-length\n")
                    return
                if (not evidence and url.path in WS_PATHS
                        and "websocket" in headers.get("upgrade", "").lower()):
                    self.stats["app_requests"] += 1
                    await self.websocket(reader, writer, conn, url, query, headers)
                    return
                if evidence:
                    profile = {"/.well-known/nitro-attestation": "native",
                               "/.well-known/attestation": "evervault"}.get(url.path)
                    if profile is None:
                        profile = "nitriding" if "nonce" in query else "blindai"
                    await body.drain()
                    if self.args.profile not in ("all", profile):
                        self.stats["evidence_requests"] += 1
                        await send(writer, 404, {"Content-Type": "text/plain"},
                                   f"this enclave serves only {self.args.profile} "
                                   f"evidence\n".encode())
                    else:
                        await self.evidence(writer, profile, query)
                else:
                    self.stats["app_requests"] += 1
                    if self.mode == "stall":
                        await asyncio.sleep(self.mode_params.get("seconds", 600))
                        return
                    if self.mode == "close_after_headers":
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                        await writer.drain()
                        return
                    if self.mode in RAW_MODES:
                        if not self.mode_params.get("early"):  # else: answer before the body
                            await body.drain()
                        if not await self.raw_response(writer):
                            return
                        continue
                    try:
                        out = HeadOnly(writer) if method == "HEAD" else writer
                        keep = await self.app(out, method, url, query, headers, body)
                    except ValueError:  # a malformed query value such as ?bytes=abc
                        await body.drain()
                        await send(writer, 400, {"Content-Type": "text/plain"},
                                   b"bad parameter\n")
                        keep = True
                    if not keep:
                        return
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ssl.SSLError, ValueError):  # ValueError: a malformed chunk size
            return
        finally:
            self.writers.discard(writer)
            try:
                writer.close()
            except Exception:
                pass

    # ---- WebSocket (RFC 6455, by hand: the simulator stays independent of any WS library) ----

    async def websocket(self, reader, w, conn, url, query, headers):
        """The opening handshake, then /ws/echo (every data frame echoed), /ws/events (a JSON
        event every `interval` ms, `count` of them or until closed, each received message
        acknowledged) or /v1/realtime (OpenAI Realtime-like: session.created, then a
        response.done per client event). Every data frame received is logged (ws_messages)."""
        key = headers.get("sec-websocket-key", "")
        if headers.get("sec-websocket-version") != "13" or len(key) != 24:
            return await send(w, 400, {"Connection": "close"}, b"bad websocket handshake\n")
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        if self.mode == "ws_bad_accept":
            accept = base64.b64encode(hashlib.sha1(b"another key" + WS_GUID).digest()).decode()
        w.write(response_head(101, {"Upgrade": "websocket", "Connection": "Upgrade",
                                    "Sec-WebSocket-Accept": accept}))
        sender = None
        if url.path == "/ws/events":
            interval = int(query.get("interval", ["100"])[0]) / 1000
            count = int(query.get("count", ["0"])[0])
            sender = asyncio.ensure_future(self.ws_events(w, interval, count))
        elif url.path == "/v1/realtime":
            ws_send(w, 1, json.dumps({"type": "session.created", "event_id": "evt_0",
                                      "session": {"model": query.get("model", [""])[0]}}))
        await w.drain()
        try:
            n = 0
            while True:
                fin, op, data = await ws_read_frame(reader)
                if op == 8:  # close: echo the code, then the server closes the TCP connection
                    ws_send(w, 8, data[:2])
                    await w.drain()
                    return
                if op == 9:
                    ws_send(w, 10, data)
                    await w.drain()
                    continue
                if op == 10:
                    continue
                n += 1
                self.stats["ws_messages"] += 1
                text = data[:WS_LOG_TEXT_MAX * 4].decode("utf-8", "replace") if op in (0, 1) else ""
                self.ws_messages.append({"conn": conn, "path": url.path, "t": time.time(),
                                         "opcode": op, "len": len(data),
                                         "text": text[:WS_LOG_TEXT_MAX]})
                if url.path == "/ws/echo":
                    ws_send(w, op, data, fin)
                elif url.path == "/ws/events":
                    ws_send(w, 1, json.dumps({"type": "ack", "n": n}))
                else:
                    try:
                        event = json.loads(data)
                    except ValueError:
                        event = {}
                    ws_send(w, 1, json.dumps({"type": "response.done", "event_id": f"evt_{n}",
                                              "in_reply_to": event.get("type")}))
                await w.drain()
        finally:
            if sender is not None:
                sender.cancel()

    async def ws_events(self, w, interval, count):
        seq = 0
        while count == 0 or seq < count:
            ws_send(w, 1, json.dumps({"type": "event", "seq": seq, "sent_at": time.time()}))
            await w.drain()
            seq += 1
            await asyncio.sleep(interval)

    # ---- Hostile application responses -----------------------------------------------------

    def raw_params(self):
        """(data, then, delay_ms, end) of the raw mode in force: `data` is written as it is,
        `then` (if any) `delay_ms` later, and `end` says what happens to the connection after:
        "keep" (serve the next request), "close" (FIN) or "reset" (RST)."""
        p = self.mode_params
        if self.mode == "garbage_response":
            return (p.get("data", "this is not an HTTP response\r\n\r\n").encode("latin-1"),
                    b"", 0, "close")
        if self.mode == "reset_mid_body":
            n = int(p.get("bytes", 256 * 1024))
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n
            return head + next(pattern_blocks(n))[:n // 2], b"", 0, "reset"
        if self.mode == "excess_body":
            extra = p.get("extra", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED")
            return (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", extra.encode("latin-1"),
                    int(p.get("delay_ms", 0)), "keep")
        return (p.get("data", "").encode("latin-1"), p.get("then", "").encode("latin-1"),
                int(p.get("delay_ms", 0)), p.get("end", "close"))

    async def raw_response(self, w):
        """Answers an application request with the raw mode's bytes; True to keep serving.
        With a `count` parameter the mode ends (back to normal answers) after that many."""
        data, then, delay_ms, end = self.raw_params()
        if "count" in self.mode_params:
            self.mode_params["count"] = int(self.mode_params["count"]) - 1
            if self.mode_params["count"] <= 0:
                self.set_mode(None, {})
        if then and delay_ms <= 0:
            data, then = data + then, b""
        w.write(data)
        await w.drain()
        if then:
            await asyncio.sleep(delay_ms / 1000)
            w.write(then)
            await w.drain()
        if end == "reset":
            # Let the bytes leave before the RST; SO_LINGER 0 turns the close into a reset.
            await asyncio.sleep(0.1)
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
            return False
        return end == "keep"

    # ---- Application endpoints --------------------------------------------------------------

    async def app(self, w, method, url, query, headers, body):
        path = url.path
        if path == "/echo":
            h, n = hashlib.sha256(), 0
            async for chunk in body:
                h.update(chunk)
                n += len(chunk)
            out = {"method": method, "path": url.path + ("?" + url.query if url.query else ""),
                   "headers": headers, "body_bytes": n, "body_sha256": h.hexdigest()}
            await send(w, 200, {"Content-Type": "application/json"}, json.dumps(out).encode())
        elif path == "/upload":
            h, n = hashlib.sha256(), 0
            async for chunk in body:
                h.update(chunk)
                n += len(chunk)
            await send(w, 200, {"Content-Type": "application/json"},
                       json.dumps({"bytes": n, "sha256": h.hexdigest()}).encode())
        elif path == "/whisper/predict":
            ctype = headers.get("content-type", "")
            if "boundary=" not in ctype:
                await body.drain()
                await send(w, 400, {"Content-Type": "application/json"},
                           b'{"error":"multipart/form-data with a boundary expected"}')
                return True
            boundary = ctype.split("boundary=", 1)[1].split(";")[0].strip().strip('"')
            n, digest = await audio_part(body, boundary.encode())
            if n is None:
                await send(w, 400, {"Content-Type": "application/json"},
                           b'{"error":"no audio field"}')
                return True
            text = "I fart in your general direction" if n else ""
            await send(w, 200, {"Content-Type": "application/json"},
                       json.dumps({"text": text, "bytes": n, "sha256": digest}).encode())
        elif path == "/v1/chat/completions":
            raw = await body.read_all(JSON_BODY_MAX)
            try:
                req = json.loads(raw or b"{}")
            except ValueError:
                await send(w, 400, {"Content-Type": "application/json"}, b'{"error":"bad json"}')
                return True
            return await self.chat(w, req)
        elif path == "/download":
            await body.drain()
            return await self.download(w, int(query.get("bytes", ["0"])[0]),
                                       query.get("chunked", ["0"])[0] == "1")
        elif path == "/slow":
            await body.drain()
            await asyncio.sleep(float(query.get("delay", ["1"])[0]))
            await send(w, 200, {"Content-Type": "text/plain"}, b"slow\n")
        elif path == "/sse":
            await body.drain()
            return await self.sse(w, int(query.get("events", ["5"])[0]),
                                  int(query.get("interval", ["50"])[0]))
        elif path.startswith("/status/"):
            await body.drain()
            code = int(path.split("/")[2])
            await send(w, code, {"Content-Type": "text/plain"},
                       b"" if code in (204, 304) else f"status {code}\n".encode())
        else:
            await body.drain()
            await send(w, 404, {"Content-Type": "text/plain"}, b"not found\n")
        return True

    async def chat(self, w, req):
        words = ["Attested", " hello", " from", " the", " enclave", "."]
        created = int(time.time())
        cid = "chatcmpl-" + secrets.token_hex(6)
        model = req.get("model", "sim")
        if not req.get("stream"):
            out = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant",
                                                        "content": "".join(words)},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": len(words),
                             "total_tokens": 5 + len(words)}}
            await send(w, 200, {"Content-Type": "application/json"}, json.dumps(out).encode())
            return True
        interval = self.args.sse_interval / 1000
        await start_chunked(w, 200, {"Content-Type": "text/event-stream",
                                     "Cache-Control": "no-cache"})
        for i, word in enumerate(words):
            if self.mode == "drop_mid_stream" and i >= len(words) // 2:
                return False
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": model, "seq": i, "sent_at": time.time(),
                     "choices": [{"index": 0, "delta": {"content": word},
                                  "finish_reason": None}]}
            await write_chunk(w, f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(interval)
        done = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "seq": len(words), "sent_at": time.time(),
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await write_chunk(w, f"data: {json.dumps(done)}\n\n".encode())
        await write_chunk(w, b"data: [DONE]\n\n")
        await end_chunked(w)
        return True

    async def sse(self, w, events, interval_ms):
        await start_chunked(w, 200, {"Content-Type": "text/event-stream"})
        for i in range(events):
            if self.mode == "drop_mid_stream" and i >= events // 2:
                return False
            await write_chunk(w, f"id: {i}\ndata: {{\"seq\": {i}, \"sent_at\": {time.time()}}}"
                                 f"\n\n".encode())
            await asyncio.sleep(interval_ms / 1000)
        await end_chunked(w)
        return True

    async def download(self, w, n, chunked):
        hdrs = {"Content-Type": "application/octet-stream",
                "X-Content-SHA256": pattern_sha256(n)}
        if chunked:
            await start_chunked(w, 200, hdrs)
        else:
            hdrs["Content-Length"] = str(n)
            w.write(response_head(200, hdrs))
        sent = 0
        limit = n // 2 if self.mode == "drop_mid_stream" else n
        for block in pattern_blocks(n):
            if sent + len(block) > limit:
                w.write(block[:limit - sent])
                await w.drain()
                return False
            if chunked:
                await write_chunk(w, block)
            else:
                w.write(block)
                await w.drain()
            sent += len(block)
        if chunked:
            await end_chunked(w)
        return True


# ---- HTTP helpers ---------------------------------------------------------------------------

REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content", 400: "Bad Request",
           404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


def parse_head(head):
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        if not version.startswith("HTTP/1."):
            return None
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return method, target, headers
    except ValueError:
        return None


async def ws_read_frame(reader):
    """One frame from a client: (fin, opcode, unmasked payload)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    mask = await reader.readexactly(4) if b1 & 0x80 else None
    data = await reader.readexactly(n)
    if mask and n:
        m = (mask * (n // 4 + 1))[:n]
        data = (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")
    return bool(b0 & 0x80), b0 & 0x0F, data


def ws_send(w, opcode, data, fin=True):
    """One unmasked server frame."""
    if isinstance(data, str):
        data = data.encode()
    n = len(data)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    w.write(head + data)


def response_head(code, headers):
    lines = [f"HTTP/1.1 {code} {REASONS.get(code, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def send(w, code, headers, body):
    headers = dict(headers)
    headers["Content-Length"] = str(len(body))
    w.write(response_head(code, headers) + body)
    await w.drain()


async def start_chunked(w, code, headers):
    headers = dict(headers)
    headers["Transfer-Encoding"] = "chunked"
    w.write(response_head(code, headers))
    await w.drain()


async def write_chunk(w, data):
    if data:
        w.write(b"%x\r\n%s\r\n" % (len(data), data))
        await w.drain()


async def end_chunked(w):
    w.write(b"0\r\n\r\n")
    await w.drain()


class HeadOnly:
    """The writer of a response to HEAD: the head goes out, the body the endpoint produces is
    dropped (RFC 9110 9.3.2), so that the connection stays in step for the next request."""

    def __init__(self, writer):
        self.writer = writer
        self.pending = b""
        self.head_sent = False

    def write(self, data):
        if self.head_sent:
            return
        self.pending += data
        end = self.pending.find(b"\r\n\r\n")
        if end >= 0:
            self.writer.write(self.pending[:end + 4])
            self.head_sent = True
            self.pending = b""

    async def drain(self):
        await self.writer.drain()


class Body:
    """The request body as an async iterator of chunks: Content-Length or chunked."""

    def __init__(self, reader, headers, log=None):
        self.reader = reader
        self.log = log  # a request log entry: its "body" gets the first BODY_LOG_MAX bytes
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.left = int(headers.get("content-length", "0") or 0)
        if self.left < 0:
            raise ValueError("negative content-length")

    def __aiter__(self):
        return self._logged(self._chunks())

    async def _logged(self, chunks):
        async for data in chunks:
            if self.log is not None and len(self.log["body"]) < BODY_LOG_MAX:
                self.log["body"] += data[:BODY_LOG_MAX - len(self.log["body"])].decode("latin-1")
            yield data

    async def _chunks(self):
        if self.chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return
                left = size
                while left:
                    data = await self.reader.read(min(left, 65536))
                    if not data:
                        raise ConnectionError("eof in chunk")
                    left -= len(data)
                    yield data
                await self.reader.readexactly(2)
        else:
            while self.left:
                data = await self.reader.read(min(self.left, 65536))
                if not data:
                    raise ConnectionError("eof in body")
                self.left -= len(data)
                yield data

    async def drain(self):
        async for _ in self:
            pass

    async def read_all(self, limit):
        out = bytearray()
        async for chunk in self:
            out += chunk
            if len(out) > limit:
                raise ConnectionError("body too large")
        return bytes(out)


async def audio_part(body, boundary):
    """Streams a multipart body; returns (length, sha256 hex) of the field named "audio"."""
    delim = b"\r\n--" + boundary
    buf = b"\r\n"  # lets the first delimiter match like the others
    state, h, n, found = "preamble", None, 0, None
    async for chunk in body:
        buf += chunk
        while True:
            if state == "preamble":
                i = buf.find(delim)
                if i < 0:
                    buf = buf[-len(delim):]
                    break
                buf, state = buf[i + len(delim):], "headers"
            elif state == "headers":
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    break
                part_headers = buf[:i].decode("latin-1").lower()
                buf = buf[i + 4:]
                if 'name="audio"' in part_headers:
                    state, h, n = "audio", hashlib.sha256(), 0
                else:
                    state = "preamble"
            else:  # audio data up to the next delimiter
                i = buf.find(delim)
                if i < 0:
                    keep = len(delim)
                    h.update(buf[:-keep])
                    n += len(buf[:-keep])
                    buf = buf[-keep:]
                    break
                h.update(buf[:i])
                n += i
                found = (n, h.hexdigest())
                buf, state = buf[i + len(delim):], "headers"
    return found if found else (None, None)


_PATTERN = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2048))  # 64 KiB
_DIGESTS = {}


def pattern_blocks(n):
    full, rest = divmod(n, len(_PATTERN))
    for _ in range(full):
        yield _PATTERN
    if rest:
        yield _PATTERN[:rest]


def pattern_sha256(n):
    if n not in _DIGESTS:
        h = hashlib.sha256()
        for b in pattern_blocks(n):
            h.update(b)
        _DIGESTS[n] = h.hexdigest()
    return _DIGESTS[n]


# ---- Control API ----------------------------------------------------------------------------

async def control(sim, reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        req = parse_head(head)
        if req is None:
            return
        method, target, headers = req
        n = int(headers.get("content-length", "0") or 0)
        raw = await reader.readexactly(n) if n else b""
        code, out = 200, {}
        if method == "GET" and target == "/stats":
            out = sim.stats
        elif method == "GET" and target == "/requests":
            out = sim.requests
        elif method == "GET" and target == "/ws-messages":
            out = sim.ws_messages
        elif method == "GET" and target == "/pins":
            out = [i.pin for i in sim.identities]
        elif method == "POST" and target == "/reset":
            sim.reset()
        elif method == "POST" and target == "/misbehave":
            body = json.loads(raw or b"{}")
            try:
                sim.set_mode(body.pop("mode", None), body)
                out = {"mode": sim.mode}
            except ValueError as e:
                code, out = 400, {"error": str(e)}
        elif method == "POST" and target == "/drop-connections":
            out = {"dropped": len(sim.writers)}
            for w in list(sim.writers):
                w.close()
        elif method == "POST" and target == "/rotate-key":
            body = json.loads(raw or b"{}")
            await sim.rotate(bool(body.get("share_tickets")), bool(body.get("drop_connections")))
            out = [i.pin for i in sim.identities]
        else:
            code, out = 404, {"error": "unknown control endpoint"}
        await send(writer, code, {"Content-Type": "application/json", "Connection": "close"},
                   json.dumps(out).encode())
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_port(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="TLS address (port 0: pick one)")
    ap.add_argument("--control", default="127.0.0.1:0", help="plain-HTTP control address")
    ap.add_argument("--chain-dir", required=True, help="test PKI directory (created if empty)")
    ap.add_argument("--pcr", action="append", default=[], metavar="N=HEX",
                    help="override PCR N (repeatable)")
    ap.add_argument("--keys", type=int, default=1,
                    help="distinct TLS keys behind the port, round-robin per connection")
    ap.add_argument("--misbehave", action="append", default=[], choices=MODES)
    ap.add_argument("--tls-max", choices=("1.2", "1.3"), default="1.3",
                    help="highest TLS version served (1.2 exercises session-ID and RFC 5077 "
                         "ticket resumption)")
    ap.add_argument("--sse-interval", type=int, default=50, help="ms between chat SSE events")
    ap.add_argument("--profile", default="all", choices=("all",) + tuple(PROFILE_BINDING),
                    help="serve only this profile's evidence (default: all four at once)")
    ap.add_argument("--binding", choices=BINDINGS,
                    help="bind every document this way instead of by its profile's binding")
    args = ap.parse_args()
    for opt, addr in (("--listen", args.listen), ("--control", args.control)):
        if not is_loopback(host_port(addr)[0]):
            ap.error(f"{opt} {addr}: the simulator binds loopback addresses only")

    sim = Sim(args)
    tls_port = await sim.start_tls()
    chost, cport = host_port(args.control)
    ctl = await asyncio.start_server(lambda r, w: control(sim, r, w), chost, cport)
    ctl_port = ctl.sockets[0].getsockname()[1]
    print(f"READY port={tls_port} control={ctl_port} root={pathlib.Path(args.chain_dir).resolve()}"
          f"/root.pem", flush=True)
    print("MEASUREMENT " + " ".join(f"pcr{i}={sim.pcrs[i].hex()}" for i in (0, 1, 2)), flush=True)
    async with ctl:
        await ctl.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
