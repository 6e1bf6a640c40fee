"""py-spiffe against a `ward agent --federate`: waits (at most 60 s) until
the X.509 context carries a bundle for the partner trust domain, then
prints one JSON object: the context's bundles and the X.509 and JWT bundle
sets, each as {trust domain: sorted serials or key ids}.

Usage: pyspiffe_federated.py SOCKET_PATH PARTNER_TRUST_DOMAIN
"""

import json
import sys
import time

from spiffe import WorkloadApiClient


def serials(bundle):
    return sorted(format(c.serial_number, "x") for c in bundle.x509_authorities)


def main():
    path, partner = sys.argv[1], sys.argv[2]
    client = WorkloadApiClient("unix://" + path, default_timeout=30)
    deadline = time.monotonic() + 60
    while True:
        try:
            ctx = client.fetch_x509_context()
            tds = {str(b.trust_domain) for b in ctx.x509_bundle_set.bundles}
            if partner in tds:
                break
        except Exception as e:  # the agent may still be starting
            tds = {"error: " + str(e)}
        if time.monotonic() > deadline:
            print(json.dumps({"timeout": sorted(tds)}))
            return
        time.sleep(0.2)
    x509 = client.fetch_x509_bundles()
    jwt = client.fetch_jwt_bundles()
    print(
        json.dumps(
            {
                "spiffe_id": str(ctx.default_svid.spiffe_id),
                "context": {str(b.trust_domain): serials(b) for b in ctx.x509_bundle_set.bundles},
                "x509_bundles": {str(b.trust_domain): serials(b) for b in x509.bundles},
                "jwt_bundles": {
                    str(b.trust_domain): sorted(b.jwt_authorities.keys()) for b in jwt.bundles
                },
            }
        )
    )


main()
