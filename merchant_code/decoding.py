"""Every JSON body a client sends is read here, by one set of rules, so that no route answers a
500 to bytes it cannot use: malformed JSON, a lone surrogate, a NUL byte, a number out of range
(1e99999, an integer past 64 bits) or nesting deeper than `MAX_DEPTH` are a 400 naming the body
(or the field, when one can be named); a NUL character (`\\u0000`) in a text is a 422 naming its
field, as PostgreSQL cannot store it.

msgspec has no depth option and recurses in C: about 1,000 levels raise RecursionError while
decoding, and fewer still can exhaust the stack where Litestar converts the value into the
handler's struct. `JSONRequest` makes Litestar's own body reading (`data: JSONBody[...]`, and
`request.json()` in `forms.read`) go through `decode`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Request

from merchant_code.errors import InvalidInput, UnreadableBody

MAX_DEPTH = 32  # the deepest body struct is three levels; 32 leaves room for any honest client
BIGINT_MAX = 2**63 - 1  # nothing the service keeps holds a larger integer (PostgreSQL's bigint)
NUL_MESSAGE = "text cannot contain the NUL character (U+0000)"

# a JSON string (valid JSON: decoding succeeded first), and an innermost empty pair of brackets
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_LONG_INTEGER = re.compile(rb"[0-9]{19}")


def decode(raw: bytes) -> Any:
    """The value of a JSON body (None for an empty one), or UnreadableBody / InvalidInput."""
    if not raw:
        return None
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        raise _too_deep() from None
    except msgspec.ValidationError:  # untyped, only numbers fail this way: 1e99999
        raise UnreadableBody("body", "a number is out of range") from None
    except msgspec.DecodeError as exc:
        raise UnreadableBody("body", f"the body is not valid JSON: {exc}") from None
    if deeper_than(raw, MAX_DEPTH):
        raise _too_deep()
    # the walk costs a pass over the value: only when the bytes may hold what it looks for
    if b"\\u0000" in raw or _LONG_INTEGER.search(raw):
        _check_leaves(value)
    return value


def _too_deep() -> UnreadableBody:
    return UnreadableBody("body", f"the body is nested deeper than {MAX_DEPTH} levels")


def deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the brackets of a valid JSON document nest deeper than `limit`: with its strings
    taken out, each pass removes the innermost pairs, so a document of depth d is gone after d
    passes. Regular expressions and translate run in C: a megabyte takes milliseconds a pass."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        brackets = _PAIR.sub(b"", brackets)
        if not brackets:
            return False
    return True


def _check_leaves(value: Any) -> None:
    for field, leaf in leaves(value):
        if isinstance(leaf, str) and "\x00" in leaf:
            raise InvalidInput(field, NUL_MESSAGE)
        if isinstance(leaf, int) and not isinstance(leaf, bool) and abs(leaf) > BIGINT_MAX:
            raise UnreadableBody(field, f"a number is out of range (at most {BIGINT_MAX} in size)")


def leaves(value: Any) -> Iterator[tuple[str, Any]]:
    """Every key and scalar of a decoded value with its path (`a.b[2].c`; `body` for the top),
    without recursion: the value is at most MAX_DEPTH deep, but this runs on any value."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                inner = f"{path}.{key}" if path else key
                yield inner, key
                stack.append((inner, item))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(node))
        else:
            yield path or "body", node


class JSONRequest(Request[Any, Any, Any]):
    """Litestar's request, its JSON read by `decode` (Litestar's own decoding lets RecursionError
    through as a 500, and `request.json()` its SerializationException)."""

    async def json(self) -> Any:
        return decode(await self.body())
