"""Notices joined to a shop's views when they are made, never copied into its profile.

A policy sent to a whole trade in some areas (a catering push reaches about 290,000 shops in a
city) is one row of `policy`. Copying it into each shop's profile made the push a rebuild of
every profile it reached, minutes of both cores while scans waited (migration 0037). Instead:

- the citizen's views (the stored page and JSON, the public API) show the newest CITIZEN_LIMIT
  notices sent to the shop's trade and area. Each worker keeps the newest KEPT such notices in
  memory (`TradeNotices`), reads them again only when a policy or an area changed (a one-row
  mark, moved in commit order by a trigger, migration 0038, that the scan cache's watermark
  reads several times a second), and splices them into a stored answer where its page left a
  mark; the answer's ETag carries a digest of the bytes joined;
- the owner's and the inspector's views read the shop's own inbox when they are opened
  (`for_shop`): reminders and policies narrowed by a filter are only ever there, with their
  read state.

A closed shop is sent nothing (policy_audience), so its citizen view shows no notice.
"""

from __future__ import annotations

import datetime
import zlib
from typing import Any, Literal, NamedTuple

import asyncpg
import msgspec

from merchant_code import db, rendering
from merchant_code.views import InboxNotice, Notice

CITIZEN_LIMIT = 3  # the citizen page shows the newest three, as it did when they were stored
OWN_LIMIT = 20  # the owner's and the inspector's views; the inbox pages through the rest
# the newest notices a worker keeps: a shop of a trade none of them reached shows none
KEPT = 1000

Kind = Literal["json", "zh", "en"]


class Joined(NamedTuple):
    """The notices of one audience (a trade in an area), as each answer kind splices them."""

    notices: tuple[Notice, ...]
    tag: str  # in the ETag: a digest of the bytes joined, the same in every worker
    json: bytes  # `,"notices":[...]`, spliced before the JSON object's last brace
    zh: bytes  # the page's section, spliced at its mark (empty for none)
    en: bytes

    def piece(self, kind: Kind) -> bytes:
        return self.json if kind == "json" else self.zh if kind == "zh" else self.en


class _Sent(NamedTuple):
    notice: Notice
    trades: frozenset[str]  # empty: every trade
    paths: tuple[str, ...]  # the paths of the policy's areas: they and every area below them


def _joined(notices: tuple[Notice, ...]) -> Joined:
    json = b',"notices":' + msgspec.json.encode(notices)
    html = {
        en: rendering.page("_notices.html.j2", notices=notices, view="citizen", en=en) if notices else b""
        for en in (False, True)
    }
    return Joined(
        notices=notices,
        tag=format(zlib.crc32(json), "x") if notices else "0",
        json=json,
        zh=html[False],
        en=html[True],
    )


NONE = _joined(())


class TradeNotices:
    """One worker's copy of the newest KEPT notices sent to whole trades and areas, and of every
    area's path (a city has a few thousand areas)."""

    def __init__(self) -> None:
        self.mark: int | None = None  # notices_mark when last read; None: never read
        self.changed_at: datetime.datetime | None = None  # when the notices last changed
        self.sent: list[_Sent] = []
        self.paths: dict[int, str] = {}  # area id -> path
        self._joined: dict[str, Joined] = {}  # by audience
        self._shared: dict[tuple[str, ...], Joined] = {}  # by the ids joined: one per set

    @property
    def loaded(self) -> bool:
        return self.mark is not None

    async def refresh(self, conn: asyncpg.Connection) -> None:
        """Read the notices again if a policy or an area changed since the last read (two
        small reads; one of a single row when nothing changed)."""
        row = await db.queries.get_notices_mark(conn)
        if row["n"] == self.mark:
            return
        self.paths = {r["id"]: r["path"] async for r in db.queries.list_area_paths(conn)}
        self.sent = [
            _Sent(
                Notice(id=r["id"], title=r["title"], kind=r["kind"], sent_at=r["sent_at"]),
                frozenset(r["trades"]),
                tuple(r["paths"]),
            )
            async for r in db.queries.list_trade_notices(conn, kept=KEPT)
        ]
        self._joined, self._shared = {}, {}
        self.mark, self.changed_at = row["n"], row["changed_at"]

    def joined(self, audience: str | None) -> Joined:
        """The newest notices for an audience ("<trade> <area id>", as list_citizen_docs writes it);
        none for None (a closed shop)."""
        if audience is None:
            return NONE
        got = self._joined.get(audience)
        if got is None:
            trade, _, area = audience.partition(" ")
            path = self.paths.get(int(area), "")
            found: list[Notice] = []
            for sent in self.sent:  # newest first
                if (not sent.trades or trade in sent.trades) and any(
                    path == p or path.startswith(p + ".") for p in sent.paths
                ):
                    found.append(sent.notice)
                    if len(found) == CITIZEN_LIMIT:
                        break
            ids = tuple(n.id for n in found)
            got = self._shared.get(ids)
            if got is None:
                got = self._shared[ids] = _joined(tuple(found))
            self._joined[audience] = got
        return got


async def for_shop(conn: asyncpg.Connection, shop_id: int) -> list[InboxNotice]:
    """The owner's and the inspector's views: the newest of what the shop's inbox received."""
    return [
        InboxNotice(id=r["id"], title=r["title"], kind=r["kind"], sent_at=r["sent_at"], read=r["read"])
        async for r in db.queries.list_shop_notices(conn, shop_id=shop_id, limit=OWN_LIMIT)
    ]



async def with_own(conn: asyncpg.Connection, row: asyncpg.Record, doc: str) -> dict[str, Any]:
    """A document of get_full_profile (`merchant_doc`, `full_doc`) with the shop's own notices."""
    return {**row[doc], "notices": await for_shop(conn, row["shop_id"])}
