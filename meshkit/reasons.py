"""Every machine-readable error reason meshgram returns, in one place.

Reasons travel in google.rpc.ErrorInfo.reason (UPPER_SNAKE_CASE) with ERROR_DOMAIN as the domain,
so clients can branch on them without parsing messages.
"""

from enum import StrEnum

ERROR_DOMAIN = "meshgram.dev"


class Reason(StrEnum):
    """Stable error reasons; never rename a member, clients depend on the values."""

    INVALID_FIELD = "INVALID_FIELD"
    EMAIL_TAKEN = "EMAIL_TAKEN"
    USERNAME_TAKEN = "USERNAME_TAKEN"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    TOKEN_MISSING = "TOKEN_MISSING"
    TOKEN_INVALID = "TOKEN_INVALID"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    REFRESH_TOKEN_INVALID = "REFRESH_TOKEN_INVALID"
    REFRESH_TOKEN_REUSED = "REFRESH_TOKEN_REUSED"
    PROFILE_NOT_FOUND = "PROFILE_NOT_FOUND"
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    IMAGE_TYPE_UNSUPPORTED = "IMAGE_TYPE_UNSUPPORTED"
    CALLER_UNKNOWN = "CALLER_UNKNOWN"
    CALLER_NOT_ALLOWED = "CALLER_NOT_ALLOWED"
    DEPENDENCY_UNAVAILABLE = "DEPENDENCY_UNAVAILABLE"
    REFRESH_TOKEN_EXISTS = "REFRESH_TOKEN_EXISTS"
