"""Deleting one's own account, as user_svc offers it: behind a recent login, then a grace period
in which a login restores the account (data_access's lifecycle does the rest)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from meshkit.access_tokens import Principal, require_recent_authentication


class LifecycleStore(Protocol):
    """Where accounts are deactivated (data_access's AccountLifecycleService)."""

    async def deactivate(self, account_id: str, *, grace_seconds: float) -> datetime:
        """Deactivate an account; return when it will be deleted for good."""
        ...


class AccountDeletion:
    """The owner's request to delete their account."""

    def __init__(
        self, store: LifecycleStore, *, grace_seconds: float, reauthentication_window: float
    ) -> None:
        self._store = store
        self._grace = grace_seconds
        self._window = reauthentication_window

    async def delete_my_account(self, principal: Principal) -> datetime:
        """Deactivate the caller's account now and return when it will be deleted for good;
        FailedPrecondition (REAUTHENTICATION_REQUIRED) unless the caller's login is recent."""
        require_recent_authentication(principal, self._window)
        return await self._store.deactivate(principal.account_id, grace_seconds=self._grace)
