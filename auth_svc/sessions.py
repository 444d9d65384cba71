"""A user's own sessions (one per login): list them, end one, end all but the current one.

Ending a session revokes its refresh token at once; its access tokens stay valid until they
expire (AUTH_ACCESS_TOKEN_TTL_SECONDS), as every verifier checks them offline.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from auth_svc.accounts import AccountStore, Device, SessionInfo
from auth_svc.activity import SecurityLog
from auth_svc.security_store import EventKind, NewEvent
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

    def __init__(self, store: AccountStore, log: SecurityLog) -> None:
        self._store = store
        self._log = log

    async def list(self, principal: Principal) -> list[ListedSession]:
        """Return the caller's live sessions, most recently used first, the current marked."""
        found = await self._store.list_sessions(principal.account_id)
        return [ListedSession(s, current=s.id == principal.session_id) for s in found]

    async def end(
        self, principal: Principal, session_id: str, device: Device | None = None
    ) -> None:
        """End one of the caller's sessions; NotFound (SESSION_NOT_FOUND) otherwise."""
        try:
            wanted = str(uuid.UUID(session_id.strip()))
        except ValueError:
            raise _not_found() from None
        try:
            await self._store.revoke_sessions(principal.account_id, session_id=wanted)
        except NotFound:
            raise _not_found() from None
        await self._ended(principal, device, f"session {wanted} ended")

    async def end_others(self, principal: Principal, device: Device | None = None) -> int:
        """End every session of the caller but the current one; return how many ended."""
        ended = await self._store.revoke_sessions(
            principal.account_id, all_except=principal.session_id
        )
        await self._ended(principal, device, f"{ended} other sessions ended")
        return ended

    async def _ended(self, principal: Principal, device: Device | None, detail: str) -> None:
        """Log that the caller ended sessions."""
        await self._log.record(
            NewEvent(
                principal.account_id,
                EventKind.SESSIONS_ENDED,
                device or Device(),
                principal.session_id,
                detail=detail,
            )
        )
