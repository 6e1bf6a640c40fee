"""Independent check of a Ward ML-DSA PKI with pyca/cryptography.

Usage: verify_mldsa.py ROOT.pem CHAIN.pem [--key KEY.pem] [--crl CRL] [--ocsp RESP.der]
                        [--revoked SERIAL_HEX]

With --revoked, the CRL must list the serial and the OCSP response must say
"revoked" for it.

CHAIN is leaf first, then intermediates. Prints one JSON object: which
implementation did the work, what was checked. Exit status: 0 all verified,
1 something did not verify (the JSON says what), 3 this cryptography build
cannot do ML-DSA (too old, or an OpenSSL without it).
"""

import datetime
import json
import sys

try:
    import cryptography
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.backends.openssl.backend import backend
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import mldsa
    from cryptography.x509 import ocsp
except ImportError as e:
    print(json.dumps({"error": f"no ML-DSA support in this cryptography: {e}"}))
    sys.exit(3)

ML_DSA = {
    "2.16.840.1.101.3.4.3.17": ("ML-DSA-44", mldsa.MLDSA44PublicKey),
    "2.16.840.1.101.3.4.3.18": ("ML-DSA-65", mldsa.MLDSA65PublicKey),
    "2.16.840.1.101.3.4.3.19": ("ML-DSA-87", mldsa.MLDSA87PublicKey),
}

out = {
    "implementation": f"Python cryptography {cryptography.__version__} "
    f"({backend.openssl_version_text()})",
    "checked": [],
    "failed": [],
}


def check(what, fn):
    try:
        fn()
        out["checked"].append(what)
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        out["failed"].append(f"{what}: {type(e).__name__}: {e}")


def load_pems(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


def algorithm(oid):
    name = ML_DSA.get(oid.dotted_string)
    if name is None:
        raise ValueError(f"signature algorithm {oid.dotted_string} is not ML-DSA")
    return name


def verify_signed(what, issuer_key, signature, data, oid):
    name, key_class = algorithm(oid)
    if not isinstance(issuer_key, key_class):
        raise TypeError(f"{what}: signed with {name} but the key is {type(issuer_key).__name__}")
    issuer_key.verify(signature, data)
    # A flipped bit in the signed data must fail: the check is real.
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 1
    try:
        issuer_key.verify(signature, bytes(tampered))
    except InvalidSignature:
        return
    raise AssertionError(f"{what}: a tampered message verified")


def main(argv):
    root_path, chain_path = argv[1], argv[2]
    opts = dict(zip(argv[3::2], argv[4::2]))
    try:
        (root,) = load_pems(root_path)
        chain = load_pems(chain_path)
    except Exception as e:  # noqa: BLE001
        out["failed"].append(f"loading certificates: {type(e).__name__}: {e}")
        return
    path = chain + [root]
    for i, cert in enumerate(path):
        issuer = path[min(i + 1, len(path) - 1)]
        label = f"certificate {i} ({cert.subject.rfc4514_string()})"

        def one(cert=cert, issuer=issuer, label=label):
            verify_signed(
                label,
                issuer.public_key(),
                cert.signature,
                cert.tbs_certificate_bytes,
                cert.signature_algorithm_oid,
            )
            cert.verify_directly_issued_by(issuer)

        check(f"{label}: {algorithm(cert.signature_algorithm_oid)[0]} signature", one)

    def path_validation():
        from cryptography.x509 import verification

        store = verification.Store([root])
        verifier = (
            verification.PolicyBuilder()
            .store(store)
            .time(datetime.datetime.now(datetime.timezone.utc))
            .build_client_verifier()
        )
        verifier.verify(chain[0], chain[1:])

    # cryptography's path validator has its own list of permitted signature
    # algorithms; where ML-DSA is not on it yet, say so instead of failing
    # (every signature was checked above).
    try:
        path_validation()
        out["checked"].append("RFC 5280 path validation (cryptography.x509.verification)")
    except Exception as e:  # noqa: BLE001
        text = f"{type(e).__name__}: {e}"
        if "algorithm" in text.lower() and "signature" in text.lower():
            out["unsupported"] = [f"path validation: {text}"]
        else:
            out["failed"].append(f"RFC 5280 path validation: {text}")

    if "--key" in opts:

        def key():
            with open(opts["--key"], "rb") as f:
                k = serialization.load_pem_private_key(f.read(), None)
            mine = k.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            theirs = chain[0].public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if mine != theirs:
                raise ValueError("the private key does not belong to the leaf")
            # The key signs, and the leaf's public key verifies it.
            chain[0].public_key().verify(k.sign(b"ward"), b"ward")

        check("PKCS#8 ML-DSA private key loads and matches the leaf", key)

    if "--crl" in opts:

        def crl():
            with open(opts["--crl"], "rb") as f:
                data = f.read()
            c = (
                x509.load_pem_x509_crl(data)
                if data.startswith(b"-----")
                else x509.load_der_x509_crl(data)
            )
            issuer = chain[1] if len(chain) > 1 else root
            verify_signed(
                "CRL", issuer.public_key(), c.signature, c.tbs_certlist_bytes, c.signature_algorithm_oid
            )
            if not c.is_signature_valid(issuer.public_key()):
                raise ValueError("is_signature_valid refused the CRL")
            if "--revoked" in opts:
                serial = int(opts["--revoked"], 16)
                if c.get_revoked_certificate_by_serial_number(serial) is None:
                    raise ValueError(f"the CRL does not list {opts['--revoked']}")

        check("CRL signature", crl)

    if "--ocsp" in opts:

        def ocsp_response():
            with open(opts["--ocsp"], "rb") as f:
                r = ocsp.load_der_ocsp_response(f.read())
            if r.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
                raise ValueError(f"OCSP status {r.response_status}")
            issuer = chain[1] if len(chain) > 1 else root
            signer = r.certificates[0] if r.certificates else issuer
            verify_signed(
                "OCSP response",
                signer.public_key(),
                r.signature,
                r.tbs_response_bytes,
                r.signature_algorithm_oid,
            )
            if "--revoked" in opts:
                if r.serial_number != int(opts["--revoked"], 16):
                    raise ValueError(f"the response is about {r.serial_number:x}")
                if r.certificate_status != ocsp.OCSPCertStatus.REVOKED:
                    raise ValueError(f"status {r.certificate_status}, not revoked")

        check("OCSP response signature", ocsp_response)


main(sys.argv)
print(json.dumps(out))
sys.exit(1 if out["failed"] else 0)
