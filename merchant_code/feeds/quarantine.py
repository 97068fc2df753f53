"""Quarantine: a record the database refuses stays local to itself, and a reject is kept once.

The runner stores a page set-based, one statement for many records; one value the database
refuses (a NUL in a text, a timestamp past year 9999 once in UTC, a key too long for its index,
a broken CHECK) would fail the statement and with it the page and the run. `split` runs each
statement in a savepoint and, when the database refuses the data, halves the batch until the
refused records stand alone: they are quarantined with the rule they broke in words, the rest
is stored. Only refusals of the data are split on; a lost connection or a deadlock still fails
the page (the runner retries deadlocks as a whole).

A reject is keyed by (source, record key, reason) and counted: a re-run that meets it again
raises its counters instead of adding a row. The reason never carries the record's values
(PostgreSQL's detail, "Failing row contains (...)", holds personal data): only the rule.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base

from merchant_code import db
from merchant_code.feeds import limits as feed_limits
from merchant_code.feeds.base import Reject

T = TypeVar("T")
R = TypeVar("R")

# the database refusing a record's data: split the batch down to the record
REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,  # 22xxx: a value of the wrong form or out of range
    asyncpg.exceptions.IntegrityConstraintViolationError,  # 23xxx: NOT NULL, CHECK, UNIQUE, FK
    asyncpg.exceptions.ProgramLimitExceededError,  # 54xxx: a key too large for its index
    asyncpg_base.DataError,  # asyncpg could not encode a value (a year past 9999 in UTC)
)
KEY_CHARS = 200  # a record key longer than this is kept as its digest
REASON_CHARS = 300  # key parts bounded so one index entry always fits (see migration 0029)
ID_CHARS = 500


class Refused(Exception):
    """Internal: a batch of one the database refused, with the reason in words."""


async def split(
    conn: asyncpg.Connection, items: Sequence[T], store: Callable[[list[T]], Awaitable[R]]
) -> tuple[list[tuple[list[T], R]], list[tuple[T, str]]]:
    """`store` over every item: each batch in a savepoint, a refused batch halved until its bad
    records stand alone. Returns the stored batches with what `store` gave for each, and the
    refused items with why."""
    stored: list[tuple[list[T], R]] = []
    refused: list[tuple[T, str]] = []
    pending = [list(items)] if items else []
    while pending:
        batch = pending.pop()
        try:
            async with conn.transaction():  # a savepoint: the page's transaction survives
                stored.append((batch, await store(batch)))
        except REFUSED as exc:
            if len(batch) == 1:
                refused.append((batch[0], reason(exc)))
            else:
                half = len(batch) // 2
                pending += [batch[half:], batch[:half]]  # the first half is tried first
    return stored, refused


_INDEX = re.compile(r'for index "([^"]+)"')
_ARGUMENT = re.compile(r"invalid input for query argument \$\d+")


def reason(exc: BaseException) -> str:
    """Why the database refused a record, naming the rule, the column or the index: never the
    values (neither the message's detail nor the argument asyncpg quotes)."""
    if _unencodable(exc):
        cause = exc.__cause__
        what = f"{type(cause).__name__}: {str(cause)[:80]}" if cause is not None else "unreadable value"
        return f"database refused: a value it cannot take ({what})"[:REASON_CHARS]
    if not isinstance(exc, asyncpg.PostgresError):  # pragma: no cover - REFUSED are all above
        return f"database refused: {type(exc).__name__}"
    where = " in ".join(p for p in (_attr(exc, "column_name"), _attr(exc, "table_name")) if p)
    rule = _attr(exc, "constraint_name")
    words = _WORDS.get(type(exc).__name__)
    if isinstance(exc, asyncpg.exceptions.ProgramLimitExceededError):
        index = _INDEX.search(_message(exc))
        words, rule = "a value too large for its index", rule or (index.group(1) if index else None)
    text = words or f"{type(exc).__name__} ({exc.sqlstate})"
    if where:
        text += f", column {where}"
    if rule:
        text += f", rule {rule}"
    return f"database refused: {text}"[:REASON_CHARS]


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else ""


def _unencodable(exc: BaseException) -> bool:
    """asyncpg could not encode an argument (a year past 9999 once in UTC, a lone surrogate): its
    message quotes the start of the argument, the record's values."""
    return isinstance(exc, asyncpg_base.DataError) or (
        isinstance(exc, asyncpg.exceptions.DataError) and _ARGUMENT.match(_message(exc)) is not None
    )


_WORDS = {
    "NotNullViolationError": "a value it requires is missing",
    "CheckViolationError": "a value outside what the column allows",
    "UniqueViolationError": "a key already taken",
    "ForeignKeyViolationError": "a reference to nothing",
    "ExclusionViolationError": "a value that conflicts with another row",
    "NumericValueOutOfRangeError": "a number out of range for its column",
    "StringDataRightTruncationError": "a text too long for its column",
    "CharacterNotInRepertoireError": "a character it cannot store (NUL or invalid UTF-8)",
    "UntranslatableCharacterError": "a character it cannot store",
    "DatetimeFieldOverflowError": "a date or time out of range",
    "InvalidDatetimeFormatError": "a date or time it cannot read",
    "InvalidTextRepresentationError": "a value of the wrong form",
}


def _attr(exc: BaseException, name: str) -> str | None:
    value = getattr(exc, name, None)
    return str(value) if value else None


def error_text(exc: BaseException) -> str:
    """A whole run's failure in one line without the values of any row: a database error keeps
    its message (which names the rule) and loses its detail and hint."""
    if _unencodable(exc):
        return f"{type(exc).__name__}: {reason(exc)}"
    if isinstance(exc, asyncpg.PostgresError):
        message = _message(exc).split("\n", 1)[0]
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return one_line(text)[:500]


def one_line(text: str) -> str:
    """Control characters (line ends, escapes a terminal would run) shown as escapes."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _db_text(text: str) -> str:
    """Text PostgreSQL stores: no NUL, no lone surrogate (a JSON source may send either)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def record_key(external_id: str | None, raw: bytes) -> str:
    """The record's external id when it is known, else the digest of its raw bytes as kept."""
    if external_id is not None:
        text = _db_text(external_id)
        if len(text) <= KEY_CHARS:
            return text
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class Entry:
    """One key's rejects on a page: how many, and the last one's bytes."""

    __slots__ = ("count", "external_id", "kind", "raw")

    def __init__(self, external_id: str | None, kind: str | None, raw: bytes) -> None:
        self.count, self.external_id, self.kind, self.raw = 0, external_id, kind, raw


async def keep(
    conn: asyncpg.Connection, run_id: int, source_id: int, rejects: Sequence[tuple[Reject, str | None]]
) -> None:
    """The page's rejects (each with the kind of record it was, None for the parser's): a key
    met again is counted, not added, and waits again if it had been resolved."""
    entries: dict[tuple[str, str], Entry] = {}
    for reject, kind in rejects:
        raw = feed_limits.clip(reject.raw)
        # the runner's rejects carry the record's own id; a parser's may carry only a hint (LIVES
        # names the business of a bad line), so two bad lines would become one: they are keyed
        # by their bytes, which an unchanged feed repeats
        key = (record_key(reject.external_id if kind else None, raw), _db_text(reject.reason)[:REASON_CHARS])
        entry = entries.get(key)
        if entry is None:
            external_id = reject.external_id and _db_text(reject.external_id)[:ID_CHARS]
            entry = entries[key] = Entry(external_id, kind, raw)
        entry.count += 1
        entry.raw = raw
    if not entries:
        return
    await db.queries.create_feed_rejects(
        conn,
        run_id=run_id,
        source_id=source_id,
        record_keys=[k for k, _ in entries],
        reasons=[why for _, why in entries],
        kinds=[e.kind for e in entries.values()],
        external_ids=[e.external_id for e in entries.values()],
        raws=[e.raw for e in entries.values()],
        counts=[e.count for e in entries.values()],
    )


async def resolve(
    conn: asyncpg.Connection, run_id: int, source_id: int, kind: str, external_ids: Sequence[Any]
) -> None:
    """Records of `kind` just stored: what waited under their external ids waits no more. A
    shop record resolves only shop rejects, as its id (a business id) is not a record's id."""
    if external_ids:
        await db.queries.resolve_feed_rejects(
            conn, run_id=run_id, source_id=source_id, kind=kind, external_ids=list(external_ids)
        )
