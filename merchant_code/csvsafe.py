"""Every CSV the service writes, through one writer that defuses spreadsheet formulas.

A spreadsheet (Excel, LibreOffice, Google Sheets) runs a cell that starts with `=`, `+`, `-` or
`@` as a formula, and some also one that starts with a tab or a carriage return; Excel does so
after leading spaces too (` =1+1`). A shop's name, an address or a violation's description comes
from merchants and outside feeds, so a cell of text that would start so gets a leading
apostrophe, which spreadsheets show as text and do not run (OWASP's "CSV injection" advice).
Numbers the service writes itself (a score, a longitude, a count) are passed as numbers, or as
`Numeral` when formatted here first, and written as they are: `-1` stays a number.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


class Numeral(str):
    """A number the service formatted itself (`f"{x:g}"`): written as it is, never defused."""

    __slots__ = ()


class _Text(Protocol):
    def write(self, s: str, /) -> Any: ...


def defuse(value: str) -> str:
    """Text that no spreadsheet runs: a leading apostrophe when it would start a formula."""
    return "'" + value if value.lstrip(" ")[:1] in TRIGGERS else value


def cell(value: object) -> object:
    """A cell as written: text defused, numbers (and `Numeral`) as they are, None empty."""
    if value is None:
        return ""
    if isinstance(value, str) and not isinstance(value, Numeral):
        return defuse(value)
    return value


class Writer:
    """csv.writer's writerow and writerows, every cell through `cell`."""

    def __init__(self, out: _Text, **options: Any) -> None:
        self._writer = csv.writer(out, **options)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        self._writer.writerows([cell(v) for v in row] for row in rows)


def writer(out: _Text, **options: Any) -> Writer:
    return Writer(out, **options)
