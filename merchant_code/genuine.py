"""Whether the sticker a scan came from is genuine: the scan URL's `q` checked against the key
that signed it.

A sticker's URL carries `q={kid}.{signature}` (merchant_code/qr.py). The key's state comes with
the scan's one query (profile_cache.ANSWER joins `qr_key`), so a retired or revoked key is seen
at once by every worker, with no key set to refresh. The signature check itself (Ed25519, about
70 us) is done once per (code, q) in each worker and its verdict kept in a small LRU: a kid names
one public key for good (the key's hash, unique in `qr_key`), so a verdict never goes stale.
A revoked code needs nothing here: its stored answer is the 410 "not valid" page already.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from merchant_code import qr

# genuine: signed by the active key; retired: by a key that no longer signs (genuine, but an old
# sticker); revoked: by a withdrawn key; forged: a `q` that does not verify (a bad signature, an
# unknown key, not a signature at all); unsigned: no `q` (a plain link, not a sticker)
Status = Literal["genuine", "retired", "revoked", "forged", "unsigned"]
STATUSES: tuple[Status, ...] = ("genuine", "retired", "revoked", "forged", "unsigned")
GENUINE: dict[Status, bool | None] = {
    "genuine": True,
    "retired": True,
    "revoked": False,
    "forged": False,
    "unsigned": None,
}
VERDICTS = 20_000  # about 200 bytes each: 4 MB per worker at most

_Q = re.compile(r"(?P<kid>[A-Za-z0-9_-]{1,16})\.[A-Za-z0-9_-]{86}")


class Claim(NamedTuple):
    """What the scan URL claims: `q` as sent (None: there is none) and the key it names (None
    when `q` is not shaped like a signature, which makes it forged without a look at any key)."""

    q: str | None
    kid: str | None


class Key(NamedTuple):
    public_key: bytes
    status: qr.KeyStatus


UNSIGNED = Claim(None, None)


def claim(values: list[str]) -> Claim:
    """The claim of the `q` values of a URL, in order. Two of them is no sticker's URL."""
    if not values:
        return UNSIGNED
    match = _Q.fullmatch(values[0]) if len(values) == 1 else None
    return Claim(values[0], match["kid"]) if match else Claim(values[0], None)


def claim_of(query_string: bytes) -> Claim:
    """The claim of a raw query string, parsed as the scan's hot path parses it."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return claim([value for key, value in pairs if key == "q"])


class Checker:
    """One per worker process: the sticker status of a scan, from its claim and the key's row."""

    def __init__(self, base: str, max_entries: int = VERDICTS) -> None:
        self.base = base
        self.max_entries = max_entries
        self.verdicts: OrderedDict[tuple[str, str], bool] = OrderedDict()

    def status(self, code: str, sent: Claim, key: Key | None) -> Status:
        if sent.q is None:
            return "unsigned"
        if key is None or not self._signed(code, sent.q, key.public_key):
            return "forged"
        # a signature that checks out under a revoked key is still not genuine: the key was
        # withdrawn because others may hold it
        if key.status == "revoked":
            return "revoked"
        return "retired" if key.status == "retired" else "genuine"

    def _signed(self, code: str, q: str, public_key: bytes) -> bool:
        entry = (code, q)
        verdict = self.verdicts.get(entry)
        if verdict is None:
            verdict = verify(self.base, code, q, public_key)
            self.verdicts[entry] = verdict
            while len(self.verdicts) > self.max_entries:
                self.verdicts.popitem(last=False)
        else:
            self.verdicts.move_to_end(entry)
        return verdict


def verify(base: str, code: str, q: str, public_key: bytes) -> bool:
    """Whether `q` (a well-formed `{kid}.{signature}`) signs this code's URL under this key."""
    kid, _, text = q.partition(".")
    try:
        signature = qr.b64url_decode(text)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, qr.message(base, code, kid))
    except (InvalidSignature, ValueError):
        return False
    return True
