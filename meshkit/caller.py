"""Service-to-service caller credentials for data_access.

Each service presents its name and a token derived from the mesh secret that only data_access
holds: token = base64url(HMAC-SHA256(mesh_secret, name)). A service therefore holds only its own
credential and cannot speak as another service.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

CALLER_HEADER = "x-mesh-caller"
CALLER_TOKEN_HEADER = "x-mesh-caller-token"


def derive_caller_token(mesh_secret: str, caller: str) -> str:
    """Return the credential that proves to data_access that the caller is `caller`."""
    digest = hmac.new(mesh_secret.encode(), caller.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
