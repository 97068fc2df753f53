"""Notices joined to a shop's views when they are made, never copied into its profile.

A policy sent to a whole trade in some areas (a catering push reaches about 290,000 shops in a
city) is one row of `policy`. Copying it into each shop's profile made the push a rebuild of
every profile it reached, minutes of both cores while scans waited (migration 0037). Instead:

- the citizen's views (the stored page and JSON, the public API) show the newest CITIZEN_LIMIT
  notices sent to the shop's trade and area. Each worker keeps the short list of such notices
  in memory (`TradeNotices`), reads it again only when policies changed (the scan cache's
  watermark asks several times a second), and splices the notices into a stored answer where
  its page left a mark; the answer's ETag carries a tag of the notices joined;
- the owner's and the inspector's views read the shop's own inbox when they are opened
  (`for_shop`): reminders and policies narrowed by a filter are only ever there, with their
  read state.

A closed shop is sent nothing (policy_audience), so its citizen view shows no notice.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal, NamedTuple

import asyncpg
import msgspec

from merchant_code import db, rendering
from merchant_code.views import InboxNotice, Notice

CITIZEN_LIMIT = 3  # the citizen page shows the newest three, as it did when they were stored
OWN_LIMIT = 20  # the owner's and the inspector's views; the inbox pages through the rest

Kind = Literal["json", "zh", "en"]


class Joined(NamedTuple):
    """The notices of one audience (a trade in an area), as each answer kind splices them."""

    notices: tuple[Notice, ...]
    tag: str  # in the ETag: moves when the notices joined change, the same in every worker
    json: bytes  # `,"notices":[...]`, spliced before the JSON object's last brace
    zh: bytes  # the page's section, spliced at its mark (empty for none)
    en: bytes

    def piece(self, kind: Kind) -> bytes:
        return self.json if kind == "json" else self.zh if kind == "zh" else self.en


class _Sent(NamedTuple):
    notice: Notice
    trades: frozenset[str]  # empty: every trade
    area_ids: frozenset[int]  # the policy's areas and every area below them


def _joined(notices: tuple[Notice, ...]) -> Joined:
    ids = " ".join(n.id for n in notices).encode()
    html = {
        en: rendering.page("_notices.html.j2", notices=notices, view="citizen", en=en) if notices
        else b""
        for en in (False, True)
    }
    return Joined(
        notices=notices,
        tag=format(zlib.crc32(ids), "x") if notices else "0",
        json=b',"notices":' + msgspec.json.encode(notices),
        zh=html[False],
        en=html[True],
    )


NONE = _joined(())


class TradeNotices:
    """One worker's copy of the notices sent to whole trades and areas."""

    def __init__(self) -> None:
        self.mark: str | None = None  # trade_notices_mark when last read; None: never read
        self.sent: list[_Sent] = []
        self._joined: dict[str, Joined] = {}

    @property
    def loaded(self) -> bool:
        return self.mark is not None

    async def refresh(self, conn: asyncpg.Connection) -> None:
        """Read the notices again if any policy changed since the last read."""
        mark: str = await db.queries.trade_notices_mark(conn)
        if mark == self.mark:
            return
        self.sent = [
            _Sent(
                Notice(id=r["id"], title=r["title"], kind=r["kind"], sent_at=r["sent_at"]),
                frozenset(r["trades"]),
                frozenset(r["area_ids"]),
            )
            async for r in db.queries.list_trade_notices(conn)
        ]
        self._joined = {}
        self.mark = mark

    def joined(self, audience: str | None) -> Joined:
        """The newest notices for an audience ("<trade> <area id>", as list_citizen_docs writes it);
        none for None (a closed shop)."""
        if audience is None:
            return NONE
        got = self._joined.get(audience)
        if got is None:
            trade, _, area = audience.partition(" ")
            area_id = int(area)
            found: list[Notice] = []
            for sent in self.sent:  # newest first
                if (not sent.trades or trade in sent.trades) and area_id in sent.area_ids:
                    found.append(sent.notice)
                    if len(found) == CITIZEN_LIMIT:
                        break
            got = self._joined[audience] = _joined(tuple(found))
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
