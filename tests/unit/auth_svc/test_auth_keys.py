"""auth_svc's keys as configured: the first key (generated in development, refused missing in
production, adopted from the former single key file) and the rotation command."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_svc import keys
from auth_svc.keyring import Keyring, pem_of, read_keys, write_key
from auth_svc.keys import SigningKeyError, ensure_first_key, open_keyring, rotate
from auth_svc.settings import AuthSettings
from auth_svc.tokens import AccessTokenSigner, thumbprint
from tests.helpers import clear_environment

NOW = 1_700_000_000.0
DELAY = 300
RETENTION = 960.0


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the machine's AUTH_* and MESHGRAM_ENV variables out of these tests."""
    clear_environment(monkeypatch, "AUTH_")


def legacy_key(path: Path) -> Ed25519PrivateKey:
    """A key in the former single-file place, as an older auth_svc left it."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(pem_of(key))
    path.chmod(0o600)
    return key


def test_development_creates_a_first_key_that_signs_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "keys" / "jwt"
    created = ensure_first_key(
        folder, legacy_file=tmp_path / "absent.pem", create_if_missing=True, clock=lambda: NOW
    )
    assert created is not None
    assert created.activates_at == int(NOW)
    assert stat.S_IMODE(created.path.stat().st_mode) == 0o600
    # Started again, the key is kept.
    assert ensure_first_key(folder, legacy_file=None, create_if_missing=True) is None
    assert [k.kid for k in read_keys(folder, RETENTION).keys] == [created.kid]


def test_production_refuses_to_start_without_a_key_and_says_how_to_make_one(
    tmp_path: Path,
) -> None:
    with pytest.raises(SigningKeyError) as caught:
        ensure_first_key(tmp_path / "jwt", legacy_file=None, create_if_missing=False)
    assert "holds no key" in str(caught.value)
    assert "make rotate-keys" in str(caught.value)
    assert not (tmp_path / "jwt").exists()


def test_the_former_single_key_file_is_adopted_so_its_tokens_stay_valid(tmp_path: Path) -> None:
    legacy = tmp_path / "jwt-ed25519.pem"
    key = legacy_key(legacy)
    adopted = ensure_first_key(tmp_path / "jwt", legacy_file=legacy, create_if_missing=False)
    assert adopted is not None
    assert adopted.kid == thumbprint(key.public_key())
    assert adopted.activates_at == 0  # it has been signing all along
    assert stat.S_IMODE(adopted.path.stat().st_mode) == 0o600
    # Once the folder holds keys the file is ignored (it can be removed).
    legacy_key(legacy)
    assert ensure_first_key(tmp_path / "jwt", legacy_file=legacy, create_if_missing=True) is None


def test_open_keyring_follows_the_settings(tmp_path: Path) -> None:
    settings = AuthSettings(
        data_access_token=secrets.token_urlsafe(32),
        password_pepper=secrets.token_urlsafe(32),
        jwt_keys_dir=tmp_path / "jwt",
        jwt_private_key_file=tmp_path / "absent.pem",
        access_token_ttl_seconds=600,
        jwt_key_retention_leeway_seconds=30,
    )
    keyring = open_keyring(settings, clock=lambda: NOW)
    assert keyring.keys.retention_seconds == 630
    assert len(keyring.keys.keys) == 1
    with pytest.raises(SigningKeyError, match="holds no key"):
        open_keyring(
            settings.model_copy(
                update={"environment": "production", "jwt_keys_dir": tmp_path / "other"}
            )
        )


def test_the_first_rotation_of_an_empty_folder_makes_a_key_that_signs_at_once(
    tmp_path: Path,
) -> None:
    rotation = rotate(
        tmp_path,
        legacy_file=None,
        publish_delay_seconds=DELAY,
        retention_seconds=RETENTION,
        clock=lambda: NOW,
    )
    assert rotation.adopted is None
    assert rotation.created.activates_at == int(NOW)
    assert rotation.keys.signing(NOW) == rotation.created


def test_rotation_publishes_the_new_key_ahead_and_deletes_retired_ones(tmp_path: Path) -> None:
    retired = write_key(tmp_path, int(NOW) - 10_000)
    current = write_key(tmp_path, int(NOW) - 5000)
    rotation = rotate(
        tmp_path,
        legacy_file=None,
        publish_delay_seconds=DELAY,
        retention_seconds=RETENTION,
        clock=lambda: NOW,
    )
    new = rotation.created
    assert new.activates_at == int(NOW) + DELAY
    assert [k.kid for k in rotation.deleted] == [retired.kid]
    assert not retired.path.exists()
    assert [k.kid for k in rotation.keys.keys] == [current.kid, new.kid]
    # The current key keeps signing until the new one activates; both are published meanwhile.
    assert rotation.keys.signing(NOW).kid == current.kid
    assert rotation.keys.signing(new.activates_at).kid == new.kid
    assert [k.kid for k in rotation.keys.published(NOW)] == [current.kid, new.kid]


def test_rotation_keeps_a_replaced_key_whose_tokens_may_still_be_valid(tmp_path: Path) -> None:
    retiring = write_key(tmp_path, int(NOW) - 5000)
    current = write_key(tmp_path, int(NOW) - 100)
    rotation = rotate(
        tmp_path,
        legacy_file=None,
        publish_delay_seconds=DELAY,
        retention_seconds=RETENTION,
        clock=lambda: NOW,
    )
    assert rotation.deleted == []
    assert retiring.path.exists()
    assert [k.kid for k in rotation.keys.published(NOW)] == [
        retiring.kid,
        current.kid,
        rotation.created.kid,
    ]


def test_rotation_adopts_the_former_single_key_first(tmp_path: Path) -> None:
    legacy = tmp_path / "jwt-ed25519.pem"
    key = legacy_key(legacy)
    rotation = rotate(
        tmp_path / "jwt",
        legacy_file=legacy,
        publish_delay_seconds=DELAY,
        retention_seconds=RETENTION,
        clock=lambda: NOW,
    )
    assert rotation.adopted is not None
    assert rotation.adopted.kid == thumbprint(key.public_key())
    # The adopted key keeps signing: the tokens it signed and signs stay valid.
    assert rotation.keys.signing(NOW).kid == rotation.adopted.kid
    assert rotation.created.activates_at == int(NOW) + DELAY


def test_the_signer_switches_keys_at_activation_with_a_rotated_folder(tmp_path: Path) -> None:
    clock_now = [NOW]
    write_key(tmp_path, int(NOW) - 5000)
    rotation = rotate(
        tmp_path,
        legacy_file=None,
        publish_delay_seconds=DELAY,
        retention_seconds=RETENTION,
        clock=lambda: clock_now[0],
    )
    keyring = Keyring(tmp_path, retention_seconds=RETENTION, clock=lambda: clock_now[0])
    signer = AccessTokenSigner(keyring, ttl_seconds=900, clock=lambda: clock_now[0])
    assert signer.kid != rotation.created.kid
    clock_now[0] = rotation.created.activates_at
    assert signer.kid == rotation.created.kid


def run_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], folder: Path, *args: str
) -> str:
    """Run `python -m auth_svc.keys ARGS` on folder, with none of the service's secrets set."""
    monkeypatch.setenv("AUTH_JWT_KEYS_DIR", str(folder))
    monkeypatch.setenv("AUTH_JWT_PRIVATE_KEY_FILE", str(folder.parent / "absent.pem"))
    monkeypatch.setenv("AUTH_JWT_KEY_PUBLISH_DELAY_SECONDS", "120")
    keys.main(list(args))
    return capsys.readouterr().out


def test_the_command_says_what_it_did_and_never_prints_key_material(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "jwt"
    first = run_command(monkeypatch, capsys, folder, "rotate")
    (only,) = read_keys(folder, RETENTION).keys
    assert f"created {only.kid}, the first key: it signs from now" in first

    second = run_command(monkeypatch, capsys, folder, "rotate")
    new = max(read_keys(folder, RETENTION).keys, key=lambda k: k.activates_at)
    assert f"created {new.kid}: published now, signs from" in second
    assert "(in 120 s)" in second
    assert f"{only.kid}  signing since" in second
    assert f"{new.kid}  published ahead" in second
    assert "shorter than the verifiers' JWKS refresh interval" not in second

    listing = run_command(monkeypatch, capsys, folder, "list")
    assert only.kid in listing
    assert new.kid in listing
    for output in (first, second, listing):
        assert "PRIVATE KEY" not in output
        for key in read_keys(folder, RETENTION).keys:
            assert key.path.read_text().splitlines()[1] not in output


def test_a_publish_delay_shorter_than_the_verifiers_refresh_is_pointed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_key(tmp_path, 0)
    monkeypatch.setenv("AUTH_JWT_KEYS_RELOAD_SECONDS", "1")
    monkeypatch.setenv("AUTH_JWT_KEY_PUBLISH_DELAY_SECONDS", "10")
    monkeypatch.setenv("AUTH_JWT_KEYS_DIR", str(tmp_path))
    keys.main(["rotate"])
    assert "shorter than the verifiers' JWKS refresh interval (60 s)" in capsys.readouterr().out


def test_the_command_reports_an_unusable_folder_readably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jwt-ed25519.pem").write_text("not a key")
    monkeypatch.setenv("AUTH_JWT_KEYS_DIR", str(tmp_path))
    with pytest.raises(SystemExit, match=r"auth_svc.keys: .*not named"):
        keys.main(["list"])


def test_a_reload_interval_not_shorter_than_the_publish_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="AUTH_JWT_KEYS_RELOAD_SECONDS must be shorter"):
        AuthSettings(
            data_access_token=secrets.token_urlsafe(32),
            password_pepper=secrets.token_urlsafe(32),
            jwt_keys_reload_seconds=10,
            jwt_key_publish_delay_seconds=10,
        )
