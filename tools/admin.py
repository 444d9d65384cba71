"""`make admin EMAIL=ada@example.com`: make an account an admin (or, with --revoke, a user again).

The first admin cannot be made through the API, since only admins may act on roles; this command
is the operator's way in. It works on the database `make run` uses (tools/run_database.py),
migrating it first, and writes the change to the audit log with no actor. The account must exist
(sign up first); the new role counts from the account's next admin call, whatever access token
it holds.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from dotenv import load_dotenv

from data_access.database import open_database
from data_access.migrate import upgrade_async
from data_access.moderation import set_role
from meshkit.errors import NotFound
from tools.mesh import ROOT
from tools.run_database import make_run_database


async def _set_role(url: str, email: str, role: str) -> str:
    """Migrate the database at url and give the account with email the role."""
    await upgrade_async(url)
    database = open_database(url, pool_size=1, max_overflow=0, application_name="tools.admin")
    try:
        return await set_role(database, email, role)
    finally:
        await database.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    """Grant or revoke the admin role and say what was done."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--email", required=True, help="email address of the account")
    parser.add_argument("--revoke", action="store_true", help="make the account a user again")
    args = parser.parse_args(argv)
    load_dotenv(ROOT / ".env", override=False)
    role = "user" if args.revoke else "admin"
    with make_run_database() as url:
        try:
            username = asyncio.run(_set_role(url, args.email, role))
        except NotFound:
            raise SystemExit(f"tools.admin: no account has the email {args.email!r}") from None
    now = "an admin" if role == "admin" else "a user"
    print(f"tools.admin: {username} ({args.email.strip().lower()}) is now {now}")


if __name__ == "__main__":
    main()
