"""auth_svc's signing keys as configured: the first key (adopted, generated in development or
refused), and the rotation command.

`python -m auth_svc.keys rotate` (`make rotate-keys`) stores a new key that activates after
AUTH_JWT_KEY_PUBLISH_DELAY_SECONDS and deletes the files of retired keys; every auth_svc replica
picks the change up on its next look at the folder, with no restart.
`python -m auth_svc.keys list` shows the keys and their schedule. Neither prints key material.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from auth_svc.keyring import (
    Clock,
    Keyring,
    KeySet,
    SigningKeyError,
    StoredKey,
    load_private_key,
    read_keys,
    write_key,
)
from auth_svc.settings import AuthSettings
from meshkit.access_tokens import JWKS_REFRESH_SECONDS
from meshkit.settings import RequiredSecret, load_settings

__all__ = ["Rotation", "SigningKeyError", "ensure_first_key", "open_keyring", "rotate"]

log = logging.getLogger(__name__)

ROTATE_COMMAND = "`python -m auth_svc.keys rotate` (make rotate-keys)"


def retention_seconds(settings: AuthSettings) -> float:
    """How long a key stays published once its successor signs: until the last token it signed
    has expired (the access-token lifetime) plus the configured leeway for clock skew."""
    return settings.access_token_ttl_seconds + settings.jwt_key_retention_leeway_seconds


def open_keyring(settings: AuthSettings, *, clock: Clock = time.time) -> Keyring:
    """Return the keyring of the configured folder, giving it its first key when it has none
    (the legacy AUTH_JWT_PRIVATE_KEY_FILE if it exists, else a new key in development);
    SigningKeyError says what to do when there is no usable key."""
    ensure_first_key(
        settings.jwt_keys_dir,
        legacy_file=settings.jwt_private_key_file,
        create_if_missing=settings.environment == "development",
        clock=clock,
    )
    return Keyring(
        settings.jwt_keys_dir, retention_seconds=retention_seconds(settings), clock=clock
    )


def ensure_first_key(
    directory: Path, *, legacy_file: Path | None, create_if_missing: bool, clock: Clock = time.time
) -> StoredKey | None:
    """Give an empty key folder its first key and return it (None when the folder had keys):
    the key of legacy_file when that exists (active since time 0: it has been signing all
    along); otherwise a new key active from now, when create_if_missing; else SigningKeyError."""
    if read_keys(directory, retention_seconds=0).keys:
        return None
    if legacy_file is not None and legacy_file.exists():
        # The same file always yields the same name, so replicas adopting at once agree.
        adopted = write_key(directory, 0, load_private_key(legacy_file))
        log.info(
            "adopted the single signing key file into the key folder; it can be removed",
            extra={"path": str(legacy_file), "kid": adopted.kid},
        )
        return adopted
    if not create_if_missing:
        raise SigningKeyError(
            f"the signing key folder {directory} holds no key; create the first one with "
            f"{ROTATE_COMMAND}, or set AUTH_JWT_KEYS_DIR to the folder that holds them"
        )
    created = write_key(directory, int(clock()))
    log.info("generated a development signing key", extra={"kid": created.kid})
    return created


@dataclass(frozen=True)
class Rotation:
    """What a rotation did, and the keys as it left them."""

    adopted: StoredKey | None
    """The legacy key file taken in as the folder's first key, if any."""
    created: StoredKey
    deleted: list[StoredKey]
    keys: KeySet
    """The folder after the rotation."""
    at: float
    """When the rotation ran (Unix seconds)."""


def rotate(
    directory: Path,
    *,
    legacy_file: Path | None,
    publish_delay_seconds: float,
    retention_seconds: float,
    clock: Clock = time.time,
) -> Rotation:
    """Store a new key that activates publish_delay_seconds from now (at once in a folder with no
    key: nothing signs yet that verifiers would have to keep accepting) and delete the files of
    keys whose publication has ended."""
    adopted = None
    if legacy_file is not None and legacy_file.exists():
        # The key signing until now must stay published while the new one is introduced.
        adopted = ensure_first_key(
            directory, legacy_file=legacy_file, create_if_missing=False, clock=clock
        )
    now = clock()
    before = read_keys(directory, retention_seconds)
    activates_at = math.ceil(now + publish_delay_seconds) if before.keys else int(now)
    created = write_key(directory, activates_at)
    deleted = before.retired(now)
    for key in deleted:
        key.path.unlink(missing_ok=True)
    return Rotation(
        adopted=adopted,
        created=created,
        deleted=deleted,
        keys=read_keys(directory, retention_seconds),
        at=now,
    )


def _when(seconds: float) -> str:
    """A Unix time as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")


def describe_keys(keys: KeySet, now: float) -> list[str]:
    """One line per key: its kid, its state at now and the times that matter."""
    signing, pending = keys.signing(now), keys.pending(now)
    lines = []
    for key in keys.keys:
        ends = keys.publication_end(key)
        if key in pending:
            state = f"published ahead, signs from {_when(key.activates_at)}"
        elif key == signing:
            state = f"signing since {_when(key.activates_at)}"
        elif ends is not None and now < ends:
            state = f"retiring, verifies tokens until {_when(ends)}"
        else:
            state = "retired, no longer published"
        lines.append(f"  {key.kid}  {state}")
    return lines


def describe_rotation(rotation: Rotation, publish_delay_seconds: float) -> list[str]:
    """What a rotation did, for the operator (kids and times, never key material)."""
    lines = []
    if rotation.adopted is not None:
        lines.append(f"adopted the key file AUTH_JWT_PRIVATE_KEY_FILE as {rotation.adopted.kid}")
    created = rotation.created
    if created.activates_at <= rotation.at:
        lines.append(f"created {created.kid}, the first key: it signs from now")
    else:
        lines.append(
            f"created {created.kid}: published now, signs from {_when(created.activates_at)} "
            f"(in {int(created.activates_at - rotation.at)} s)"
        )
    lines.extend(f"deleted the retired key {key.kid}" for key in rotation.deleted)
    lines.append("keys now:")
    lines.extend(describe_keys(rotation.keys, rotation.at))
    needed = JWKS_REFRESH_SECONDS
    if created.activates_at > rotation.at and publish_delay_seconds < needed:
        lines.append(
            f"note: the publish delay ({publish_delay_seconds:g} s) is shorter than the "
            f"verifiers' JWKS refresh interval ({needed:g} s): some will learn the new key from "
            "its first token, with one extra JWKS fetch each"
        )
    return lines


class _KeySettings(AuthSettings):
    """auth_svc's settings as the key commands read them: the same variables, but handling key
    files needs none of the service's secrets."""

    def required_secrets(self) -> list[RequiredSecret]:
        """None: the commands touch only the key folder."""
        return []


def main(argv: Sequence[str] | None = None) -> None:
    """Run a key command on the folder that AUTH_JWT_KEYS_DIR names; print what it did."""
    parser = argparse.ArgumentParser(
        prog="python -m auth_svc.keys", description="Manage auth_svc's access-token signing keys."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "rotate",
        help="store a new key (signs after the publish delay) and delete retired key files",
    )
    commands.add_parser("list", help="show the keys and their schedule")
    args = parser.parse_args(argv)
    settings = load_settings(_KeySettings, "auth_svc.keys")
    try:
        if args.command == "rotate":
            rotation = rotate(
                settings.jwt_keys_dir,
                legacy_file=settings.jwt_private_key_file,
                publish_delay_seconds=settings.jwt_key_publish_delay_seconds,
                retention_seconds=retention_seconds(settings),
            )
            lines = describe_rotation(rotation, settings.jwt_key_publish_delay_seconds)
        else:
            keys = read_keys(settings.jwt_keys_dir, retention_seconds(settings))
            lines = describe_keys(keys, time.time()) if keys.keys else ["no keys"]
    except SigningKeyError as exc:
        raise SystemExit(f"auth_svc.keys: {exc}") from None
    print(f"signing key folder {settings.jwt_keys_dir}:")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
