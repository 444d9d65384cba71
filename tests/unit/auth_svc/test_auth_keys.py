"""The signing key file: created with mode 0600 in development, required otherwise."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from auth_svc.keys import SigningKeyError, load_signing_key
from auth_svc.tokens import thumbprint


def test_missing_key_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "jwt.pem"
    first = load_signing_key(path, create_if_missing=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    second = load_signing_key(path, create_if_missing=True)
    assert thumbprint(first.public_key()) == thumbprint(second.public_key())


def test_missing_key_is_an_error_when_creation_is_not_allowed(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="does not exist"):
        load_signing_key(tmp_path / "absent.pem", create_if_missing=False)


def test_non_ed25519_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rsa.pem"
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(rsa.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(SigningKeyError, match="Ed25519"):
        load_signing_key(path, create_if_missing=False)


def test_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pem"
    path.write_text("not a key")
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_signing_key(path, create_if_missing=True)


def test_existing_key_is_loaded(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "given.pem"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    loaded = load_signing_key(path, create_if_missing=False)
    assert thumbprint(loaded.public_key()) == thumbprint(key.public_key())
