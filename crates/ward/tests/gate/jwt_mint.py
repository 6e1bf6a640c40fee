"""JWT-SVIDs minted by PyJWT (an implementation nobody here wrote), for the
gate's bearer-token routes.

Usage: jwt_mint.py BUNDLE_OUT
Writes a SPIFFE bundle (JWK set: an ES256 and an RS256 key, use jwt-svid)
to BUNDLE_OUT and prints a JSON object of tokens by case name. The
"foreign" key signs tokens but is not in the bundle.
"""

import json
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

bundle_out = sys.argv[1]
ec_key = ec.generate_private_key(ec.SECP256R1())
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
foreign = ec.generate_private_key(ec.SECP256R1())


def jwk(key, alg, kid):
    d = json.loads(alg.to_jwk(key.public_key()))
    d["kid"] = kid
    d["use"] = "jwt-svid"
    return d


bundle = {
    "keys": [
        jwk(ec_key, ECAlgorithm, "ec-1"),
        jwk(rsa_key, RSAAlgorithm, "rsa-1"),
    ],
    "spiffe_refresh_hint": 60,
    "spiffe_sequence": 1,
}
with open(bundle_out, "w") as f:
    json.dump(bundle, f)

now = int(time.time())


def token(sub, aud="gate", exp=now + 300, key=ec_key, alg="ES256", kid="ec-1"):
    claims = {"sub": sub, "aud": aud, "exp": exp, "iat": now}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


app = "spiffe://example.org/ns/app"
print(
    json.dumps(
        {
            "good": token(app),
            "good_rs256": token(app, key=rsa_key, alg="RS256", kid="rsa-1"),
            "good_list_aud": token(app, aud=["other", "gate"]),
            "not_allowed": token("spiffe://example.org/other/x"),
            "other_domain": token("spiffe://partner.example/ns/app"),
            "wrong_aud": token(app, aud="someone-else"),
            "expired": token(app, exp=now - 60),
            "wrong_key": token(app, key=foreign),
            "unknown_kid": token(app, key=foreign, kid="nope"),
            "hs256": jwt.encode(
                {"sub": app, "aud": "gate", "exp": now + 300},
                "secret-secret-secret-secret-secret",
                algorithm="HS256",
                headers={"kid": "ec-1"},
            ),
        }
    )
)
