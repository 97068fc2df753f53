"""Query parameters several routes share."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

# every list answers at most 100 items a page; asking for more is a 400 naming `limit`
PageSize = Annotated[int, QueryParameter(ge=1, le=100, description="items per page, at most 100")]
