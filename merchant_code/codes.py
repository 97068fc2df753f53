"""Identifiers people type or scan: the shop's public code and the USCC.

Both are validated (and normalised) before any query touches the database.
"""

from __future__ import annotations

import secrets
import unicodedata

from merchant_code.errors import InvalidInput

# Crockford's base32: no I, L, O, U; case-insensitive; I/L read as 1 and O as 0.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_VALUE = {ch: i for i, ch in enumerate(CROCKFORD)}
_CROCKFORD_ALIASES = str.maketrans({"I": "1", "L": "1", "O": "0"})
CODE_PAYLOAD = 12  # 12 symbols x 5 bits = 60 random bits
CODE_LENGTH = CODE_PAYLOAD + 1


# a symbol's value doubled, its two base-32 digits added (Luhn's step), looked up rather than done
_DOUBLED_VALUE = {ch: (2 * v) // 32 + (2 * v) % 32 for ch, v in _CROCKFORD_VALUE.items()}


def _luhn_mod32(symbols: str, *, with_check: bool) -> int:
    """Luhn mod N over the Crockford alphabet.

    Crockford's own check symbol is mod 37 and adds `* ~ $ = U`, which read badly on a sticker
    and leave QR alphanumeric mode; Luhn mod 32 stays in the alphabet and still catches every
    single-symbol error and nearly every swap of neighbours.
    """
    backwards = symbols[::-1]
    kept, doubled = (backwards[0::2], backwards[1::2]) if with_check else (backwards[1::2], backwards[0::2])
    return (sum(_CROCKFORD_VALUE[ch] for ch in kept) + sum(_DOUBLED_VALUE[ch] for ch in doubled)) % 32


def code_check_symbol(payload: str) -> str:
    return CROCKFORD[(32 - _luhn_mod32(payload, with_check=False)) % 32]


def new_shop_code(randbits: int | None = None) -> str:
    """A fresh code; `randbits` (60 bits) lets the seeded demo be deterministic."""
    value = secrets.randbits(60) if randbits is None else randbits & ((1 << 60) - 1)
    payload = "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(CODE_PAYLOAD)))
    return payload + code_check_symbol(payload)


def _fold(raw: str) -> str:
    # NFKC turns full-width input from a Chinese IME (Ａ１２) into ASCII (A12)
    return unicodedata.normalize("NFKC", raw).strip().upper()


def parse_shop_code(raw: str, field: str = "code") -> str:
    """The canonical code, or InvalidInput saying what is wrong."""
    text = _fold(raw).replace("-", "").replace(" ", "").translate(_CROCKFORD_ALIASES)
    if len(text) != CODE_LENGTH:
        raise InvalidInput(field, f"a shop code has {CODE_LENGTH} characters, this has {len(text)}")
    bad = sorted({ch for ch in text if ch not in _CROCKFORD_VALUE})
    if bad:
        raise InvalidInput(field, f"a shop code cannot contain {''.join(bad)!r}")
    if _luhn_mod32(text, with_check=True) != 0:
        raise InvalidInput(field, "the check character does not match: the code was mistyped")
    return text


# GB 32100-2015: 31 symbols (no I, O, S, V, Z), weights 3^i mod 31, check = 31 - sum mod 31.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {ch: i for i, ch in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]


def uscc_check_char(first17: str) -> str:
    total = sum(_USCC_VALUE[ch] * w for ch, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def parse_uscc(raw: str, field: str = "uscc") -> str:
    """The canonical unified social credit code, or InvalidInput saying what is wrong."""
    text = _fold(raw).replace(" ", "")
    if len(text) != 18:
        raise InvalidInput(field, f"a unified social credit code has 18 characters, this has {len(text)}")
    bad = sorted({ch for ch in text if ch not in _USCC_VALUE})
    if bad:
        raise InvalidInput(field, f"a unified social credit code cannot contain {''.join(bad)!r}")
    if not text[2:8].isdigit():
        raise InvalidInput(field, "characters 3 to 8 of a unified social credit code are an area code")
    if uscc_check_char(text[:17]) != text[17]:
        raise InvalidInput(field, "the check character does not match (GB 32100-2015)")
    return text
