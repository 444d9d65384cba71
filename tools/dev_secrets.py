"""Development secrets of `make run`: generated once from the OS's CSPRNG and kept in files.

The folder (var/secrets/) is 0700 and every file in it 0600. A file is created atomically, so two
runners starting together end up with the same value, and every later run reuses it: the
password pepper in particular must never change, or the stored passwords stop matching.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from meshkit.files import create_private_file
from meshkit.settings import secret_weakness

SECRET_BYTES = 32
"""Entropy of a generated secret (43 base64url characters)."""


def stored_secret(directory: Path, name: str) -> str:
    """Return the secret kept in directory/name, generating it first when missing.

    Raises ValueError naming the file (never its content) when the file holds a weak secret.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is reduced by the umask and ignored for a folder that already exists.
    directory.chmod(0o700)
    path = directory / name
    if not path.exists():
        create_private_file(path, f"{secrets.token_urlsafe(SECRET_BYTES)}\n".encode())
    path.chmod(0o600)
    value = path.read_text(encoding="utf-8").strip()
    weakness = secret_weakness(value)
    if weakness is not None:
        raise ValueError(
            f"{path} holds a weak secret ({weakness}); delete the file and a new one is "
            "generated on the next start"
        )
    return value
