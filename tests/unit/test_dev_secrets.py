"""The secrets `make run` hands out: generated once into var/secrets/ (0700, files 0600), reused
on every later run, overridden by the environment, never generated in production."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from meshkit.caller import derive_caller_token
from tools.dev_secrets import stored_secret
from tools.mesh import (
    MEDIA_URL_KEY_FILE,
    MESH_SECRET_FILE,
    PASSWORD_PEPPER_FILE,
    PREFIX,
    SERVICES,
    Mesh,
    MeshSecrets,
    mesh_secrets,
)

STRONG = "an-operator-chosen-secret-of-more-than-32-characters"


def mode(path: Path) -> int:
    """Permission bits of path."""
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_created_private_and_reused(tmp_path: Path) -> None:
    first = mesh_secrets({}, tmp_path)

    folder = tmp_path / "secrets"
    assert mode(folder) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MEDIA_URL_KEY_FILE, MESH_SECRET_FILE, PASSWORD_PEPPER_FILE]
    )
    assert all(mode(p) == 0o600 for p in folder.iterdir())
    assert first.mesh_secret is not None
    assert first.password_pepper is not None
    assert len(first.mesh_secret) >= 43
    assert len(first.password_pepper) >= 43
    assert first.mesh_secret != first.password_pepper
    assert first.media_url_keys is not None
    assert first.media_url_keys.startswith("dev:")
    assert len(first.media_url_keys) >= 43 + len("dev:")

    assert mesh_secrets({}, tmp_path) == first


def test_the_environment_wins_over_the_files(tmp_path: Path) -> None:
    stored = mesh_secrets({}, tmp_path)
    env = {
        "DATA_ACCESS_MESH_SECRET": STRONG,
        "AUTH_PASSWORD_PEPPER": STRONG + "-pepper",
        "STORAGE_MEDIA_URL_KEYS": "k1:" + STRONG,
    }

    assert mesh_secrets(env, tmp_path) == MeshSecrets(STRONG, STRONG + "-pepper", "k1:" + STRONG)
    # The stored ones are still there for the next run without the variables.
    assert mesh_secrets({}, tmp_path) == stored


def test_production_generates_nothing(tmp_path: Path) -> None:
    assert mesh_secrets({"MESHGRAM_ENV": "production"}, tmp_path) == MeshSecrets(None, None, None)
    assert not (tmp_path / "secrets").exists()


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    first = stored_secret(folder, "mesh-secret")
    folder.chmod(0o755)
    (folder / "mesh-secret").chmod(0o644)

    assert stored_secret(folder, "mesh-secret") == first
    assert mode(folder) == 0o700
    assert mode(folder / "mesh-secret") == 0o600


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    with ThreadPoolExecutor(max_workers=8) as pool:
        values = set(pool.map(lambda _: stored_secret(folder, "pepper"), range(16)))
    assert len(values) == 1
    assert [p.name for p in folder.iterdir()] == ["pepper"]  # no temporary file left behind


def test_a_weak_stored_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "pepper").write_text("tiny-value\n")

    with pytest.raises(ValueError, match="weak secret") as caught:
        stored_secret(folder, "pepper")
    assert str(folder / "pepper") in str(caught.value)
    assert "tiny-value" not in str(caught.value)


def test_each_service_gets_only_its_own_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATA_ACCESS_MESH_SECRET", "AUTH_PASSWORD_PEPPER", "MESHGRAM_ENV"):
        monkeypatch.delenv(name, raising=False)
    # Plaintext mode: the caller tokens are the services' credentials towards data_access.
    mesh = Mesh(database_url="postgresql://db.invalid/meshgram", state_dir=tmp_path, mtls=False)
    secrets = mesh_secrets({}, tmp_path)
    assert secrets.mesh_secret is not None

    envs = {service: mesh.service_env(service) for service in SERVICES}

    assert envs["data_access"]["DATA_ACCESS_MESH_SECRET"] == secrets.mesh_secret
    assert envs["auth_svc"]["AUTH_PASSWORD_PEPPER"] == secrets.password_pepper
    for service, prefix in (("auth_svc", "AUTH_"), ("user_svc", "USER_")):
        token = derive_caller_token(secrets.mesh_secret, service)
        assert envs[service][f"{prefix}DATA_ACCESS_TOKEN"] == token
    for service, env in envs.items():
        values = set(env.values())
        assert (secrets.mesh_secret in values) == (service == "data_access"), service
        assert (secrets.password_pepper in values) == (service == "auth_svc"), service


def test_with_mutual_tls_each_service_gets_its_own_certificate_and_no_mesh_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATA_ACCESS_MESH_SECRET", "MESHGRAM_ENV"):
        monkeypatch.delenv(name, raising=False)
    mesh = Mesh(database_url="postgresql://db.invalid/meshgram", state_dir=tmp_path, mtls=True)
    secret = mesh_secrets({}, tmp_path).mesh_secret
    assert secret is not None

    envs = {service: mesh.service_env(service) for service, prefix in PREFIX.items()}

    keys = set()
    for service, env in envs.items():
        prefix = PREFIX[service]
        assert Path(env[f"{prefix}TLS_CERT"]).name == f"{service}.pem"
        keys.add(env[f"{prefix}TLS_KEY"])
        assert secret not in env.values(), service
        assert f"{prefix}DATA_ACCESS_TOKEN" not in env
        # No service is handed another's key.
        assert not any(k.endswith("TLS_KEY") and not k.startswith(prefix) for k in env), service
    assert len(keys) == len(envs)
