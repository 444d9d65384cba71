"""A user's own sessions (one per login): list them, end one, end all but the current one.

Ending a session revokes its refresh token at once; its access tokens stay valid until they
expire (AUTH_ACCESS_TOKEN_TTL_SECONDS), as every verifier checks them offline.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from auth_svc.accounts import AccountStore, SessionInfo
from meshkit.access_tokens import Principal
from meshkit.errors import NotFound
from meshkit.reasons import Reason


@dataclass(frozen=True)
class ListedSession:
    """A live session and whether it is the caller's own."""

    session: SessionInfo
    current: bool


def _not_found() -> NotFound:
    """The one answer for a session id that is malformed, unknown, ended or someone else's."""
    return NotFound(message="no such session", reason=Reason.SESSION_NOT_FOUND)


class Sessions:
    """Lists and ends the sessions of the calling account."""

    def __init__(self, store: AccountStore) -> None:
        self._store = store

    async def list(self, principal: Principal) -> list[ListedSession]:
        """Return the caller's live sessions, most recently used first, the current marked."""
        found = await self._store.list_sessions(principal.account_id)
        return [ListedSession(s, current=s.id == principal.session_id) for s in found]

    async def end(self, principal: Principal, session_id: str) -> None:
        """End one of the caller's sessions; NotFound (SESSION_NOT_FOUND) otherwise."""
        try:
            wanted = str(uuid.UUID(session_id.strip()))
        except ValueError:
            raise _not_found() from None
        try:
            await self._store.revoke_sessions(principal.account_id, session_id=wanted)
        except NotFound:
            raise _not_found() from None

    async def end_others(self, principal: Principal) -> int:
        """End every session of the caller but the current one; return how many ended."""
        return await self._store.revoke_sessions(
            principal.account_id, all_except=principal.session_id
        )
