"""Fixtures of auth_svc's unit tests: one fake clock and the in-memory stores and mailer on it."""

from __future__ import annotations

import pytest

from tests.unit.auth_svc.memory_stores import (
    FakeClock,
    MemoryAccountStore,
    MemoryMailer,
    MemorySecurityStore,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryAccountStore:
    return MemoryAccountStore(clock)


@pytest.fixture
def security(store: MemoryAccountStore) -> MemorySecurityStore:
    return MemorySecurityStore(store)


@pytest.fixture
def mailer() -> MemoryMailer:
    return MemoryMailer()
