"""A database that is restarting, shutting down or gone answers UNAVAILABLE (retry), whichever
way the driver's error reaches data_access; any other database error stays an error."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from data_access.database import _translate_outages
from meshkit.errors import Unavailable


def wrapped(driver_error: Exception) -> DBAPIError:
    """driver_error as SQLAlchemy's asyncpg dialect raises it: a DBAPIError whose original
    error is the dialect's own, caused by asyncpg's."""
    dialect_error = Exception(str(driver_error))
    dialect_error.__cause__ = driver_error
    return DBAPIError("SELECT 1", None, dialect_error)


@pytest.mark.parametrize(
    "driver_error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 12"),
    ],
    ids=["starting-up", "shutting-down", "admin-shutdown", "closed-mid-operation", "lost-state"],
)
async def test_a_server_going_or_coming_is_unavailable(driver_error: Exception) -> None:
    for raised in (wrapped(driver_error), driver_error):
        with pytest.raises(Unavailable):
            async with _translate_outages():
                raise raised


async def test_other_database_errors_are_not_called_outages() -> None:
    error = wrapped(asyncpg.exceptions.UndefinedColumnError("column x does not exist"))
    with pytest.raises(DBAPIError):
        async with _translate_outages():
            raise error
