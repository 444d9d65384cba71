"""An account's security activity: what the flows append to its log, and the owner's paged view.

Entries that describe a change (MFA on or off, new recovery codes, a re-authentication) are
written by data_access in the change's own transaction. The others (logins, failed logins,
password changes, sessions ended) are appended right after the action: a log that cannot be
written is reported in our own logs and never fails the user's action. Failed logins are
appended off the reply's path, so that the reply time does not tell whether the account exists.
"""

from __future__ import annotations

import asyncio
import logging

from auth_svc.accounts import SealedMail
from auth_svc.security_store import EventPage, NewEvent, SecurityStore
from meshkit.access_tokens import Principal
from meshkit.errors import DomainError
from meshkit.page_tokens import decode_page_token, encode_page_token, position_part
from meshkit.page_tokens import page_size as page_size_of

log = logging.getLogger("auth_svc.activity")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Appends waiting off the reply's path; beyond this many (data_access slow or down) new ones
# are dropped with a warning rather than piling up in memory.
MAX_PENDING = 256
_TOKEN_SCOPE = "e1"


def page_token(before_id: int) -> str:
    """The opaque next_page_token that continues a listing below before_id."""
    return encode_page_token(_TOKEN_SCOPE, before_id)


def parse_page_token(token: str) -> int:
    """The event id a page token continues below (0 for an empty token); InvalidArgument
    (field page_token) for a token this service did not make."""
    if not token:
        return 0
    return position_part(decode_page_token(token, _TOKEN_SCOPE), 0)


class SecurityLog:
    """Appends to accounts' security logs and reads a caller's own."""

    def __init__(self, store: SecurityStore) -> None:
        self._store = store
        self._pending: set[asyncio.Task[bool]] = set()

    async def record(
        self, event: NewEvent, mail: SealedMail | None = None, *, only_new_device: bool = False
    ) -> bool:
        """Append an event (with its mail; for a login only from a new device) and return
        whether the mail was queued; a failure is logged, never raised."""
        try:
            return await self._store.record_event(event, mail, only_new_device=only_new_device)
        except DomainError as exc:
            log.warning(
                "security event not recorded",
                extra={"kind": event.kind.value, "account_id": event.account_id, "error": str(exc)},
            )
            return False

    def record_soon(self, event: NewEvent) -> None:
        """Append an event without waiting for it (bounded; see MAX_PENDING)."""
        if len(self._pending) >= MAX_PENDING:
            log.warning(
                "security event dropped: too many appends waiting",
                extra={"kind": event.kind.value, "account_id": event.account_id},
            )
            return
        task = asyncio.get_running_loop().create_task(self.record(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the appends under way (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def page(self, principal: Principal, page_size: int, token: str) -> tuple[EventPage, str]:
        """A page of the caller's log, newest first, and the token of the next page ("" on the
        last); InvalidArgument for a negative page size or a foreign token."""
        size = page_size_of(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        before = parse_page_token(token)
        page = await self._store.list_events(principal.account_id, size, before)
        following = page_token(page.events[-1].id) if page.more and page.events else ""
        return page, following
