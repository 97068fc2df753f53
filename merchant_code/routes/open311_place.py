"""Where an Open311 request is: the spec's three location parameters, each leading to one shop.

`address_id` (the shop's code on its sticker) wins. Then an `address_string` that names exactly
one shop that is not closed: its name (Chinese or English), its address, or a name and an address
together in either order (`老王面馆, 漕溪北路1号`, as the requests' own `address` reads), compared
exactly once spaces are collapsed, the English name without regard to case. A name with its
address outranks a name or an address alone; two shops named equally well are named by neither.
Then `lat` and `long`: the nearest shop that is not closed within NEAR_METRES. An address_string
that names no shop is kept as given (the caller stores it for staff) when lat and long locate one;
alone, it is a 400 that says what would do.
"""

from __future__ import annotations

import math
import re

import asyncpg
import msgspec

from merchant_code import db
from merchant_code.codes import parse_shop_code
from merchant_code.errors import InvalidInput
from merchant_code.routes.params import check_coordinates

NEAR_METRES = 50.0
ADDRESS_MAX = 500
# where an address_string may part a name from an address: a comma (either width), 、 or spaces
SEPARATOR = re.compile(r"\s*[,，、]\s*|\s+")
MAX_SPLITS = 20


class Located(msgspec.Struct, frozen=True):
    shop_id: int
    shop_code: str
    lat: float | None = None
    lon: float | None = None
    by: str = "address_id"  # the parameter that found the shop


def _coordinate(raw: str, field: str, bound: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(field, "give a decimal number of degrees (WGS 84)") from None
    if not math.isfinite(value) or not -bound <= value <= bound:
        raise InvalidInput(field, f"must lie between -{bound:g} and {bound:g}")
    check_coordinates(**{field: value})
    return value


def address_text(fields: dict[str, str]) -> str | None:
    """The address_string with its spaces collapsed (None if absent); too long is a 400."""
    raw = fields.get("address_string")
    if raw is None:
        return None
    text = " ".join(raw.split())
    if len(text) > ADDRESS_MAX:
        raise InvalidInput("address_string", f"at most {ADDRESS_MAX} characters")
    return text


def _pairs(text: str) -> tuple[list[str], list[str]]:
    """Every (name, address) split of the text at a separator, both ways round."""
    names, addresses = [], []
    for cut in list(SEPARATOR.finditer(text))[:MAX_SPLITS]:
        head, tail = text[: cut.start()], text[cut.end() :]
        if head and tail:
            names += [head, tail]
            addresses += [tail, head]
    return names, addresses


async def _named(conn: asyncpg.Connection, text: str) -> tuple[Located | None, int]:
    """The one shop the text names best, and how many shops it names that well."""
    names, addresses = _pairs(text)
    found = db.queries.list_open311_shops_named(conn, text=text, names=names, addresses=addresses)
    rows = [r async for r in found]
    best = [r for r in rows if r["score"] == rows[0]["score"]] if rows else []
    if len(best) != 1:
        return None, len(best)
    return Located(shop_id=best[0]["id"], shop_code=best[0]["code"], by="address_string"), 1


async def _near(conn: asyncpg.Connection, fields: dict[str, str]) -> Located:
    if "lat" not in fields or "long" not in fields:
        missing = "lat" if "lat" not in fields else "long"
        raise InvalidInput(missing, "give lat and long together")
    lat = _coordinate(fields["lat"], "lat", 90)
    lon = _coordinate(fields["long"], "long", 180)
    near = await db.queries.find_open311_shop_near(conn, lat=lat, lon=lon, metres=NEAR_METRES)
    if near is None:
        raise InvalidInput(
            "lat", f"no shop at this location (none within {NEAR_METRES:g} metres): give address_id"
        )
    return Located(shop_id=near["id"], shop_code=near["code"], lat=lat, lon=lon, by="lat")


async def locate(conn: asyncpg.Connection, fields: dict[str, str]) -> Located:
    """The shop a request is about (see the module's doc), or a 400 naming the parameter."""
    if "address_id" in fields:
        code = parse_shop_code(fields["address_id"], field="address_id")
        row = await db.queries.get_shop_for_write(conn, code=code)
        if row is None:
            raise InvalidInput("address_id", "no shop has this code")
        return Located(shop_id=row["id"], shop_code=row["code"])
    text = address_text(fields)
    found, count = (None, 0) if text is None else await _named(conn, text)
    if found is not None:
        return found
    if "lat" in fields or "long" in fields:
        return await _near(conn, fields)
    if text is not None:
        if count > 1:
            raise InvalidInput(
                "address_string", "names more than one shop: give the name with the address, or address_id"
            )
        raise InvalidInput(
            "address_string", "names no shop: give the shop's name or address, address_id, or lat and long"
        )
    raise InvalidInput(
        "address_id",
        "a location is required: give address_id (the shop's code), address_string, or lat and long",
    )
