"""A py-spiffe Workload API client that connects as another user.

Usage: client.py SOCKET_PATH UID [AUDIENCE]
With AUDIENCE, fetches a JWT-SVID for it instead of the X.509 context (twice,
to see the agent's cache) and has the agent validate it.
The interpreter here lives under a directory other users cannot reach, so
the script imports everything as root, then drops to UID/GID UID (no
supplementary groups) *before* it connects: the agent sees UID in the
socket's peer credentials, exactly as for a process started as that user.
Prints one JSON object: {"uid", "ids", "serials"} (X.509),
{"uid", "sub", "aud", "token", "cached", "validated"} (JWT) or
{"uid", "error", "code"}.
"""

import json
import os
import sys

import grpc
from spiffe import WorkloadApiClient

path, uid = sys.argv[1], int(sys.argv[2])
audience = sys.argv[3] if len(sys.argv) > 3 else None
# gRPC connects lazily (at the first call), so making the client here opens
# no socket yet; it loads what grpc imports on demand.
client = WorkloadApiClient("unix://" + path, default_timeout=20)
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
out = {"uid": os.geteuid()}
try:
    if audience is None:
        ctx = client.fetch_x509_context()
        out["ids"] = sorted(str(s.spiffe_id) for s in ctx.x509_svids)
        out["serials"] = sorted(format(s.leaf.serial_number, "x") for s in ctx.x509_svids)
    else:
        svid = client.fetch_jwt_svid(audience={audience})
        out["sub"] = str(svid.spiffe_id)
        out["aud"] = sorted(svid.audience)
        out["token"] = svid.token
        out["cached"] = client.fetch_jwt_svid(audience={audience}).token == svid.token
        out["validated"] = str(client.validate_jwt_svid(svid.token, audience).spiffe_id)
except Exception as e:  # the test asserts on what the agent answered
    out["error"] = str(e)
    cause = e.__cause__ or e.__context__
    code = getattr(cause, "code", None)
    out["code"] = code().name if callable(code) else None
print(json.dumps(out))
