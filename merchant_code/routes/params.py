"""Query and path parameters several routes share."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

# every list answers at most 100 items a page; asking for more is a 400 naming `limit`
PageSize = Annotated[int, QueryParameter(ge=1, le=100, description="items per page, at most 100")]

# ids and cursors are PostgreSQL bigints: past its range a number is a 400 naming the parameter,
# not an overflow in the driver (a 500)
BIGINT_MAX = 2**63 - 1
RowId = Annotated[int, PathParameter(ge=1, le=BIGINT_MAX)]
Before = Annotated[
    int | None, QueryParameter(ge=1, le=BIGINT_MAX, description="the `next` of the page before")
]
