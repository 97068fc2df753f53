"""Signed sticker payloads and the keys that sign them.

A sticker encodes `{base}/s/{CODE}?q={kid}.{sig}`: the scan URL, so any phone opens the shop's
page, plus an Ed25519 signature (64 bytes, unpadded base64url) over
`merchant-code/1\\n{base}/s/{CODE}\\n{kid}`, so that a verifier holding the published key set
can tell a forged sticker offline, and a signature cannot be moved to another host or code.

Private keys live in DATA_DIR/qr_keys/{kid}.key (raw 32 bytes, mode 0600); public keys in
`qr_key`. A rotated key stops signing but still verifies; a revoked key verifies no more.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncpg
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from merchant_code import audit, db
from merchant_code.codes import parse_shop_code
from merchant_code.errors import DomainError, InvalidInput, NotFound, StartupError
from merchant_code.settings import Settings

DOMAIN = "merchant-code/1"
KEY_DIR = "qr_keys"
MAX_PAYLOAD = 512
Reason = Literal["malformed", "unknown-key", "revoked-key", "bad-signature", "revoked-code"]
KeyStatus = Literal["active", "retired", "revoked"]

# printable ASCII only; no `?` or `#` in the base, so where the query starts is never in doubt
_PAYLOAD = re.compile(
    r"(?P<base>https?://[\x21-\x22\x24-\x2e\x30-\x3e\x40-\x7e]+(?:/[\x21-\x22\x24-\x3e\x40-\x7e]*)?)"
    r"/s/(?P<code>[0-9A-Z]{13})\?q=(?P<kid>[A-Za-z0-9_-]{1,16})\.(?P<sig>[A-Za-z0-9_-]{86})"
)


class InvalidSticker(DomainError):
    """A payload that does not verify; `reason` says why (one of `Reason`)."""

    status = 422
    slug = "invalid-sticker"
    title = "Sticker not valid"

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"sticker not valid ({reason}): {detail}", reason=reason)
        self.reason = reason


class Payload(msgspec.Struct, frozen=True):
    base: str
    code: str
    kid: str
    signature: bytes

    @property
    def message(self) -> bytes:
        return message(self.base, self.code, self.kid)


class Verified(msgspec.Struct, frozen=True):
    code: str
    kid: str
    base: str
    key_status: KeyStatus


class KeyEntry(msgspec.Struct, frozen=True):
    kid: str
    alg: Literal["Ed25519"]
    x: str
    status: KeyStatus
    created_at: datetime.datetime


class RevokedCode(msgspec.Struct, frozen=True):
    code: str
    revoked_at: datetime.datetime
    reason: str


class KeySetDocument(msgspec.Struct, frozen=True):
    """/.well-known/merchant-code-keys.json: everything an offline verifier needs."""

    keys: list[KeyEntry]
    revoked_codes: list[RevokedCode]


@dataclass(frozen=True)
class KeySet:
    keys: Mapping[str, tuple[KeyStatus, Ed25519PublicKey]]
    revoked_codes: frozenset[str]

    @classmethod
    def from_document(cls, doc: KeySetDocument) -> KeySet:
        keys = {}
        for entry in doc.keys:
            try:
                keys[entry.kid] = (entry.status, Ed25519PublicKey.from_public_bytes(b64url_decode(entry.x)))
            except ValueError:
                raise InvalidInput("keyset", f"key {entry.kid!r} is not an Ed25519 public key") from None
        return cls(keys=keys, revoked_codes=frozenset(r.code for r in doc.revoked_codes))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    def payload(self, base: str, code: str) -> str:
        return sign_payload(base, code, self.kid, self.private)


# --- pure functions ------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Canonical unpadded base64url only: two spellings of the same bytes would make two valid
    payloads of one signature (the last symbol of 64 bytes has four spare bits)."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64url(data) != text:
        raise ValueError("not canonical base64url")
    return data


def kid_for(public_key: bytes) -> str:
    """A short key id: 24 bits of the key's hash (a clash on making a key is retried)."""
    return b64url(hashlib.sha256(public_key).digest()[:3])


def message(base: str, code: str, kid: str) -> bytes:
    return f"{DOMAIN}\n{base}/s/{code}\n{kid}".encode("ascii")


def sign_payload(base: str, code: str, kid: str, private: Ed25519PrivateKey) -> str:
    signature = private.sign(message(base, code, kid))
    text = f"{base}/s/{code}?q={kid}.{b64url(signature)}"
    parse_payload(text)  # a base that the parser would not read back is a configuration error
    return text


def parse_payload(text: str | bytes) -> Payload:
    """The payload's parts, or InvalidSticker("malformed"). The parts are taken as they are, never
    normalised, so that every other string gives another message (or no payload at all)."""
    if isinstance(text, bytes):
        if len(text) > MAX_PAYLOAD or not text.isascii():
            raise InvalidSticker("malformed", "not a merchant-code sticker")
        text = text.decode("ascii")
    if not isinstance(text, str) or len(text) > MAX_PAYLOAD or not text.isascii():
        raise InvalidSticker("malformed", "not a merchant-code sticker")
    match = _PAYLOAD.fullmatch(text)
    if match is None:
        raise InvalidSticker("malformed", "not a merchant-code sticker")
    code = match["code"]
    try:
        if parse_shop_code(code) != code:
            raise InvalidSticker("malformed", "the shop code is not in its printed form")
        signature = b64url_decode(match["sig"])
    except InvalidInput:
        raise InvalidSticker("malformed", "the shop code's check character does not match") from None
    except ValueError:
        raise InvalidSticker("malformed", "the signature is not canonical base64url") from None
    return Payload(base=match["base"], code=code, kid=match["kid"], signature=signature)


def verify(payload_text: str | bytes, keyset: KeySet) -> Verified:
    """The verified payload, or InvalidSticker naming the reason; never any other exception."""
    payload = parse_payload(payload_text)
    entry = keyset.keys.get(payload.kid)
    if entry is None:
        raise InvalidSticker("unknown-key", f"no key {payload.kid!r} in the key set")
    status, public = entry
    if status == "revoked":
        raise InvalidSticker("revoked-key", f"key {payload.kid!r} has been revoked")
    try:
        public.verify(payload.signature, payload.message)
    except (InvalidSignature, ValueError):
        raise InvalidSticker("bad-signature", "the signature does not match: a forged sticker") from None
    if payload.code in keyset.revoked_codes:
        raise InvalidSticker("revoked-code", f"shop code {payload.code} has been revoked")
    return Verified(code=payload.code, kid=payload.kid, base=payload.base, key_status=status)


def parse_keyset(data: bytes) -> KeySet:
    try:
        doc = msgspec.json.decode(data, type=KeySetDocument)
    # msgspec raises UnicodeDecodeError for invalid UTF-8 in a string and RecursionError for deep nesting
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput("keyset", f"not a merchant-code key set: {exc}") from None
    return KeySet.from_document(doc)


# --- key files -----------------------------------------------------------------------------

_loaded: dict[tuple[str, str], Ed25519PrivateKey] = {}


def key_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / KEY_DIR


def write_private_key(directory: Path, kid: str, private: Ed25519PrivateKey) -> Path:
    """Written whole under a private name, then linked into place (never over an existing key)."""
    path = directory / f"{kid}.key"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = directory / f".{kid}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(private.private_bytes_raw())
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(draft, path)
        finally:
            draft.unlink()
    except FileExistsError:
        raise
    except OSError as exc:
        raise StartupError(f"cannot keep the QR signing key in {path}: {exc.strerror or exc}") from None
    return path


def load_private_key(settings: Settings, kid: str, public_key: bytes) -> SigningKey:
    path = key_dir(settings) / f"{kid}.key"
    cached = _loaded.get((str(path), kid))
    if cached is None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StartupError(
                f"the private key of QR key {kid} is not in {path} ({exc.strerror or exc}):"
                " copy it from the instance that made it, or rotate with `merchant-code qr keys rotate`"
            ) from None
        cached = _private_from_bytes(raw, path)
        if cached.public_key().public_bytes_raw() != public_key:
            raise StartupError(f"{path} does not hold the private half of QR key {kid}")
        _loaded[(str(path), kid)] = cached
    return SigningKey(kid=kid, private=cached)


def _private_from_bytes(raw: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        if raw.startswith(b"-----BEGIN"):
            key = load_pem_private_key(raw, password=None)
            if isinstance(key, Ed25519PrivateKey):
                return key
        elif len(raw) == 32:
            return Ed25519PrivateKey.from_private_bytes(raw)
    except (ValueError, TypeError):
        pass
    raise StartupError(f"{path} is not an Ed25519 private key (raw 32 bytes or PEM)")


# --- keys in the database ------------------------------------------------------------------


async def ensure_signing_key(conn: asyncpg.Connection, settings: Settings) -> SigningKey:
    """The key that signs new stickers; the first one is made when there is none."""
    row = await db.queries.get_active_qr_key(conn)
    if row is None:
        async with conn.transaction():
            await db.queries.lock_qr_keys(conn)
            row = await db.queries.get_active_qr_key(conn)
            if row is None:
                return await _new_key(conn, settings)
    return load_private_key(settings, row["kid"], bytes(row["public_key"]))


async def _new_key(conn: asyncpg.Connection, settings: Settings) -> SigningKey:
    for _ in range(8):
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes_raw()
        kid = kid_for(public)
        # a kid starting with '-' reads as an option on a command line (`qr keys revoke KID`)
        if kid.startswith("-") or await db.queries.count_qr_keys_by_kid(conn, kid=kid):
            continue
        try:
            write_private_key(key_dir(settings), kid, private)
        except FileExistsError:  # left by a key whose row was rolled back: keep it, take another
            continue
        await db.queries.create_qr_key(conn, kid=kid, public_key=public)
        return SigningKey(kid=kid, private=private)
    raise StartupError("could not find a free QR key id")


async def rotate(conn: asyncpg.Connection, settings: Settings) -> tuple[SigningKey, list[str]]:
    """A new signing key; the ones before it are retired (they still verify). Audited, like every
    change of keys and codes, with no actor (the operator at the console)."""
    async with conn.transaction():
        await db.queries.lock_qr_keys(conn)
        retired = [r["kid"] async for r in db.queries.retire_active_qr_keys(conn)]
        key = await _new_key(conn, settings)
        await audit.append(conn, actor=None, action="qr-key.rotate", object_type="qr_key", object_id=key.kid,
                           detail={"retired": retired})  # fmt: skip
        return key, retired


async def revoke_key(conn: asyncpg.Connection, kid: str) -> datetime.datetime:
    async with conn.transaction():
        await db.queries.lock_qr_keys(conn)
        row = await db.queries.revoke_qr_key(conn, kid=kid)
        if row is None:
            raise NotFound(f"no QR key {kid!r}")
        await audit.append(conn, actor=None, action="qr-key.revoke", object_type="qr_key", object_id=kid)
    revoked_at: datetime.datetime = row["revoked_at"]
    return revoked_at


async def revoke_code(conn: asyncpg.Connection, raw_code: str, reason: str) -> RevokedCode:
    code = parse_shop_code(raw_code)
    if not reason.strip():
        raise InvalidInput("reason", "say why the code is revoked")
    async with conn.transaction():
        row = await db.queries.create_qr_revocation(conn, code=code, reason=reason.strip())
        if row is None:
            raise NotFound(f"no shop has the code {code}")
        await audit.append(conn, actor=None, action="shop-code.revoke", object_type="shop", object_id=code,
                           detail={"reason": reason.strip()})  # fmt: skip
    return msgspec.convert(dict(row), RevokedCode)


async def keyset_document(conn: asyncpg.Connection) -> KeySetDocument:
    keys = [
        KeyEntry(
            kid=r["kid"],
            alg="Ed25519",
            x=b64url(bytes(r["public_key"])),
            status="revoked" if r["revoked_at"] else "retired" if r["retired_at"] else "active",
            created_at=r["created_at"],
        )
        async for r in db.queries.list_qr_keys(conn)
    ]
    revoked = await db.fetch_all(db.queries.list_qr_revoked_codes(conn), RevokedCode)
    return KeySetDocument(keys=keys, revoked_codes=revoked)


async def load_keyset(conn: asyncpg.Connection) -> KeySet:
    return KeySet.from_document(await keyset_document(conn))
