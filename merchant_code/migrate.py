"""Forward-only migrations: sql/migrations/NNNN_slug.sql, applied in order, each in its own
transaction, recorded with a SHA-256 checksum. An applied file that was edited stops everything.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import asyncpg
import msgspec

from merchant_code.db import SQL_DIR, fetch_all, queries

MIGRATIONS_DIR = SQL_DIR / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# any constant: several instances starting at once take turns on this transaction lock
_LOCK_KEY = 7_310_104_001


class MigrationError(Exception):
    """Migrations cannot be applied; the message names the file."""


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    checksum: str
    sql: str


class Applied(msgspec.Struct, frozen=True):
    version: int
    name: str
    checksum: str


def load(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_slug.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used by {found[version].name}")
        data = path.read_bytes()
        found[version] = Migration(version, path.name, hashlib.sha256(data).hexdigest(), data.decode())
    return [found[v] for v in sorted(found)]


async def applied(conn: asyncpg.Connection) -> list[Applied]:
    if not await queries.has_migration_table(conn):
        return []
    return await fetch_all(queries.list_applied_migrations(conn), Applied)


def problems(files: list[Migration], done: list[Applied]) -> list[str]:
    """What stands between the database and the files: edits, unknown rows, pending files."""
    by_version = {m.version: m for m in files}
    issues = []
    for row in done:
        source = by_version.get(row.version)
        if source is None:
            issues.append(f"{row.name} was applied but its file is gone")
        elif source.checksum != row.checksum:
            issues.append(f"{row.name} was edited after it was applied (checksum differs)")
    return issues


def pending(files: list[Migration], done: list[Applied]) -> list[Migration]:
    versions = {row.version for row in done}
    return [m for m in files if m.version not in versions]


async def migrate(conn: asyncpg.Connection, files: list[Migration] | None = None) -> list[str]:
    """Apply what is pending; returns the names applied. Raises MigrationError."""
    files = load() if files is None else files
    async with conn.transaction():
        await queries.lock_migrations(conn, key=_LOCK_KEY)
        await queries.create_migration_table(conn)
    names = []
    for migration in files:
        async with conn.transaction():
            await queries.lock_migrations(conn, key=_LOCK_KEY)
            done = await applied(conn)
            if issues := problems(files, done):
                raise MigrationError("; ".join(issues))
            if migration.version in {row.version for row in done}:
                continue
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.name} failed and was rolled back: {exc}") from None
            await queries.record_migration(
                conn, version=migration.version, name=migration.name, checksum=migration.checksum
            )
            names.append(migration.name)
    return names
