"""Signed checkpoints of the audit chain's head: what makes a cut tail visible.

The hash chain finds a row edited, inserted or removed in the middle, but rows cut off the end
leave a shorter chain that is still intact. So the service signs the sealed head (its row id, its
place in the chain, seal_seq, and its hash; checkpoints from before sealing have no place, which
was then the id) every few minutes with the sticker key (Ed25519, `qr`), into `audit_checkpoint`,
and the checkpoints can be exported to a file kept elsewhere. `verify` then asks of every checkpoint
whose signature holds that its head row is still in the chain with the hash it had.

Who is stopped: the web processes' role (`merchant_code_app`) may neither change nor delete
audit rows nor checkpoints (privileges, and a trigger for every role). Someone who can get past
that (the database owner or a superuser, or whoever restores an older backup over the
database) can cut the tail, and can delete checkpoints too, but cannot sign a checkpoint for the
shortened head without the private key, which lives in the service's data folder, not in the
database; and checkpoints exported before the cut (`audit export-checkpoints`) still name the
missing rows (`audit verify --checkpoints FILE`). What is not found: a cut of only the rows
written since the last checkpoint (at most CHECKPOINT_SECONDS of them), or a cut by someone who
holds the private key as well as the database.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Literal

import asyncpg
import msgspec
from cryptography.exceptions import InvalidSignature

from merchant_code import audit, db, qr
from merchant_code.errors import InvalidInput
from merchant_code.settings import Settings

DOMAIN = "merchant-code-audit/1"  # checkpoints from before sealing: the head's place was its id
DOMAIN_SEALED = "merchant-code-audit/2"  # the head's place in the chain (seal_seq) is signed too
FORMAT: Literal["merchant-code-audit-checkpoints/1"] = "merchant-code-audit-checkpoints/1"
CHECKPOINT_SECONDS = 300


class Checkpoint(msgspec.Struct, frozen=True):
    id: int
    at: datetime.datetime
    head_id: int
    head_hash: bytes
    kid: str
    signature: bytes
    head_seq: int | None = None  # None: signed before sealing, when the place was head_id

    @property
    def place(self) -> int:
        return self.head_id if self.head_seq is None else self.head_seq


class Export(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The export file: the checkpoints and the public keys that signed them, as they were."""

    format: Literal["merchant-code-audit-checkpoints/1"]
    exported_at: datetime.datetime
    keys: list[qr.KeyEntry]
    checkpoints: list[Checkpoint]


class Report(msgspec.Struct, frozen=True):
    checked: int  # chain rows recomputed (sealed ones)
    unsealed: int  # committed rows not chained yet (written since the last seal)
    oldest_unsealed: datetime.datetime | None  # when the oldest of those was written
    checkpoints: int  # checkpoints whose signature holds and whose head is in the chain
    skipped: int  # checkpoints signed by a key revoked since (not relied on)
    problems: list[str]  # empty: intact


def message(
    at: datetime.datetime, head_id: int, head_hash: bytes, kid: str, head_seq: int | None = None
) -> bytes:
    when = at.astimezone(datetime.UTC).isoformat(timespec="microseconds")
    if head_seq is None:
        return f"{DOMAIN}\n{head_id}\n{head_hash.hex()}\n{when}\n{kid}".encode("ascii")
    return f"{DOMAIN_SEALED}\n{head_id}\n{head_seq}\n{head_hash.hex()}\n{when}\n{kid}".encode("ascii")


async def make(
    conn: asyncpg.Connection, settings: Settings, now: datetime.datetime | None = None
) -> Checkpoint | None:
    """Seal what has committed, then sign the chain's head; None when nothing is sealed or the
    head is signed already."""
    await audit.seal(conn)
    key = await qr.ensure_signing_key(conn, settings)
    head = await db.queries.get_audit_head(conn)
    if head is None:
        return None
    at = now or datetime.datetime.now(datetime.UTC)
    head_id, head_seq, head_hash = head["id"], head["seal_seq"], bytes(head["hash"])
    signature = key.private.sign(message(at, head_id, head_hash, key.kid, head_seq))
    new_id = await db.queries.create_audit_checkpoint(
        conn, at=at, head_id=head_id, head_seq=head_seq, head_hash=head_hash, kid=key.kid, signature=signature
    )
    if new_id is None:
        return None
    return Checkpoint(new_id, at, head_id, head_hash, key.kid, signature, head_seq)


async def checkpoint_job(state: Any) -> None:
    """Scheduled, in every instance: one checkpoint per head, so a second instance adds nothing."""
    async with db.acquire(state.pool) as conn:
        await make(conn, state.settings)


async def stored(conn: asyncpg.Connection) -> list[Checkpoint]:
    return await db.fetch_all(db.queries.list_audit_checkpoints(conn), Checkpoint)


async def export(conn: asyncpg.Connection, now: datetime.datetime | None = None) -> tuple[bytes, int]:
    """The export file's bytes, and how many checkpoints it holds."""
    doc = Export(
        format=FORMAT,
        exported_at=now or datetime.datetime.now(datetime.UTC),
        keys=(await qr.keyset_document(conn)).keys,
        checkpoints=await stored(conn),
    )
    return msgspec.json.format(msgspec.json.encode(doc), indent=2), len(doc.checkpoints)


def parse_export(data: bytes) -> Export:
    try:
        return msgspec.json.decode(data, type=Export)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput("checkpoints", f"not a merchant-code checkpoint export: {exc}") from None


async def verify(conn: asyncpg.Connection, exported: Export | None = None) -> Report:
    """Recompute the sealed chain, then hold it to every checkpoint: the database's, checked with
    the database's keys, and an export's, checked with the keys it carries. Rows not sealed yet
    are counted, not judged."""
    pending = await audit.pending(conn)
    own = await stored(conn)
    sources = [("checkpoint", own, qr.KeySet.from_document(await qr.keyset_document(conn)))]
    if exported is not None:
        pinned = qr.KeySet.from_document(qr.KeySetDocument(keys=exported.keys, revoked_codes=[]))
        sources.append(("exported checkpoint", exported.checkpoints, pinned))
    walked = await audit.walk(conn, keep={c.head_id for _, cps, _ in sources for c in cps})
    problems: list[str] = []
    if walked.broken is not None:
        problems.append(
            f"audit chain broken at audit_event id {walked.broken.id}: {walked.broken.reason}"
            f" ({walked.checked} rows before it are intact)"
        )
    good = skipped = 0
    for label, checkpoints, keys in sources:
        held, revoked, found = _hold(label, checkpoints, keys, walked)
        good, skipped = good + held, skipped + revoked
        problems.extend(found)
    if exported is not None:
        problems.extend(_missing(own, exported.checkpoints))
    return Report(
        checked=walked.checked,
        unsealed=pending.count,
        oldest_unsealed=pending.oldest,
        checkpoints=good,
        skipped=skipped,
        problems=problems,
    )


def _hold(
    label: str, checkpoints: Sequence[Checkpoint], keys: qr.KeySet, walked: audit.Walked
) -> tuple[int, int, list[str]]:
    """(checkpoints that hold, checkpoints skipped, problems) of one source."""
    problems: list[str] = []
    beyond: list[Checkpoint] = []
    held = skipped = 0
    for c in checkpoints:
        entry = keys.keys.get(c.kid)
        if entry is None:
            problems.append(f"{label} {c.id} is signed by key {c.kid}, which is not in the key set")
            continue
        status, public = entry
        if status == "revoked":
            skipped += 1
            continue
        try:
            public.verify(c.signature, message(c.at, c.head_id, c.head_hash, c.kid, c.head_seq))
        except (InvalidSignature, ValueError):
            problems.append(f"{label} {c.id} does not verify: its signature was not made by key {c.kid}")
            continue
        if walked.hashes.get(c.head_id) == c.head_hash:
            held += 1
        elif walked.broken is None and walked.last_seq < c.place:
            beyond.append(c)
        elif walked.broken is None:
            problems.append(
                f"{label} {c.id} signed head row {c.head_id}, which the chain does not hold with"
                " that hash: the history before it was rewritten"
            )
    if beyond:
        worst = max(beyond, key=lambda c: c.place)
        end = walked.last_id or 0
        problems.append(
            f"audit chain truncated: chain ends at row {end} but {label} {worst.id} signed head row"
            f" {worst.head_id} > {end} (at {worst.at:%Y-%m-%d %H:%M:%S%z}, key {worst.kid});"
            f" {len(beyond)} checkpoint(s) name rows that are gone"
        )
    return held, skipped, problems


def _missing(own: Sequence[Checkpoint], exported: Sequence[Checkpoint]) -> list[str]:
    """Exported checkpoints the database no longer holds (or holds otherwise): deleted by hand."""
    kept = {c.id: c for c in own}
    gone = [c.id for c in exported if kept.get(c.id) != c]
    if not gone:
        return []
    shown = ", ".join(str(i) for i in gone[:10]) + (" ..." if len(gone) > 10 else "")
    return [f"{len(gone)} exported checkpoint(s) are not in the database as exported: {shown}"]
