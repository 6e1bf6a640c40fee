"""An ACME client for Ward's ACME server tests, written on certbot's `acme`
library (its JWS signing, josepy keys) and pyca `cryptography`, so the
requests are built by code nobody here wrote. What no released client
does is driven from here:

- account keys ES384 and RS256 (josepy) and EdDSA/Ed25519 (RFC 8037, by
  hand with `cryptography`, as no Python ACME library signs EdDSA);
- keyChange (RFC 8555 §7.3.5) from an ES256 key to an Ed25519 key, after
  which the old key is refused and the new one orders a certificate;
- authorization reuse: a second order for the same name is ready at once;
- ARI `replaces` twice for one certificate: the second is `alreadyReplaced`;
- http-01 answered through redirects (to the http-01 port, then to
  https:// on the tls-alpn-01 port), and refused redirects (other port,
  a loop);
- tls-alpn-01 answered by a TLS 1.2-only server (Python `ssl`).

Usage: raw_client.py DIRECTORY_URL CA_ROOT HTTP01_PORT TLSALPN01_PORT
Prints `ok: STEP` lines; exits non-zero with the reason on a failure.
"""

import base64
import datetime
import hashlib
import http.server
import json
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import josepy
from acme import jws as acme_jws
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

DIRECTORY, CA_ROOT, HTTP_PORT, TLS_PORT = (
    sys.argv[1],
    sys.argv[2],
    int(sys.argv[3]),
    int(sys.argv[4]),
)
TLS_CTX = ssl.create_default_context(cafile=CA_ROOT)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fail(why):
    print(f"FAILED: {why}", flush=True)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


def ok(step):
    print(f"ok: {step}", flush=True)


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"{self.status} {self.body[:400]!r}"


def fetch(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/jose+json")
    try:
        with urllib.request.urlopen(req, context=TLS_CTX, timeout=30) as r:
            return Answer(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read())


DIR = fetch("GET", DIRECTORY).json()
NONCES = []


def nonce():
    if NONCES:
        return NONCES.pop()
    a = fetch("HEAD", DIR["newNonce"])
    return a.headers["Replay-Nonce"]


class JoseKey:
    """An account key signed with certbot's acme/josepy."""

    def __init__(self, private, alg):
        self.jwk = (
            josepy.JWKRSA(key=private)
            if isinstance(private, rsa.RSAPrivateKey)
            else josepy.JWKEC(key=private)
        )
        self.alg = alg

    def public_jwk(self):
        return self.jwk.public_key().to_partial_json()

    def thumbprint(self):
        return b64(self.jwk.thumbprint())

    def sign(self, url, payload: bytes, kid=None, with_nonce=True):
        n = josepy.b64.b64decode(nonce()) if with_nonce else None
        signed = acme_jws.JWS.sign(payload, self.jwk, self.alg, n, url=url, kid=kid)
        return signed.json_dumps().encode()


class EdKey:
    """An Ed25519 account key (RFC 8037), signed by hand."""

    def __init__(self):
        self.private = ed25519.Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.jwk_dict = {"crv": "Ed25519", "kty": "OKP", "x": b64(raw)}

    def public_jwk(self):
        return self.jwk_dict

    def thumbprint(self):
        canonical = json.dumps(self.jwk_dict, sort_keys=True, separators=(",", ":"))
        return b64(hashlib.sha256(canonical.encode()).digest())

    def sign(self, url, payload: bytes, kid=None, with_nonce=True):
        protected = {"alg": "EdDSA", "url": url}
        if with_nonce:
            protected["nonce"] = nonce()
        if kid:
            protected["kid"] = kid
        else:
            protected["jwk"] = self.jwk_dict
        p = b64(json.dumps(protected).encode())
        body = b64(payload)
        sig = self.private.sign(f"{p}.{body}".encode())
        return json.dumps({"protected": p, "payload": body, "signature": b64(sig)}).encode()


class Account:
    def __init__(self, key):
        self.key, self.url = key, None

    def post(self, url, payload=None, jwk=False):
        body = b"" if payload is None else json.dumps(payload).encode()
        data = self.key.sign(url, body, kid=None if jwk else self.url)
        a = fetch("POST", url, data)
        if "Replay-Nonce" in a.headers:
            NONCES.append(a.headers["Replay-Nonce"])
        return a

    def register(self):
        a = self.post(
            DIR["newAccount"],
            {"termsOfServiceAgreed": True, "contact": ["mailto:ops@acme.test"]},
            jwk=True,
        )
        check(a.status == 201, f"newAccount: {a}")
        self.url = a.headers["Location"]
        return self

    def poll(self, url):
        deadline = time.time() + 30
        while True:
            a = self.post(url)
            check(a.status == 200, f"poll {url}: {a}")
            v = a.json()
            if v["status"] not in ("pending", "processing"):
                return v
            check(time.time() < deadline, f"still {v}")
            time.sleep(0.05)

    def new_order(self, names, replaces=None):
        payload = {"identifiers": [{"type": "dns", "value": n} for n in names]}
        if replaces:
            payload["replaces"] = replaces
        return self.post(DIR["newOrder"], payload)

    def order(self, names, kind, responder, replaces=None):
        """Orders `names`, answers `kind` with `responder`; returns (order url, order)."""
        a = self.new_order(names, replaces)
        check(a.status == 201, f"newOrder {names}: {a}")
        url, order = a.headers["Location"], a.json()
        for authz_url in order["authorizations"]:
            authz = self.post(authz_url).json()
            if authz["status"] == "valid":
                continue
            ch = next(c for c in authz["challenges"] if c["type"] == kind)
            responder.add(authz["identifier"]["value"], ch["token"], self.key.thumbprint())
            a = self.post(ch["url"], {})
            check(a.status == 200, f"challenge: {a}")
            authz = self.poll(authz_url)
            if authz["status"] != "valid":
                return url, self.post(url).json() | {"authz": authz}
        return url, self.poll(url)

    def finalize(self, url, order, names):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        der = csr.public_bytes(serialization.Encoding.DER)
        a = self.post(order["finalize"], {"csr": b64(der)})
        check(a.status == 200, f"finalize: {a}")
        order = self.poll(url)
        check(order["status"] == "valid", f"order after finalize: {order}")
        a = self.post(order["certificate"])
        check(a.status == 200, f"certificate: {a}")
        chain = x509.load_pem_x509_certificates(a.body)
        sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
        check(
            sorted(sans.value.get_values_for_type(x509.DNSName)) == sorted(names),
            f"certificate names {sans}",
        )
        return chain[0]


def cert_id(cert):
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    n = cert.serial_number
    raw = n.to_bytes((n.bit_length() + 8) // 8, "big")  # DER INTEGER content
    return f"{b64(aki.key_identifier)}.{b64(raw)}"


# --- challenge responders ---------------------------------------------------


def self_signed(name, extensions=()):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    )
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    cert = b.sign(key, hashes.SHA256())
    d = tempfile.mkdtemp()
    cert_path, key_path = f"{d}/cert.pem", f"{d}/key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class Http01:
    """http-01 on HTTP_PORT: `mode` decides how a challenge path answers.

    direct: 200 with the key authorization;
    redirect: 302 to http://HOST:HTTP_PORT/moved/TOKEN, which 302s to
      https://HOST:TLS_PORT/secure/TOKEN, served 200 by an HTTPS server;
    bad-port: 302 to http://HOST:1/...;
    loop: 302 to itself, forever.
    """

    def __init__(self):
        self.answers, self.mode, self.https_hits = {}, "direct", 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", location=None):
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                host = self.headers.get("Host", "").split(":")[0]
                parts = self.path.split("/")
                token = parts[-1]
                answer = outer.answers.get(token)
                if answer is None:
                    return self.reply(404)
                if self.path.startswith("/secure/"):
                    outer.https_hits += 1
                    return self.reply(200, answer.encode())
                if outer.mode == "direct":
                    return self.reply(200, answer.encode())
                if outer.mode == "loop":
                    return self.reply(302, location=self.path)
                if outer.mode == "bad-port":
                    return self.reply(302, location=f"http://{host}:1/moved/{token}")
                if self.path.startswith("/.well-known/"):
                    return self.reply(302, location=f"http://{host}:{HTTP_PORT}/moved/{token}")
                return self.reply(302, location=f"https://{host}:{TLS_PORT}/secure/{token}")

        self.plain = http.server.ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), Handler)
        threading.Thread(target=self.plain.serve_forever, daemon=True).start()
        self.handler = Handler

    def add(self, _name, token, thumbprint):
        self.answers[token] = f"{token}.{thumbprint}"

    def https(self):
        """Serves /secure/ on TLS_PORT (self-signed: the validator must not judge it)."""
        server = http.server.ThreadingHTTPServer(("127.0.0.1", TLS_PORT), self.handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self_signed("redirect.acme.test"))
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


class TlsAlpn12:
    """tls-alpn-01 on TLS_PORT by a server that speaks TLS 1.2 at most."""

    def __init__(self):
        self.contexts, self.versions = {}, []
        self.sock = socket.create_server(("127.0.0.1", TLS_PORT))
        threading.Thread(target=self.serve, daemon=True).start()

    def add(self, name, token, thumbprint):
        digest = hashlib.sha256(f"{token}.{thumbprint}".encode()).digest()
        # acmeIdentifier (RFC 8737 §3): critical, an OCTET STRING of the digest.
        ext = x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31"), b"\x04\x20" + digest
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["acme-tls/1"])
        ctx.load_cert_chain(*self_signed(name, [(ext, True)]))
        self.contexts[name] = ctx

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handshake, args=(conn,), daemon=True).start()

    def handshake(self, conn):
        ctx = next(iter(self.contexts.values()), None)
        if ctx is None:
            conn.close()
            return
        chosen = {}

        def sni(sock, name, _ctx):
            if name in self.contexts:
                sock.context = self.contexts[name]
                chosen["name"] = name

        ctx.sni_callback = sni
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
            self.versions.append(tls.version())
            tls.recv(1)
            tls.close()
        except (ssl.SSLError, OSError):
            conn.close()


# --- the scenario -----------------------------------------------------------

http01 = Http01()

# 1. ES384 (josepy) account: an order, then a second order for the same
#    name is ready at once (authorization reuse), ARI replaces twice.
es384 = Account(JoseKey(ec.generate_private_key(ec.SECP384R1()), josepy.ES384)).register()
url, order = es384.order(["reuse.acme.test"], "http-01", http01)
check(order["status"] == "ready", f"first order {order}")
first = es384.finalize(url, order, ["reuse.acme.test"])
ok("ES384 account: http-01 order issued")
a = es384.new_order(["reuse.acme.test"])
check(a.status == 201, f"second order: {a}")
check(a.json()["status"] == "ready", f"reused authorization: {a.json()}")
authz = es384.post(a.json()["authorizations"][0]).json()
check(authz["status"] == "valid", f"reused authz {authz}")
ok("authorization reused: second order ready without a challenge")
replaced = cert_id(first)
url, order = es384.order(["reuse.acme.test"], "http-01", http01, replaces=replaced)
check(order.get("replaces") == replaced, f"replacing order {order}")
es384.finalize(url, order, ["reuse.acme.test"])
a = es384.new_order(["reuse.acme.test"], replaces=replaced)
check(a.status == 409, f"second replacement: {a}")
check(
    a.json()["type"] == "urn:ietf:params:acme:error:alreadyReplaced",
    f"second replacement: {a}",
)
ok("second replaces of one certificate: 409 alreadyReplaced")

# 2. RS256 (josepy) account; http-01 answered through two redirects, the
#    second to https:// on the tls-alpn-01 port.
https = http01.https()
http01.mode = "redirect"
rs256 = Account(JoseKey(rsa.generate_private_key(65537, 2048), josepy.RS256)).register()
url, order = rs256.order(["redirect.acme.test"], "http-01", http01)
check(order["status"] == "ready", f"redirected order {order}")
check(http01.https_hits >= 1, "the https:// hop was not used")
rs256.finalize(url, order, ["redirect.acme.test"])
ok("RS256 account: http-01 through redirects to http and https")
for mode, name, expect in [
    ("bad-port", "badport.acme.test", "redirects are followed to port"),
    ("loop", "loop.acme.test", "redirects"),
]:
    http01.mode = mode
    url, order = rs256.order([name], "http-01", http01)
    authz = order.get("authz", {})
    check(authz.get("status") == "invalid", f"{mode}: {order}")
    detail = authz["challenges"][0].get("error", {}).get("detail", "")
    check(expect in detail, f"{mode}: {detail}")
    ok(f"http-01 redirect refused ({mode}): {detail}")
https.shutdown()
https.server_close()
http01.mode = "direct"

# 3. tls-alpn-01 against a TLS 1.2-only server.
alpn = TlsAlpn12()
url, order = rs256.order(["tls12.acme.test"], "tls-alpn-01", alpn)
check(order["status"] == "ready", f"tls-alpn-01 over TLS 1.2: {order}")
check("TLSv1.2" in alpn.versions, f"negotiated {alpn.versions}")
rs256.finalize(url, order, ["tls12.acme.test"])
ok("tls-alpn-01 validated by a TLS 1.2 server")
alpn.sock.close()

# 4. keyChange: ES256 (josepy) -> Ed25519; then EdDSA requests order a
#    certificate and the old key is refused.
old = JoseKey(ec.generate_private_key(ec.SECP256R1()), josepy.ES256)
acct = Account(old).register()
new = EdKey()
inner = new.sign(
    DIR["keyChange"],
    json.dumps({"account": acct.url, "oldKey": old.public_jwk()}).encode(),
    with_nonce=False,
)
a = acct.post(DIR["keyChange"], json.loads(inner))
check(a.status == 200, f"keyChange: {a}")
ok("keyChange ES256 -> Ed25519")
stale = acct.post(acct.url)
# The account's key is Ed25519 now: an ES256 signature cannot fit it.
check(stale.status == 400, f"old key after keyChange: {stale}")
check(stale.json()["type"].endswith(":badSignatureAlgorithm"), f"old key: {stale}")
again = Account(old).post(DIR["newAccount"], {"onlyReturnExisting": True}, jwk=True)
check(again.status == 400, f"old key onlyReturnExisting: {again}")
check("accountDoesNotExist" in again.json()["type"], f"{again}")
ok("old key refused after keyChange")
acct.key = new
a = acct.post(acct.url)
check(a.status == 200 and a.json()["status"] == "valid", f"new key reads the account: {a}")
found = Account(new).post(DIR["newAccount"], {"onlyReturnExisting": True}, jwk=True)
check(found.status == 200 and found.headers["Location"] == acct.url, f"{found}")
url, order = acct.order(["eddsa.acme.test"], "http-01", http01)
check(order["status"] == "ready", f"EdDSA order {order}")
acct.finalize(url, order, ["eddsa.acme.test"])
ok("EdDSA account: http-01 order issued after keyChange")
print("all done", flush=True)
