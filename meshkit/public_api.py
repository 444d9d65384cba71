"""Full names of meshgram's public services, the ones the edge routes to."""

from __future__ import annotations

from meshgram.auth.v1 import auth_pb2
from meshgram.storage.v1 import storage_pb2
from meshgram.user.v1 import user_pb2

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
USER_SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name
STORAGE_SERVICE = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name

# Every public service lists all of them in server reflection (reflection answers from the
# imported descriptors, not from implementations), so grpcurl works against each of them and
# against the edge, which routes reflection to auth_svc.
PUBLIC_SERVICES = (AUTH_SERVICE, USER_SERVICE, STORAGE_SERVICE)


def _paths(service: str, *methods: str) -> frozenset[str]:
    """The gRPC paths ("/package.Service/Method") of some methods of one service."""
    return frozenset(f"/{service}/{method}" for method in methods)


# Which calls need no access token: the one list of them. The edge requires a valid token for
# every other method of the public services (tools/edge_jwt.py), and each service checks the
# token again itself. A new RPC is protected until it is named here.
ANONYMOUS_METHODS = _paths(
    AUTH_SERVICE,
    "Register",
    "Login",
    "VerifyMfa",
    "RefreshToken",
    "Logout",
    "VerifyEmail",
    "ResendVerificationEmail",
    "RequestPasswordReset",
    "ResetPassword",
    "GetJwks",
)
"""Calls that never read an access token: signing up and in, and proving an email or mailbox."""

OPTIONAL_TOKEN_METHODS = _paths(USER_SERVICE, "GetProfile") | _paths(
    STORAGE_SERVICE, "GetImage", "DownloadImage"
)
"""Calls a signed-out visitor may make, which show more to a signed-in caller: a token is
optional, but one that is sent must be valid (a broken token must not quietly turn a user into a
visitor)."""
