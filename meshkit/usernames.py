"""The username rule shared by sign-up (auth_svc) and renames (user_svc), and the reserved names.

A username is a public handle and a URL segment (/v1/profiles/{username}, and the web pages a
client may serve at /{username}), so names that are routes, roles or the product's own words are
reserved: nobody can sign up as "admin" or rename themselves to "api".
"""

from __future__ import annotations

import re

MIN_LENGTH = 3
MAX_LENGTH = 30
_CHARS = re.compile(r"[a-z0-9._]+")

RESERVED = frozenset(
    {
        # Routes of the API, the edge and the web client.
        "about", "account", "accounts", "admin", "administrator", "api", "app", "apps", "assets",
        "auth", "blocked", "cdn", "dashboard", "docs", "download", "edit", "explore", "feed",
        "followers", "following", "graphql", "health", "help", "home", "images", "login",
        "logout", "me", "media", "new", "oauth", "password", "privacy", "profile", "profiles",
        "register", "reset", "search", "security", "settings", "signin", "signup", "static",
        "status", "support", "terms", "upload", "uploads", "user", "users", "v1", "v2",
        "verify", "web", "www",
        # Roles and the product's own names, which an impostor would love to hold.
        "meshgram", "moderator", "official", "owner", "root", "staff", "superuser", "system",
        "team", "security_team", "help_center", "null", "undefined", "anonymous", "everyone",
        "nobody",
    }
)  # fmt: skip


def normalise_username(raw: str) -> str:
    """Return the lower-case username or raise ValueError with a readable reason; reserved names
    pass (see check_not_reserved)."""
    username = raw.strip()
    if not username:
        raise ValueError("is required")
    # Checked before lower-casing: str.lower maps some non-ASCII letters (e.g. the Kelvin sign)
    # to ASCII ones, and a handle must be exactly what the user typed, modulo case.
    if not username.isascii() or not _CHARS.fullmatch(username.lower()):
        raise ValueError('may contain only letters a-z, digits 0-9, "." and "_"')
    username = username.lower()
    if not MIN_LENGTH <= len(username) <= MAX_LENGTH:
        raise ValueError(f"must be {MIN_LENGTH} to {MAX_LENGTH} characters long")
    if username.startswith(".") or username.endswith("."):
        raise ValueError('must not start or end with "."')
    if ".." in username:
        raise ValueError('must not contain ".."')
    return username


def new_username(raw: str) -> str:
    """Return the lower-case form of a username someone wants to take, or raise ValueError when
    it breaks the rule or is reserved."""
    username = normalise_username(raw)
    if username in RESERVED:
        raise ValueError("is reserved: choose another")
    return username
