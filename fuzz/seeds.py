#!/usr/bin/env python3
"""Writes the committed seed corpora, fuzz/corpus/<target>/seed-*.

Seeds come from the repository's test fixtures and from Python's
`cryptography` and `ssl` modules (tools Ward did not write), so the fuzzers
start from inputs a real client, CA or upstream would send. Re-run it after
changing a target's input format:

    python3 fuzz/seeds.py

Certificates, CRLs and requests are signed with fresh keys or the public test
keys in crates/ward-testkit/fixtures; the output differs from run to run only
in keys and signatures.
"""

import base64
import datetime
import ipaddress
import json
import os
import re
import shutil
import ssl
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.ocsp import OCSPRequestBuilder
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(ROOT, "crates", "ward-testkit", "fixtures")
CORPUS = os.path.join(HERE, "corpus")


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def cert(name):
    return x509.load_pem_x509_certificates(fixture(name))[0]


def key(name):
    return serialization.load_pem_private_key(fixture(name), password=None)


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def clear():
    """Removes the old seeds (crash-* inputs stay)."""
    if not os.path.isdir(CORPUS):
        return
    for target in os.listdir(CORPUS):
        for entry in os.listdir(os.path.join(CORPUS, target)):
            if entry.startswith("seed-"):
                os.remove(os.path.join(CORPUS, target, entry))


# --- CSRs ---------------------------------------------------------------------

def csr(k, uris=(), dns=(), ips=(), cn=None, algorithm=hashes.SHA256()):
    names = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    b = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if isinstance(k, ed25519.Ed25519PrivateKey):
        algorithm = None
    return b.sign(k, algorithm)


def csrs():
    spiffe = "spiffe://example.org/fuzz"
    p256 = ec.generate_private_key(ec.SECP256R1())
    out = {
        "p256": csr(p256, uris=[spiffe], dns=["localhost"]),
        "p384-cn": csr(ec.generate_private_key(ec.SECP384R1()), uris=[spiffe], cn=spiffe,
                       algorithm=hashes.SHA384()),
        "ed25519": csr(ed25519.Ed25519PrivateKey.generate(), uris=[spiffe]),
        "rsa2048": csr(rsa.generate_private_key(65537, 2048), uris=[spiffe], dns=["fuzz.example.org"]),
        "outside": csr(p256, uris=["spiffe://example.org/other"], dns=["evil.example"], ips=["10.0.0.1"]),
        "p521": csr(ec.generate_private_key(ec.SECP521R1()), uris=[spiffe], algorithm=hashes.SHA512()),
    }
    return {k: v.public_bytes(serialization.Encoding.DER) for k, v in out.items()}


# --- CRLs and OCSP ------------------------------------------------------------

def crl(issuer_cert, issuer_key, serials, number, algorithm=hashes.SHA256()):
    at = datetime.datetime(2029, 6, 1, tzinfo=datetime.timezone.utc)
    b = (x509.CertificateRevocationListBuilder()
         .issuer_name(issuer_cert.subject)
         .last_update(at)
         .next_update(at + datetime.timedelta(days=700))
         .add_extension(x509.CRLNumber(number), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                        critical=False))
    for i, serial in enumerate(serials):
        r = (x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at))
        if i % 2:
            r = r.add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
        b = b.add_revoked_certificate(r.build())
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        algorithm = None
    return b.sign(issuer_key, algorithm)


def ocsp_request(subject, issuer, algorithm, nonce=None):
    b = OCSPRequestBuilder().add_certificate(subject, issuer, algorithm)
    if nonce is not None:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


# --- TLS ClientHellos -----------------------------------------------------------

def client_hello(sni, alpn, tls12_only=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def main():
    clear()
    spiffe = "spiffe://example.org/fuzz"

    # csr: DER (wrapped in PEM by the target) and one PEM.
    ders = csrs()
    for name, der in ders.items():
        write("csr", name, der)
    pem = x509.load_der_x509_csr(ders["p256"]).public_bytes(serialization.Encoding.PEM)
    write("csr", "p256.pem", pem)

    # ca_json: route byte (0 sign, 1 issue, 2 seed, 3 renew, 4 create token,
    # 5 revoke) + body.
    token = "wdt_" + base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
    bodies = [
        (0, json.dumps({"token": token, "csr": pem.decode()})),
        (0, '{"csr":"-----BEGIN CERTIFICATE REQUEST-----\\nMIIB\\n-----END CERTIFICATE REQUEST-----\\n"}'),
        (1, '{"token":"%s","key_type":"ecdsa-p384"}' % token),
        (1, '{"key_type":"rsa-4096"}'),
        (2, '{"bootstrap_token":"%s","extra":[1,2.5e3,null,true]}' % token),
        (3, ''),
        (3, '{"csr":null}'),
        (4, '{"spiffe_id":"%s","dns":["localhost"],"cert_ttl":"1h","expires_in":"30m",'
            '"uses":3,"profile":"server","allowed_cidrs":["10.0.0.0/8","::1"]}' % spiffe),
        (4, '{"spiffe_id":"spiffe://example.org/ward/admin","cert_ttl":"90s"}'),
        (5, '{"serial":"0a:1B:2c","reason":"keyCompromise"}'),
        (5, '{"serial":"00ff","reason":"certificate-hold"}'),
    ]
    for i, (route, body) in enumerate(bodies):
        write("ca_json", "%02d" % i, bytes([route]) + body.encode())

    # token: Authorization value \n network \n address.
    for i, t in enumerate([
        "Bearer %s\n10.0.0.0/8\n10.1.2.3" % token,
        "bearer   %s  \n2001:db8::/32\n::ffff:10.0.0.1" % token,
        "%s\n127.0.0.1\n127.0.0.1" % token,
        "Basic dXNlcjpwYXNz\n0.0.0.0/0\n8.8.8.8",
        "Bearer wdt_short\n::/129\nx",
    ]):
        write("token", "%02d" % i, t)

    # ocsp: 0x00 + DER (POST) or 0x01 + path segment (GET).
    root, inter, leaf = cert("root.crt"), cert("intermediate.crt"), cert("client.crt")
    reqs = {
        "leaf-sha1": ocsp_request(leaf, inter, hashes.SHA1()),
        "leaf-sha256-nonce": ocsp_request(leaf, inter, hashes.SHA256(), os.urandom(32)),
        "leaf-nonce64": ocsp_request(leaf, inter, hashes.SHA1(), os.urandom(64)),
        "intermediate": ocsp_request(inter, root, hashes.SHA1()),
    }
    for name, der in reqs.items():
        write("ocsp", "post-" + name, b"\x00" + der)
    std = base64.b64encode(reqs["leaf-sha1"]).decode()
    write("ocsp", "get-std", b"\x01" + std.encode())
    write("ocsp", "get-percent", b"\x01" + urllib.parse.quote(std, safe="").encode())
    url = base64.urlsafe_b64encode(reqs["leaf-sha256-nonce"]).decode().rstrip("=")
    write("ocsp", "get-url", b"\x01" + url.encode())

    # crl: DER and PEM, from the intermediate (RSA) and the root (ECDSA).
    inter_key, root_key = key("intermediate.key"), key("root.key")
    c1 = crl(inter, inter_key, [leaf.serial_number, 0x0102030405, 1], 7)
    write("crl", "intermediate.der", c1.public_bytes(serialization.Encoding.DER))
    write("crl", "intermediate.pem", c1.public_bytes(serialization.Encoding.PEM))
    write("crl", "intermediate-empty.der",
          crl(inter, inter_key, [], 2**70).public_bytes(serialization.Encoding.DER))
    write("crl", "root.der",
          crl(root, root_key, [inter.serial_number], 1).public_bytes(serialization.Encoding.DER))

    # client_hello: what Python's OpenSSL client sends first.
    write("client_hello", "tls13-sni-h2", client_hello("gate.example.org", ["h2", "http/1.1"]))
    write("client_hello", "tls12-only", client_hello("api.example.org", ["http/1.1"], True))
    write("client_hello", "no-sni", client_hello(None, None))
    # sni: the same first flights, for the passthrough path's own reader.
    write("sni", "tls13-sni-h2", client_hello("gate.example.org", ["h2", "http/1.1"]))
    write("sni", "tls12-only", client_hello("api.example.org", ["http/1.1"], True))
    write("sni", "no-sni", client_hello(None, None))

    # proxy_protocol: v1 lines and v2 headers as HAProxy sends them.
    write("proxy_protocol", "v1-tcp4", "PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n\x16\x03\x01")
    write("proxy_protocol", "v1-tcp6", "PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n")
    write("proxy_protocol", "v1-unknown", "PROXY UNKNOWN\r\n")
    v2 = b"\r\n\r\n\x00\r\nQUIT\n"
    write("proxy_protocol", "v2-tcp4-tlv",
          v2 + bytes([0x21, 0x11, 0, 16, 192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 1, 0xbb,
                      0x04, 0, 1, 0xaa]))
    write("proxy_protocol", "v2-local", v2 + bytes([0x20, 0x00, 0, 0]))

    # h1_request: request heads.
    for i, h in enumerate([
        "GET /v1/items?x=1 HTTP/1.1\r\nHost: API.example.org:8443\r\nAccept: */*\r\n\r\n",
        "POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nx-forwarded-for: 10.0.0.1\r\n"
        "X-Ward-Spiffe-Id: spiffe://example.org/admin\r\nconnection: keep-alive, x-secret\r\n"
        "x-secret: 1\r\nx-forwarded-proto: http\r\n\r\nhello",
        "GET / HTTP/1.1\r\nContent-Length: 5, 5\r\nHost: a\r\nHost: b\r\n\r\n",
        "PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "DELETE /x HTTP/1.1\r\nx_ward_spiffe_id: spoof\r\nForwarded: for=1.2.3.4\r\nclient-cert: :AA==:\r\n\r\n",
    ]):
        write("h1_request", "%02d" % i, h)

    # h1_response: flags byte (1: HEAD request, 2: client closes) + head.
    for i, (flags, h) in enumerate([
        (0, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"),
        (0, "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 9\r\n\r\n"),
        (1, "HTTP/1.1 204 No Content\r\nconnection: close, x-hop\r\nx-hop: 1\r\n\r\n"),
        (2, "HTTP/1.0 200 OK\r\nkeep-alive: timeout=5\r\n\r\nbody"),
        (0, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"),
        (0, "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n"),
    ]):
        write("h1_response", "%02d" % i, bytes([flags]) + h.encode())

    # h1_chunked: split seed byte + body.
    for i, (seed, body) in enumerate([
        (1, "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n"),
        (7, "A;ext=1\r\n0123456789\r\n00000\r\nx-trailer: 1\r\n\r\n"),
        (3, "fFfF\r\nabc"),
        (9, "1\r\nx\r\n1 ;a\r\ny\r\n0\r\n\r\n"),
        (2, "g\r\n"),
    ]):
        write("h1_chunked", "%02d" % i, bytes([seed]) + body.encode())

    # gate_config: the documented example without comments, and a minimal one.
    with open(os.path.join(ROOT, "docs", "gate.example.toml")) as f:
        example = f.read()
    lines = [l for l in example.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    write("gate_config", "example", "\n".join(re.sub(r"\s+#.*$", "", l) for l in lines) + "\n")
    write("gate_config", "minimal",
          '[[tenants]]\nname = "api"\ncert = "api.crt"\nkey = "api.key"\nclient_ca = "ca.pem"\n'
          '[[tenants.routes]]\nname = "all"\npath_prefix = "/"\nupstream = "http://127.0.0.1:8080"\n'
          '[tenants.routes.allow]\nspiffe_ids = ["spiffe://example.org/*"]\n')

    # ca_config: what `ward ca init` writes, minimal and full.
    write("ca_config", "minimal",
          '[ca]\ntrust_domain = "example.org"\nname = "Example"\nkey_type = "ecdsa-p256"\n')
    write("ca_config", "full",
          '[ca]\ntrust_domain = "prod.example.org"\nname = "Acme \\"Ops\\""\nkey_type = "ed25519"\n'
          'offline_root = true\n[issuance]\ndefault_ttl = "1h"\nmax_ttl = "24h"\n'
          'offline_default_ttl = "30d"\n[limits]\nper_address_per_second = 200\n'
          'per_address_burst = 1000\nper_token_per_second = 1\nper_token_burst = 0\n'
          '[revocation]\ncrl_validity = "1h"\ncrl_refresh = "1m"\n'
          'crl_url = "http://ca.example.org/v1/crl"\nocsp_url = "http://ca.example.org/ocsp"\n'
          'ocsp_validity = "5m"\n')


if __name__ == "__main__":
    main()
