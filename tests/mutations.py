"""Damage done to a valid payload for the feed parsers' robustness tests: truncation, random
bytes, invalid UTF-8, a one-megabyte field, deep nesting. Each format says how a big field and
deep nesting look in it."""

from __future__ import annotations

import random
from collections.abc import Callable


def mutate(
    payload: bytes,
    rng: random.Random,
    *,
    big_field: Callable[[bytes, int], bytes],
    nesting: tuple[bytes, bytes],
    depth: int = 50_000,
) -> bytes:
    at = rng.randrange(len(payload))
    match rng.randrange(5):
        case 0:
            return payload[:at]
        case 1:
            noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            return payload[:at] + noise + payload[at + 8 :]
        case 2:
            return payload[:at] + b"\xff\xfe\xc3\x28" + payload[at:]
        case 3:
            return big_field(payload, at)
        case _:
            return payload[:at] + nesting[0] * depth + nesting[1] * depth + payload[at:]


def json_big_string(payload: bytes, at: int) -> bytes:
    """A 1 MB string at the next string value."""
    quote = payload.find(b'"', at)
    return payload[: quote + 1] + b"x" * 1_000_000 + payload[quote + 1 :]


def xml_big_text(payload: bytes, at: int) -> bytes:
    """A 1 MB text with markup and an entity after the next tag."""
    close = payload.find(b">", at)
    return payload[: close + 1] + b"x<b>y</b>&amp;" * 20 + b"z" * 1_000_000 + payload[close + 1 :]
