"""JWT-SVIDs from a running `ward agent`, judged by clients nobody here wrote.

Usage: jwt_svid.py SOCKET CA_URL ROOT_PEM CA_JWT_KEY
  py-spiffe: FetchJWTSVID (twice: the agent caches), FetchJWTBundles,
  offline validation against the fetched bundle, ValidateJWTSVID for good
  and bad tokens, and the first message of a JWT bundle stream.
  PyJWT: verifies the token against the JWKS the CA serves at /v1/bundle.
  Bad tokens are made with PyJWT: expired and wrong-audience ones signed
  with the CA's own JWT key (read from the CA directory), and one signed by
  a foreign key under the CA's kid.
Prints one JSON object.
"""

import base64
import json
import ssl
import sys
import threading
import time
import urllib.request

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from spiffe import JwtSvid, TrustDomain, WorkloadApiClient

socket_path, ca_url, root_pem, ca_jwt_key = sys.argv[1:5]
out = {}

client = WorkloadApiClient("unix://" + socket_path, default_timeout=30)
svid = client.fetch_jwt_svid(audience={"svc-a", "svc-b"})
token = svid.token
again = client.fetch_jwt_svid(audience={"svc-b", "svc-a"})
out["fetch"] = {
    "spiffe_id": str(svid.spiffe_id),
    "audience": sorted(svid.audience),
    "ttl": svid.expiry - int(time.time()),
    "cached": again.token == token,
}
header = jwt.get_unverified_header(token)
out["header"] = header

bundles = client.fetch_jwt_bundles()
bundle = bundles.get_bundle_for_trust_domain(TrustDomain("example.org"))
out["bundle_kids"] = sorted(bundle.jwt_authorities.keys())
checked = JwtSvid.parse_and_validate(token, bundle, {"svc-a"})
out["offline_valid"] = str(checked.spiffe_id)
out["api_valid"] = str(client.validate_jwt_svid(token, "svc-a").spiffe_id)


def refused(tok, aud):
    try:
        client.validate_jwt_svid(tok, aud)
        return None
    except Exception as e:  # the error text says why
        return str(e)


now = int(time.time())
with open(ca_jwt_key, "rb") as f:
    ca_key = serialization.load_pem_private_key(f.read(), None)
foreign = ec.generate_private_key(ec.SECP256R1())
kid = header["kid"]
sub = str(svid.spiffe_id)


def forge(key, claims):
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "typ": "JWT"})


out["refused"] = {
    "wrong_aud_api": refused(token, "svc-c"),
    "expired": refused(forge(ca_key, {"sub": sub, "aud": "svc-a", "exp": now - 5}), "svc-a"),
    "wrong_key": refused(forge(foreign, {"sub": sub, "aud": "svc-a", "exp": now + 60}), "svc-a"),
    "garbage": refused("a.b.c", "svc-a"),
}
# The control: the CA's key with good claims passes, so the refusals above
# are about what was changed.
out["control"] = refused(forge(ca_key, {"sub": sub, "aud": "svc-a", "exp": now + 60}), "svc-a")

# PyJWT against the JWKS the CA publishes.
ctx = ssl.create_default_context(cafile=root_pem)
with urllib.request.urlopen(ca_url + "/v1/bundle", context=ctx, timeout=30) as r:
    doc = json.load(r)
out["bundle_doc"] = {
    "uses": sorted(k.get("use", "") for k in doc["keys"]),
    "refresh_hint": doc.get("spiffe_refresh_hint"),
    "sequence": doc.get("spiffe_sequence"),
}
jwks = jwt.PyJWKSet.from_dict({"keys": [k for k in doc["keys"] if k.get("use") == "jwt-svid"]})
key = next(k for k in jwks.keys if k.key_id == kid)
claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="svc-a")
out["pyjwt"] = {"sub": claims["sub"], "aud": claims["aud"]}
try:
    jwt.decode(token, key.key, algorithms=["ES256"], audience="nobody")
    out["pyjwt_wrong_aud"] = None
except jwt.InvalidAudienceError as e:
    out["pyjwt_wrong_aud"] = str(e)
# The x509-svid entries carry the root.
with open(root_pem, "rb") as f:
    root = x509.load_pem_x509_certificate(f.read())
x5c = [k["x5c"][0] for k in doc["keys"] if k.get("use") == "x509-svid"]
out["x5c_is_root"] = [
    x509.load_der_x509_certificate(base64.b64decode(c)) == root for c in x5c
]

# The bundle stream sends the current bundle at once.
got = threading.Event()
seen = []


def on_success(bundle_set):
    seen.append(sorted(bundle_set.get_bundle_for_trust_domain(TrustDomain("example.org")).jwt_authorities.keys()))
    got.set()


def on_error(err):
    seen.append("error: " + str(err))
    got.set()


handle = client.stream_jwt_bundles(on_success, on_error)
got.wait(30)
handle.cancel()
out["stream"] = seen[:1]
client.close()
print(json.dumps(out))
