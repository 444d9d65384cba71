"""`make seed`: fill the database `make run` uses with many users, to try profile pages, follows
and search at a realistic size.

`python -m tools.seed --users 100000` migrates the database, then adds accounts seed_00000,
seed_00001, ... (email seed_00000@example.com, ...; email verified) with profiles (generated
display names, some bios, one in twenty private) and follows among them (0 to 8 per account,
skewed towards a few popular accounts; follows of private accounts are pending requests), with
exact follower and following counts. Every seeded account has the password SEEDED_PASSWORD.

The database is DATABASE_URL when set (.env included, the shell's variables winning), else the
embedded PostgreSQL in DATA_ACCESS_PG_DATA_DIR (var/pgdata): the server `make run` runs on it
when it is up, else one started for the seeding and stopped afterwards.

Rows go in with a few large statements (unnest over arrays) rather than through data_access's
API one account at a time: 100,000 accounts take about 20 seconds instead of many minutes.
Running it again adds nothing that exists (ON CONFLICT DO NOTHING on the seeded usernames and
follow pairs); a larger --users adds the missing accounts and their follows. The seeded rows go
through the same triggers as any write, so a running mesh's profile caches hear of every change.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache

from dotenv import load_dotenv

# Seeding writes straight to PostgreSQL, as migrations do: data_access's API creates one account
# per call, with a bcrypt hash each, which takes minutes for 100,000.
from sqlalchemy import text  # noqa: TID251
from sqlalchemy.engine import make_url  # noqa: TID251
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine  # noqa: TID251
from sqlalchemy.pool import NullPool  # noqa: TID251

from auth_svc.passwords import PasswordHasher
from auth_svc.settings import AuthSettings
from data_access.embedded import to_asyncpg_url
from data_access.migrate import upgrade_async
from tools.mesh import ROOT, mesh_secrets
from tools.run_database import make_run_database

SEEDED_PREFIX = "seed_"
EMAIL_DOMAIN = "example.com"
SEEDED_PASSWORD = "seeded lantern quartz maple"
"""The password of every seeded account (log in as seed_00042@example.com with it)."""
DEFAULT_USERS = 100_000
ACCOUNT_BATCH = 10_000
FOLLOW_BATCH = 50_000
MAX_FOLLOWS = 8
PRIVATE_EVERY = 20
"""One seeded account in this many is private."""
# A follow target is FOLLOW_UNIVERSE * u ** POPULARITY_SKEW (u uniform in [0, 1)), drawn again
# while it is not a seeded account: the first accounts become the popular ones (seed_00000 gets
# about 2 % of all follows of 100,000 accounts). The draws do not depend on how many accounts are
# seeded, so seeding more later keeps almost every follow seeded before.
FOLLOW_UNIVERSE = 1_000_000
POPULARITY_SKEW = 3.0
FOLLOW_DRAWS = 64


def seeded_username(index: int) -> str:
    """The username of the seeded account number index."""
    return f"{SEEDED_PREFIX}{index:05d}"


def seeded_usernames(count: int) -> list[str]:
    """The usernames of the first count seeded accounts."""
    return [seeded_username(index) for index in range(count)]


def seeded_email(index: int) -> str:
    """The email address of the seeded account number index."""
    return f"{seeded_username(index)}@{EMAIL_DOMAIN}"


def is_private(index: int) -> bool:
    """Whether the seeded account number index is private."""
    return index % PRIVATE_EVERY == PRIVATE_EVERY // 3


# Name-like words from syllables, onsets weighted roughly like the initials of English names, so
# that search prefixes match as unevenly as real names do ("ma" often, "zu" rarely).
_ONSETS = (
    ("m", 9), ("j", 7), ("s", 7), ("k", 6), ("l", 6), ("r", 6), ("d", 6), ("c", 5), ("b", 5),
    ("t", 5), ("a", 5), ("e", 4), ("n", 4), ("h", 4), ("g", 3), ("p", 3), ("f", 2), ("v", 2),
    ("w", 2), ("i", 2), ("o", 2), ("z", 1), ("y", 1), ("u", 1), ("sh", 1), ("th", 1), ("ch", 1),
    ("br", 1), ("tr", 1), ("st", 1), ("q", 1), ("x", 1),
)  # fmt: skip
_INNER = ("m", "n", "l", "r", "d", "t", "s", "k", "v", "b", "th", "nd", "rl", "ss", "x")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ia", "ei", "ou", "y")
_ENDINGS = ("", "", "", "n", "r", "l", "s", "th", "x", "m", "nd", "rk", "lle", "tte")
_WORD_SEED = 20261202


def _word(rng: random.Random) -> str:
    """One capitalised name-like word of two or three syllables, at least three letters."""
    onsets = [onset for onset, _ in _ONSETS]
    weights = [weight for _, weight in _ONSETS]
    while True:
        word = rng.choices(onsets, weights)[0] + rng.choice(_VOWELS)
        for _ in range(rng.choice((1, 1, 2))):
            word += rng.choice(_INNER) + rng.choice(_VOWELS)
        word += rng.choice(_ENDINGS)
        if len(word) >= 3:
            return word.capitalize()


@cache
def word_lists() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The generated given names and family names (fixed: the same on every run)."""
    rng = random.Random(_WORD_SEED)  # noqa: S311 (reproducible sample data, no secret)
    given = tuple(sorted({_word(rng) for _ in range(700)}))
    family = tuple(sorted({_word(rng) for _ in range(1500)}))
    return given, family


def _digest(kind: str, index: int) -> int:
    """A stable pseudo-random number for one property of one seeded account."""
    raw = hashlib.blake2b(f"{kind}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big")


def display_name(index: int) -> str:
    """The display name of the seeded account number index: a given name, mostly followed by a
    family name."""
    given, family = word_lists()
    number = _digest("name", index)
    first = given[number % len(given)]
    if number % 10 == 0:
        return first
    return f"{first} {family[(number // len(given)) % len(family)]}"


_BIOS = (
    "Photos of {place}, mostly at dawn.",
    "{name} by day, {other} by night.",
    "Moved to {place} for the coffee, stayed for the people.",
    "Collecting small moments in {place}.",
)


def bio(index: int) -> str:
    """The bio of the seeded account number index; two in three have none."""
    number = _digest("bio", index)
    if number % 3:
        return ""
    given, family = word_lists()
    template = _BIOS[(number // 3) % len(_BIOS)]
    return template.format(
        place=family[(number // 12) % len(family)],
        name=given[(number // 7) % len(given)],
        other=given[(number // 11) % len(given)],
    )


def follow_targets(index: int, count: int) -> list[int]:
    """The seeded accounts (indices below count) the seeded account number index follows."""
    rng = random.Random(_digest("follows", index))  # noqa: S311 (reproducible sample data)
    wanted = rng.randrange(MAX_FOLLOWS + 1)
    targets: list[int] = []
    for _ in range(FOLLOW_DRAWS):
        if len(targets) == wanted:
            break
        target = int(FOLLOW_UNIVERSE * rng.random() ** POPULARITY_SKEW)
        if target < count and target != index and target not in targets:
            targets.append(target)
    return targets


@dataclass(frozen=True)
class Seeded:
    """What one seeding run did."""

    accounts: int
    """Accounts created (the others existed already)."""
    profiles_filled: int
    """Existing seeded profiles without a display name that got one."""
    follows: int
    """Follows created, pending requests included."""
    requests: int
    """Of those, requests pending at private accounts."""
    seconds: float


def password_hash(pepper: str, rounds: int) -> str:
    """The bcrypt hash of SEEDED_PASSWORD as auth_svc makes it with this pepper and cost: one hash
    made once, shared by every seeded account."""
    return asyncio.run(PasswordHasher(pepper, rounds).hash(SEEDED_PASSWORD))


async def seed(
    database_url: str,
    count: int,
    *,
    hashed_password: str,
    account_batch: int = ACCOUNT_BATCH,
    follow_batch: int = FOLLOW_BATCH,
) -> Seeded:
    """Add the seeded accounts 0..count-1 that are missing, their profiles and follows, to the
    migrated database at database_url."""
    started = time.monotonic()
    created = filled = follows = requests = 0
    async with _connection(database_url) as connection:
        for start in range(0, count, account_batch):
            indices = range(start, min(count, start + account_batch))
            async with connection.begin():
                made, fixed = await _add_accounts(connection, indices, hashed_password)
            created += made
            filled += fixed
        # All follows in one transaction, so that the counts change with them: the new active
        # follows are gathered in a temporary table and counted in one pass at the end.
        async with connection.begin():
            ids = await _seeded_ids(connection)
            pairs = (
                (ids[index], ids[target])
                for index in range(count)
                for target in follow_targets(index, count)
                if index in ids and target in ids
            )
            await connection.execute(_ADDED_TABLE)
            for chunk in _chunks(pairs, follow_batch):
                active, pending = await _add_follows(connection, chunk)
                follows += active + pending
                requests += pending
            await connection.execute(_COUNT_ADDED)
        # Fresh statistics, so that the planner knows the tables' new contents right away.
        async with connection.begin():
            await connection.execute(text("ANALYZE accounts, profiles, follows"))
    return Seeded(created, filled, follows, requests, time.monotonic() - started)


@asynccontextmanager
async def _connection(database_url: str) -> AsyncIterator[AsyncConnection]:
    """One connection to the database, outside any transaction."""
    engine = create_async_engine(to_asyncpg_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()


_ADD_ACCOUNTS = text(
    """
    WITH batch AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:usernames AS text[]), CAST(:emails AS text[]),
            CAST(:names AS text[]), CAST(:bios AS text[]), CAST(:private AS boolean[])
        ) AS b(id, username, email, display_name, bio, private)
    ), new_accounts AS (
        INSERT INTO accounts (id, email, username, password_hash, email_verified_at)
        SELECT id, email, username, CAST(:password_hash AS text), now() FROM batch
        ON CONFLICT DO NOTHING
        RETURNING id
    ), new_profiles AS (
        INSERT INTO profiles (account_id, display_name, bio, private)
        SELECT b.id, b.display_name, b.bio, b.private
        FROM batch b JOIN new_accounts n ON n.id = b.id
        RETURNING account_id
    ), filled AS (
        -- Seeded accounts made before profiles had names here (an earlier benchmark) get one.
        UPDATE profiles p SET display_name = b.display_name, bio = b.bio
        FROM batch b JOIN accounts a ON a.username = b.username AND a.email = b.email
        WHERE p.account_id = a.id AND p.display_name = ''
        RETURNING p.account_id
    )
    SELECT (SELECT count(*) FROM new_profiles) AS created, (SELECT count(*) FROM filled) AS filled
    """
)


async def _add_accounts(
    connection: AsyncConnection, indices: Sequence[int], hashed_password: str
) -> tuple[int, int]:
    """Insert the missing accounts of indices with their profiles; return how many were created
    and how many existing seeded profiles got their missing display name."""
    row = (
        await connection.execute(
            _ADD_ACCOUNTS,
            {
                "ids": [uuid.uuid4() for _ in indices],
                "usernames": [seeded_username(i) for i in indices],
                "emails": [seeded_email(i) for i in indices],
                "names": [display_name(i) for i in indices],
                "bios": [bio(i) for i in indices],
                "private": [is_private(i) for i in indices],
                "password_hash": hashed_password,
            },
        )
    ).one()
    return int(row.created), int(row.filled)


_SEEDED_IDS = text(
    "SELECT id, username FROM accounts WHERE username LIKE :pattern AND email = username || :domain"
)


async def _seeded_ids(connection: AsyncConnection) -> dict[int, uuid.UUID]:
    """The ids of the seeded accounts by index (an account seeded earlier keeps the id it got
    then; a real account that took a seeded username is left out)."""
    rows = await connection.execute(
        _SEEDED_IDS,
        {"pattern": SEEDED_PREFIX.replace("_", "\\_") + "%", "domain": f"@{EMAIL_DOMAIN}"},
    )
    ids = {}
    for row in rows:
        number = row.username.removeprefix(SEEDED_PREFIX)
        if number.isdigit():
            ids[int(number)] = row.id
    return ids


_Pair = tuple[uuid.UUID, uuid.UUID]
"""A follow: the follower's account id, the followed one's."""
_ADDED_TABLE = text(
    "CREATE TEMPORARY TABLE seed_added (follower_id uuid, followed_id uuid) ON COMMIT DROP"
)
# The missing follows of a batch of pairs; the active ones are kept for counting.
_ADD_FOLLOWS = text(
    """
    WITH added AS (
        INSERT INTO follows (follower_id, followed_id, status)
        SELECT w.follower, w.followed, CASE WHEN p.private THEN 'pending' ELSE 'active' END
        FROM unnest(CAST(:followers AS uuid[]), CAST(:followed AS uuid[])) AS w(follower, followed)
        JOIN profiles p ON p.account_id = w.followed
        ON CONFLICT DO NOTHING
        RETURNING follower_id, followed_id, status
    ), kept AS (
        INSERT INTO seed_added (follower_id, followed_id)
        SELECT follower_id, followed_id FROM added WHERE status = 'active'
    )
    SELECT count(*) FILTER (WHERE status = 'active') AS active,
           count(*) FILTER (WHERE status = 'pending') AS pending
    FROM added
    """
)
# Every profile's counts grow by its new active follows, each profile updated once.
_COUNT_ADDED = text(
    """
    UPDATE profiles p
    SET follower_count = p.follower_count + d.followers,
        following_count = p.following_count + d.following,
        updated_at = clock_timestamp()
    FROM (
        SELECT id, sum(followers) AS followers, sum(following) AS following
        FROM (
            SELECT followed_id AS id, 1 AS followers, 0 AS following FROM seed_added
            UNION ALL
            SELECT follower_id, 0, 1 FROM seed_added
        ) AS changes
        GROUP BY id
    ) AS d
    WHERE p.account_id = d.id
    """
)


async def _add_follows(connection: AsyncConnection, pairs: Sequence[_Pair]) -> tuple[int, int]:
    """Insert the missing follows among pairs of account ids; return how many active follows
    and pending requests were added."""
    row = (
        await connection.execute(
            _ADD_FOLLOWS,
            {"followers": [p[0] for p in pairs], "followed": [p[1] for p in pairs]},
        )
    ).one()
    return int(row.active), int(row.pending)


def _chunks(items: Iterator[_Pair], size: int) -> Iterator[list[_Pair]]:
    """Consecutive lists of at most size items."""
    chunk: list[_Pair] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def main(argv: Sequence[str] | None = None) -> None:
    """Seed the database `make run` uses and say what was done."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="seeded accounts wanted")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error("--users must be at least 1")
    load_dotenv(ROOT / ".env", override=False)
    env = dict(os.environ)
    if env.get("MESHGRAM_ENV") == "production":
        raise SystemExit("tools.seed: refusing to seed with MESHGRAM_ENV=production")
    pepper = mesh_secrets(env, ROOT / "var").password_pepper
    assert pepper is not None, "outside production the development pepper is generated"
    default_rounds = AuthSettings.model_fields["bcrypt_rounds"].default
    rounds = int(env.get("AUTH_BCRYPT_ROUNDS", default_rounds))
    hashed = password_hash(pepper, rounds)
    with make_run_database() as url:
        shown = make_url(url).render_as_string(hide_password=True)
        print(f"tools.seed: database {shown}", flush=True)
        asyncio.run(upgrade_async(url))
        print("tools.seed: migrations applied", flush=True)
        done = asyncio.run(seed(url, args.users, hashed_password=hashed))
    existing = args.users - done.accounts
    named = f", {done.profiles_filled:,} of them named now" if done.profiles_filled else ""
    print(
        f"tools.seed: {done.accounts:,} accounts created ({existing:,} of the {args.users:,} "
        f"existed already{named}), {done.follows:,} follows added ({done.requests:,} of them "
        f"requests to private accounts), in {done.seconds:.1f}s\n"
        f"tools.seed: every seeded account logs in with the password {SEEDED_PASSWORD!r}, e.g. "
        f"{seeded_email(42)} ({display_name(42)})",
        flush=True,
    )


if __name__ == "__main__":
    main()
