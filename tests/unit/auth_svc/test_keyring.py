"""The key folder: which key signs and which ones are published as time passes, re-reading it
while running, and what it does with files that are not usable keys."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from auth_svc.keyring import (
    Clock,
    Keyring,
    SigningKeyError,
    StoredKey,
    key_file_name,
    read_keys,
    write_key,
)
from auth_svc.tokens import AccessTokenSigner, thumbprint

# One access-token lifetime (900 s) plus a leeway (60 s).
RETENTION = 960.0


class HandClock:
    """Wall-clock time moved by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def kids(keys: list[StoredKey]) -> list[str]:
    return [key.kid for key in keys]


def published_kids(signer: AccessTokenSigner) -> list[str]:
    return [key["kid"] for key in signer.jwks()]


def test_a_new_key_is_published_ahead_then_signs_while_the_old_one_retires(
    tmp_path: Path,
) -> None:
    clock = HandClock()
    old = write_key(tmp_path, int(clock.now) - 3600)
    keyring = Keyring(tmp_path, retention_seconds=RETENTION, clock=clock)
    signer = AccessTokenSigner(keyring, ttl_seconds=900, clock=clock)
    assert signer.kid == old.kid
    assert published_kids(signer) == [old.kid]

    new = write_key(tmp_path, int(clock.now) + 300)
    keyring.reload()
    # Published ahead: verifiers can learn it, but the old key still signs.
    assert signer.kid == old.kid
    assert published_kids(signer) == [old.kid, new.kid]

    clock.now = new.activates_at - 1
    assert signer.kid == old.kid
    clock.now = new.activates_at
    assert signer.kid == new.kid
    # The old key's last tokens are still valid: it stays published for the retention.
    clock.now = new.activates_at + RETENTION - 1
    assert published_kids(signer) == [old.kid, new.kid]
    clock.now = new.activates_at + RETENTION
    assert published_kids(signer) == [new.kid]
    assert kids(keyring.keys.retired(clock.now)) == [old.kid]


def test_the_newest_active_key_signs_whatever_the_order_of_the_files(tmp_path: Path) -> None:
    now = 1_700_000_000
    later = write_key(tmp_path, now + 100)
    oldest = write_key(tmp_path, now - 2000)
    newest_active = write_key(tmp_path, now - 10)
    keys = read_keys(tmp_path, RETENTION)
    assert kids(list(keys.keys)) == [oldest.kid, newest_active.kid, later.kid]
    assert keys.signing(now).kid == newest_active.kid
    assert kids(keys.pending(now)) == [later.kid]
    # oldest's successor activated 10 s ago: its tokens are still valid.
    assert kids(keys.published(now)) == [oldest.kid, newest_active.kid, later.kid]
    assert keys.publication_end(oldest) == newest_active.activates_at + RETENTION
    assert keys.publication_end(later) is None


def test_each_key_retires_after_its_own_successor(tmp_path: Path) -> None:
    first = write_key(tmp_path, 1000)
    second = write_key(tmp_path, 2000)
    third = write_key(tmp_path, 5000)
    keys = read_keys(tmp_path, 960)
    assert kids(keys.published(2500)) == [first.kid, second.kid, third.kid]
    assert kids(keys.published(2960)) == [second.kid, third.kid]
    assert kids(keys.published(5959)) == [second.kid, third.kid]
    assert kids(keys.published(5960)) == [third.kid]
    assert kids(keys.retired(5960)) == [first.kid, second.kid]


def test_keys_activating_at_the_same_second_are_ordered_by_kid(tmp_path: Path) -> None:
    # Two replicas creating a development key at once: all of them must pick the same one.
    a = write_key(tmp_path, 1000)
    b = write_key(tmp_path, 1000)
    keys = read_keys(tmp_path, RETENTION)
    assert keys.signing(1000).kid == max(a.kid, b.kid)
    assert kids(keys.published(1000)) == sorted([a.kid, b.kid])


def test_with_no_active_key_the_earliest_signs(tmp_path: Path) -> None:
    # The clock stepped back behind the only key's activation: keep signing, do not fail logins.
    only = write_key(tmp_path, 2000)
    assert read_keys(tmp_path, RETENTION).signing(1999).kid == only.kid


def test_key_files_are_private_named_by_activation_and_kid_and_complete(tmp_path: Path) -> None:
    folder = tmp_path / "jwt"
    key = write_key(folder, 1234)
    assert key.path == folder / f"1234-{key.kid}.pem"
    assert key.kid == thumbprint(key.private_key.public_key())
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert os.listdir(folder) == [key.path.name]  # no temporary file left behind
    (reread,) = read_keys(folder, RETENTION).keys
    assert (reread.kid, reread.activates_at) == (key.kid, 1234)


def test_writing_the_same_key_again_changes_nothing(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    first = write_key(tmp_path, 0, private)
    second = write_key(tmp_path, 0, private)
    assert first.path == second.path
    assert len(read_keys(tmp_path, RETENTION).keys) == 1


def test_a_missing_folder_holds_no_key_and_other_files_are_ignored(tmp_path: Path) -> None:
    assert read_keys(tmp_path / "absent", RETENTION).keys == ()
    (tmp_path / "README").write_text("keys live here")
    (tmp_path / ".0-being-written.pem").write_text("partial")
    assert read_keys(tmp_path, RETENTION).keys == ()
    with pytest.raises(SigningKeyError, match="holds no key"):
        Keyring(tmp_path, retention_seconds=RETENTION)


def pem(key: Ed25519PrivateKey | RSAPrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("jwt-ed25519.pem", None, "not named"),
        (key_file_name(10, "A" * 43), b"not a key", "cannot read"),
        (key_file_name(10, "A" * 43), None, "not the one named"),
        (
            key_file_name(10, "A" * 43),
            pem(generate_private_key(public_exponent=65537, key_size=2048)),
            "Ed25519",
        ),
    ],
)
def test_an_unusable_key_file_stops_the_start_naming_it(
    tmp_path: Path, name: str, content: bytes | None, problem: str
) -> None:
    write_key(tmp_path, 0)
    path = tmp_path / name
    path.write_bytes(pem(Ed25519PrivateKey.generate()) if content is None else content)
    with pytest.raises(SigningKeyError, match=problem) as caught:
        Keyring(tmp_path, retention_seconds=RETENTION)
    assert str(path) in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)


def test_a_key_file_others_can_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = write_key(tmp_path, 0)
    key.path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="auth_svc.keyring"):
        keyring = Keyring(tmp_path, retention_seconds=RETENTION)
    assert keyring.signing_key(1)[0] == key.kid
    assert "readable by other users" in caplog.text


def test_reload_picks_up_new_and_deleted_keys(tmp_path: Path) -> None:
    clock = HandClock()
    old = write_key(tmp_path, 0)
    keyring = Keyring(tmp_path, retention_seconds=RETENTION, clock=clock)
    assert keyring.reload() is False  # nothing changed

    new = write_key(tmp_path, int(clock.now))
    assert keyring.reload() is True
    assert keyring.signing_key(clock.now)[0] == new.kid
    assert keyring.reload() is False

    old.path.unlink()
    assert keyring.reload() is True
    assert kids(list(keyring.keys.keys)) == [new.kid]


def test_an_unchanged_folder_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_key(tmp_path, 0)
    keyring = Keyring(tmp_path, retention_seconds=RETENTION)
    reads: list[Path] = []
    real_read = Path.read_bytes

    def counting_read(path: Path) -> bytes:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    for _ in range(5):
        keyring.reload()
    assert reads == []


def test_a_bad_file_appearing_keeps_the_keys_in_use_until_it_is_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = HandClock()
    good = write_key(tmp_path, 0)
    keyring = Keyring(tmp_path, retention_seconds=RETENTION, clock=clock)
    bad = tmp_path / key_file_name(int(clock.now), "B" * 43)
    bad.write_text("garbage")
    with caplog.at_level(logging.ERROR, logger="auth_svc.keyring"):
        assert keyring.reload() is False
    assert "not reloaded" in caplog.text
    assert keyring.signing_key(clock.now)[0] == good.kid

    bad.unlink()
    new = write_key(tmp_path, int(clock.now))
    assert keyring.reload() is True
    assert keyring.signing_key(clock.now)[0] == new.kid


def test_an_emptied_folder_keeps_the_keys_in_use(tmp_path: Path) -> None:
    key = write_key(tmp_path, 0)
    keyring = Keyring(tmp_path, retention_seconds=RETENTION)
    key.path.unlink()
    assert keyring.reload() is False
    assert keyring.signing_key(1)[0] == key.kid


class WatchedKeyring(Keyring):
    """A keyring that tells the event loop each time a reload changed its keys."""

    def __init__(self, directory: Path, *, clock: Clock) -> None:
        super().__init__(directory, retention_seconds=RETENTION, clock=clock)
        self.loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()
        self.reloads = 0

    def reload(self) -> bool:
        changed = super().reload()
        self.reloads += 1
        if changed:
            # Reloads run in a worker thread; the event belongs to the loop.
            self.loop.call_soon_threadsafe(self.changed.set)
        return changed


async def test_the_background_reload_follows_the_folder_until_stopped(tmp_path: Path) -> None:
    clock = HandClock()
    write_key(tmp_path, 0)
    keyring = WatchedKeyring(tmp_path, clock=clock)
    keyring.start_reloading(0.01)
    try:
        new = write_key(tmp_path, int(clock.now))
        async with asyncio.timeout(5):
            await keyring.changed.wait()
        assert keyring.signing_key(clock.now)[0] == new.kid
    finally:
        await keyring.stop_reloading()
    reloads = keyring.reloads
    await asyncio.sleep(0.05)
    assert keyring.reloads == reloads
    await keyring.stop_reloading()  # stopping twice is harmless
