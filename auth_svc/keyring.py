"""The folder of access-token signing keys: which key signs, which ones verifiers are given.

Each key is one PEM file (PKCS#8 Ed25519, mode 0600, written atomically) named
`<activation in Unix seconds>-<kid>.pem`, so that its schedule survives in the folder itself and
every replica of auth_svc reading the folder reaches the same answers:

- the newest key whose activation has passed signs;
- a key whose activation is still ahead is published (in the JWKS) but does not sign yet, so that
  verifiers know it before they meet the first token it signs;
- a key whose successor has activated keeps being published for the retention (one access-token
  lifetime plus a leeway): until the last token it signed has expired. Then it is retired and its
  file may be deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auth_svc.tokens import thumbprint
from meshkit.files import create_private_file

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# The kid is an RFC 7638 thumbprint: SHA-256 in base64url without padding, 43 characters.
_KEY_FILE = re.compile(r"(?P<activates_at>[0-9]{1,12})-(?P<kid>[A-Za-z0-9_-]{43})\.pem")
_KEY_SUFFIX = ".pem"


class SigningKeyError(RuntimeError):
    """A key file is unreadable, misnamed or not Ed25519, or the folder holds no key."""


@dataclass(frozen=True)
class StoredKey:
    """One key of the folder and its activation time."""

    kid: str
    activates_at: int
    """Unix seconds from which the key signs (unless a newer key has activated too)."""
    path: Path
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)


@dataclass(frozen=True)
class KeySet:
    """The keys of the folder at one reading, in activation order, and how long a key stays
    published after its successor has activated."""

    keys: tuple[StoredKey, ...]
    retention_seconds: float

    def __post_init__(self) -> None:
        # The kid breaks ties, so every replica picks the same key from the same files.
        ordered = tuple(sorted(self.keys, key=lambda k: (k.activates_at, k.kid)))
        object.__setattr__(self, "keys", ordered)

    def signing(self, now: float) -> StoredKey:
        """Return the key that signs at now: the newest active one (the earliest key when none
        is active yet, e.g. after the clock stepped back); SigningKeyError when there is none."""
        if not self.keys:
            raise SigningKeyError("no signing key")
        active = [key for key in self.keys if key.activates_at <= now]
        return active[-1] if active else self.keys[0]

    def published(self, now: float) -> list[StoredKey]:
        """Return the keys verifiers need at now: pending, signing and retiring ones."""
        return [key for key, ends in self._publication_ends() if ends is None or now < ends]

    def pending(self, now: float) -> list[StoredKey]:
        """Return the keys published ahead of their activation."""
        return [key for key in self.keys if key.activates_at > now]

    def retired(self, now: float) -> list[StoredKey]:
        """Return the keys no longer published: every token they signed has expired."""
        return [key for key, ends in self._publication_ends() if ends is not None and now >= ends]

    def publication_end(self, key: StoredKey) -> float | None:
        """Return when key leaves the JWKS (its successor's activation plus the retention), or
        None while it has no successor."""
        return next(ends for k, ends in self._publication_ends() if k == key)

    def _publication_ends(self) -> list[tuple[StoredKey, float | None]]:
        """Each key with the end of its publication (None for the newest: not scheduled)."""
        if not self.keys:
            return []
        replaced: list[tuple[StoredKey, float | None]] = [
            (key, successor.activates_at + self.retention_seconds)
            for key, successor in itertools.pairwise(self.keys)
        ]
        return [*replaced, (self.keys[-1], None)]


def key_file_name(activates_at: int, kid: str) -> str:
    """Return the file name of a key: its activation time and kid."""
    return f"{activates_at}-{kid}{_KEY_SUFFIX}"


def read_keys(directory: Path, retention_seconds: float) -> KeySet:
    """Read every key file of directory (a missing folder holds none); SigningKeyError names the
    first file that is misnamed, unreadable, not Ed25519 or not the key its name says."""
    keys = [_read_key(path) for path in _key_files(directory)]
    return KeySet(tuple(keys), retention_seconds)


def write_key(
    directory: Path, activates_at: int, private_key: Ed25519PrivateKey | None = None
) -> StoredKey:
    """Store private_key (a fresh one by default) to activate at activates_at; the file is
    created with mode 0600 and appears complete or not at all. Storing a key that is already
    there under that name changes nothing."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = private_key or Ed25519PrivateKey.generate()
    kid = thumbprint(key.public_key())
    path = directory / key_file_name(activates_at, kid)
    create_private_file(path, pem_of(key))
    return StoredKey(kid=kid, activates_at=activates_at, path=path, private_key=key)


def pem_of(key: Ed25519PrivateKey) -> bytes:
    """Return key as an unencrypted PKCS#8 PEM (the file's mode protects it)."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Return the Ed25519 private key of a PEM file; SigningKeyError says what is wrong with it."""
    try:
        mode = path.stat().st_mode
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read signing key file {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key file {path} does not hold an Ed25519 private key")
    if mode & 0o077:
        log.warning("signing key file is readable by other users", extra={"path": str(path)})
    return key


def _key_files(directory: Path) -> list[Path]:
    """The key files of directory; files being written (dot-files) and non-PEM files are not."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SigningKeyError(f"cannot list the signing key folder {directory}: {exc}") from None
    return sorted(
        directory / name
        for name in names
        if name.endswith(_KEY_SUFFIX) and not name.startswith(".")
    )


def _read_key(path: Path) -> StoredKey:
    """Read one key file and check that its name matches its key."""
    match = _KEY_FILE.fullmatch(path.name)
    if match is None:
        raise SigningKeyError(
            f"signing key file {path} is not named <activation unix seconds>-<kid>.pem"
        )
    key = load_private_key(path)
    kid = thumbprint(key.public_key())
    if kid != match["kid"]:
        raise SigningKeyError(f"signing key file {path} holds the key {kid}, not the one named")
    return StoredKey(kid=kid, activates_at=int(match["activates_at"]), path=path, private_key=key)


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int, int], ...]:
    """What changes whenever a key file is added, removed or rewritten: names, inodes, sizes,
    modification times. Cheap: one listing and a stat per file."""
    entries = []
    for path in _key_files(directory):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue  # deleted between the listing and the stat; the next look sees it gone
        entries.append((path.name, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(entries)


def _schedule(keys: KeySet) -> list[tuple[int, str]]:
    """The activation times and kids of keys, which is all that tells two readings apart."""
    return [(key.activates_at, key.kid) for key in keys.keys]


class Keyring:
    """The key folder as auth_svc uses it: read once, then re-read whenever it changes, so that
    a rotation needs no restart and every replica follows the same files."""

    def __init__(
        self, directory: Path, *, retention_seconds: float, clock: Clock = time.time
    ) -> None:
        """Read directory; SigningKeyError when a file is unusable or there is no key at all."""
        self._directory = directory
        self._retention = retention_seconds
        self._clock = clock
        self._fingerprint = _fingerprint(directory)
        keys = read_keys(directory, retention_seconds)
        if not keys.keys:
            raise SigningKeyError(f"the signing key folder {directory} holds no key")
        self._keys = keys
        self._reloading: asyncio.Task[None] | None = None

    @property
    def keys(self) -> KeySet:
        """The keys in use (the folder as last read successfully)."""
        return self._keys

    def signing_key(self, now: float) -> tuple[str, Ed25519PrivateKey]:
        """Return the kid and private key that sign tokens issued at now."""
        key = self._keys.signing(now)
        return key.kid, key.private_key

    def verification_keys(self, now: float) -> list[Ed25519PublicKey]:
        """Return the public keys verifiers need at now."""
        return [key.private_key.public_key() for key in self._keys.published(now)]

    def reload(self) -> bool:
        """Re-read the folder if it changed since the last look; True when the keys in use
        changed. A folder that cannot be read, or holds no key, leaves the keys in use as they
        were (logged), until it changes again."""
        try:
            fingerprint = _fingerprint(self._directory)
        except SigningKeyError as exc:
            log.error("signing keys not reloaded: %s", exc)
            return False
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            keys = read_keys(self._directory, self._retention)
        except SigningKeyError as exc:
            log.error("signing keys not reloaded, the keys in use stay: %s", exc)
            return False
        if not keys.keys:
            log.error("signing keys not reloaded: the folder holds no key; the keys in use stay")
            return False
        changed = _schedule(keys) != _schedule(self._keys)
        self._keys = keys
        if changed:
            now = self._clock()
            log.info(
                "signing keys reloaded",
                extra={
                    "signing_kid": keys.signing(now).kid,
                    "published_kids": [k.kid for k in keys.published(now)],
                },
            )
        return changed

    def start_reloading(self, interval_seconds: float) -> None:
        """Re-read the folder every interval_seconds in the background until stop_reloading;
        call inside the serving event loop."""
        if self._reloading is None:
            self._reloading = asyncio.create_task(
                self._reload_every(interval_seconds), name="signing-keys-reload"
            )

    async def stop_reloading(self) -> None:
        """Stop re-reading the folder (no-op when not started)."""
        task, self._reloading = self._reloading, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _reload_every(self, interval_seconds: float) -> None:
        """Re-read the folder every interval_seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                # A slow disk must not stall the calls this process is serving.
                await asyncio.to_thread(self.reload)
            except Exception:  # whatever went wrong, the next look may succeed: keep looking
                log.exception("signing keys not reloaded")
