"""Database URLs: what users put in DATABASE_URL becomes something asyncpg can open."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from data_access.admin import check_database_name
from data_access.embedded import to_asyncpg_url, with_database


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        ),
        (
            "postgres://app:pw@db.internal/meshgram",
            "postgresql+asyncpg://app:pw@db.internal/meshgram",
        ),
        (
            "postgresql+asyncpg://app:pw@db.internal/meshgram",
            "postgresql+asyncpg://app:pw@db.internal/meshgram",
        ),
    ],
)
def test_postgres_urls_become_asyncpg_urls(given: str, expected: str) -> None:
    assert to_asyncpg_url(given) == expected


def test_unix_socket_url_from_pgserver_keeps_its_socket_folder() -> None:
    url = make_url(to_asyncpg_url("postgresql://postgres:@/meshgram?host=/tmp/pg data/x"))

    assert url.drivername == "postgresql+asyncpg"
    assert url.database == "meshgram"
    assert url.query["host"] == "/tmp/pg data/x"


def test_password_with_reserved_characters_survives() -> None:
    url = make_url(to_asyncpg_url("postgresql://app:p%40ss%2Fw%3Ad@db:6543/meshgram"))

    assert url.password == "p@ss/w:d"
    assert (url.host, url.port) == ("db", 6543)


def test_libpq_sslmode_becomes_asyncpg_ssl() -> None:
    url = make_url(
        to_asyncpg_url("postgresql://app@db/meshgram?sslmode=require&application_name=x")
    )

    assert "sslmode" not in url.query
    assert url.query["ssl"] == "require"
    assert url.query["application_name"] == "x"


@pytest.mark.parametrize(
    "given",
    [
        "mysql://root@localhost/db",
        "sqlite:///file.db",
        "not a url",
        "",
        "postgresql+psycopg://x@y/z",
    ],
)
def test_other_databases_and_garbage_are_refused(given: str) -> None:
    with pytest.raises(ValueError, match=r"URL|scheme"):
        to_asyncpg_url(given)


def test_with_database_points_at_another_database_on_the_same_server() -> None:
    url = make_url(
        with_database("postgres://app:pw@db:5433/postgres?sslmode=disable", "meshgram_x")
    )

    assert (url.drivername, url.host, url.port, url.database) == (
        "postgresql+asyncpg",
        "db",
        5433,
        "meshgram_x",
    )
    assert url.password == "pw"
    assert url.query["ssl"] == "disable"


@pytest.mark.parametrize("name", ["meshgram", "meshgram_test_0a1b", "_x", "A" * 63])
def test_plain_identifiers_are_valid_database_names(name: str) -> None:
    assert check_database_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "1abc", 'x"; DROP DATABASE postgres; --', "with space", "a-b", "A" * 64]
)
def test_database_names_that_would_need_quoting_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        check_database_name(name)
