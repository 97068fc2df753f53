"""Query and path parameters several routes share."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

from merchant_code.errors import InvalidInput

# every list answers at most 100 items a page; asking for more is a 400 naming `limit`
PageSize = Annotated[int, QueryParameter(ge=1, le=100, description="items per page, at most 100")]

# a cursor that is a row's public id (a UUID): anything else is a 400 naming the parameter
UUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
PublicBefore = Annotated[
    str | None, QueryParameter(pattern=UUID_PATTERN, description="the `next` of the page before")
]

# a coordinate nearer 0 than this (about a centimetre) but not 0 is refused: PostgreSQL's
# trigonometry underflows on it (radians(-5e-324); a shop at 0 less 1e-200, squared), and no
# phone reports a position that precise
COORDINATE_MIN = 1e-7


def check_coordinates(**values: float | None) -> None:
    """InvalidInput naming the first coordinate (keyword: its field) too near 0 to compute with."""
    for field, value in values.items():
        if value is not None and 0 < abs(value) < COORDINATE_MIN:
            raise InvalidInput(field, f"give 0, or a value at least {COORDINATE_MIN:g} from 0 (a centimetre)")
