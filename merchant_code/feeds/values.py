"""What the JSON and XML feed modules share about one record's values: the error that sends a
record to quarantine, the texts outside systems write for "unknown", and the cleaning of a text
field (normalised, placeholders to None, bounded, no NUL)."""

from __future__ import annotations

import unicodedata
from typing import Literal


class BadRecord(Exception):
    """One record's problem: the module turns it into a Reject with the record's raw bytes."""


# what outside systems write for "unknown"; compared lower-case, after stripping
PLACEHOLDERS = frozenset({"", "null", "none", "nil", "n/a", "-"})


def clean_text(
    value: str | None,
    field: str,
    *,
    limit: int,
    form: Literal["NFC", "NFKC"] = "NFC",
    placeholders: frozenset[str] = PLACEHOLDERS,
) -> str | None:
    """The field's text, or None for a placeholder; BadRecord when it is too long or has a NUL.
    NFKC also folds full-width characters (for identifiers typed on a Chinese keyboard); NFC keeps
    what people wrote."""
    if value is None:
        return None
    text = unicodedata.normalize(form, value).strip()
    if text.lower() in placeholders:
        return None
    if len(text) > limit:
        raise BadRecord(f"{field} is longer than {limit} characters")
    if "\x00" in text:
        raise BadRecord(f"{field} contains a NUL character")
    return text
