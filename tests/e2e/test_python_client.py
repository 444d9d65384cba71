"""The Python client (clients/python) as its users get it: installed into a fresh virtual
environment, its README examples run against the test mesh's edge; and token renewal through
the edge with the client the other e2e tests use."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import grpc
import meshgram_client
import pytest
from meshgram_client import aio

from meshgram.auth.v1 import auth_pb2
from meshgram.user.v1 import user_pb2
from tests.e2e.support import NewUser, expired_copy, new_user, sign_up
from tools.mesh import Mesh

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
UV = ROOT / ".tools" / "bin" / "uv"
# What the README's examples connect with (`make run`'s edge, the root README's user), swapped
# for the test mesh's edge and a fresh user before they run.
README_EDGE = "127.0.0.1:8080"
README_EMAIL = "ada@example.com"
README_PASSWORD = "correct horse battery staple"


def readme_examples() -> list[str]:
    """The ```python blocks of the client's README, in order."""
    readme = (CLIENT / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```$", readme, flags=re.DOTALL | re.MULTILINE)


EXAMPLES = readme_examples()


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, failing the test with its output if it fails."""
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh virtual environment with clients/python installed in it."""
    work = tmp_path_factory.mktemp("python-client")
    venv = work / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, venv, cwd=work)
    python = venv / "bin" / "python"
    # Built afresh from this checkout whatever uv has cached; its build requirements and the
    # runtime dependencies still come from uv's cache.
    run(
        UV, "pip", "install", "--quiet", "--python", python,
        "--reinstall-package", "meshgram-client", CLIENT,
        cwd=work,
    )  # fmt: skip
    return python


def register(mesh: Mesh) -> NewUser:
    """A fresh user, registered with the synchronous client."""
    user = new_user()
    with meshgram_client.Session(mesh.edge_address) as session:
        session.auth.Register(
            auth_pb2.RegisterRequest(
                email=user.email, username=user.username, password=user.password
            ),
            timeout=10,
        )
    return user


def test_the_first_readme_example_is_three_lines() -> None:
    assert len(EXAMPLES) >= 2, "the README shows the three-line and the asyncio examples"
    # Three lines of code; `ruff format` separates the import with a blank line.
    assert len([line for line in EXAMPLES[0].splitlines() if line.strip()]) == 3


def test_the_distribution_installs_the_public_stubs_only(
    client_python: Path, tmp_path: Path
) -> None:
    # -I and a scratch folder: nothing of this checkout can be imported by accident.
    probe = (
        "import importlib.util, meshgram, meshgram_client\n"
        "print(meshgram.__file__, meshgram_client.__file__)\n"
        "print(importlib.util.find_spec('meshgram.dataaccess'))\n"
    )
    done = run(client_python, "-I", "-c", probe, cwd=tmp_path)
    locations, internal = done.stdout.splitlines()
    venv = client_python.parent.parent
    assert all(Path(path).is_relative_to(venv) for path in locations.split())
    assert internal == "None"
    for typed in ("meshgram/py.typed", "meshgram_client/py.typed", "meshgram/user/v1/user_pb2.pyi"):
        assert list(venv.glob(f"lib/python*/site-packages/{typed}")), typed


@pytest.mark.parametrize(
    "example", [pytest.param(code, id=f"example-{n}") for n, code in enumerate(EXAMPLES, 1)]
)
def test_readme_example_runs_against_the_edge(
    mesh: Mesh, client_python: Path, tmp_path: Path, example: str
) -> None:
    user = register(mesh)
    for placeholder in (README_EDGE, README_EMAIL, README_PASSWORD):
        assert placeholder in example
    code = (
        example.replace(README_EDGE, mesh.edge_address)
        .replace(README_EMAIL, user.email)
        .replace(README_PASSWORD, user.password)
    )
    done = run(client_python, "-I", "-c", code, cwd=tmp_path)
    assert f'username: "{user.username}"' in done.stdout


async def test_a_token_due_for_renewal_is_renewed_once_before_concurrent_calls(
    client: aio.Session,
) -> None:
    user = await sign_up(client)
    before = client.tokens
    assert before is not None
    client.tokens = dataclasses.replace(before, refresh_at=0.0)
    replies = await asyncio.gather(
        *(client.users.GetMyProfile(user_pb2.GetMyProfileRequest()) for _ in range(10))
    )
    # A second renewal would have presented the consumed refresh token, and the server would
    # have ended the login: every call succeeding means exactly one renewal.
    assert {reply.profile.username for reply in replies} == {user.username}
    after = client.tokens
    assert after is not None
    assert after.access_token != before.access_token
    assert after.refresh_token != before.refresh_token
    assert after.refresh_at > 0


async def test_an_expired_token_is_renewed_and_the_call_sent_again(
    client: aio.Session, signing_key_file: Path
) -> None:
    user = await sign_up(client)
    before = client.tokens
    assert before is not None
    # The session believes this token fresh; only the edge's TOKEN_EXPIRED says otherwise.
    client.tokens = dataclasses.replace(
        before, access_token=expired_copy(before.access_token, signing_key_file)
    )
    me = await client.users.GetMyProfile(user_pb2.GetMyProfileRequest())
    assert me.profile.username == user.username
    after = client.tokens
    assert after is not None
    assert after.refresh_token != before.refresh_token


async def test_after_logout_a_renewal_fails_and_the_call_with_it(client: aio.Session) -> None:
    await sign_up(client)
    tokens = client.tokens
    assert tokens is not None
    await client.logout()
    assert client.tokens is None
    client.tokens = dataclasses.replace(tokens, refresh_at=0.0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.users.GetMyProfile(user_pb2.GetMyProfileRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert client.tokens.refresh_token == tokens.refresh_token
