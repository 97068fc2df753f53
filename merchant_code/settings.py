"""Settings: one frozen struct, built from MERCHANT_CODE_* variables by `Settings.from_env`.

Nothing reads the environment at import; the CLI (or a test) builds the struct and passes it
into `create_app(settings)`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

PREFIX = "MERCHANT_CODE_"
# read by the test suite or dev.py, not by the service
# LIMITS_SHM: the serve command's shared table of per-client buckets, named to its workers
NOT_SETTINGS = frozenset(
    {
        "TEST_DATABASE_URL",
        "TEST_SLOWNESS",
        "CHROMIUM",
        "FUZZ_EXAMPLES",
        "HTTP_FUZZ_EXAMPLES",
        "LIMITS_SHM",
    }
)

DEFAULT_TIMEZONE = "Asia/Shanghai"
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Count = Annotated[int, msgspec.Meta(ge=1, le=512)]


def cores() -> int:
    """The cores this process may run on (a container may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class SettingsError(Exception):
    """A setting has a bad value; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # None: start the embedded PostgreSQL in `pg_data`
    database_url: str | None = None
    # optional read replica for scans
    replica_url: str | None = None
    pg_data: str = "./var/pg"
    data_dir: str = "./var"
    host: str = "127.0.0.1"
    port: Port = 8000
    workers: Count = 1
    # the base of every URL printed on a sticker; defaults to http://host:port
    public_url: str | None = None
    pool_min: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1
    # connections of each worker process for requests (one per request at most)
    pool_max: Count = 10
    # scans (and /readyz) have a pool of their own, so a burst of writes or searches that holds
    # every request connection does not make a citizen's scan wait
    scan_pool_max: Annotated[int, msgspec.Meta(ge=1, le=64)] = 5
    # a second, small pool per worker for the throttles that must be counted before a request's
    # work and survive its failure (logins, password changes, claims, complaints, reopen, Open311):
    # never the request pool, whose connections may all be held by requests waiting for a throttle
    side_pool_max: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    # the public API (searches above all: one may cost a good part of a second of database time)
    # is a bulkhead of its own per worker: this many at once on as many connections of their own;
    # more wait at most search_wait_seconds, then 503 with Retry-After, never a queue of seconds
    search_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    search_wait_seconds: Annotated[float, msgspec.Meta(ge=0, le=10)] = 0.2
    # statement_timeout of each kind's connections (0: none): a runaway statement of one kind
    # ends instead of holding its share; jobs (feed pulls, rebuilds, exports) run long statements
    scan_statement_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 2.0
    search_statement_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1.0
    request_statement_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    jobs_statement_seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 600.0
    # background jobs (feed pulls, profile drains, pushes, exports) have a pool of their own,
    # so that however much of it they take, requests still get theirs
    jobs_pool_max: Annotated[int, msgspec.Meta(ge=3, le=64)] = 6
    # feed sources pulled at once by one worker (each holds one connection of the jobs pool)
    feed_concurrency: Annotated[int, msgspec.Meta(ge=1, le=32)] = 2
    # requests with a body (writes) one worker handles at once; more wait up to acquire_seconds,
    # then 503: the rest of POOL_MAX is left to reads, and the scans' event loop stays short
    write_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 6
    # seconds a request waits for a pooled connection before it is answered 503 with Retry-After
    acquire_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    # a request body must arrive within body_seconds plus one second per body_min_rate bytes
    # received: a slow client is answered 408, and holds no connection while it sends
    body_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    body_min_rate: Annotated[int, msgspec.Meta(ge=1)] = 32_768
    scheduler: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    demo_shops: Annotated[int, msgspec.Meta(ge=1, le=5_000_000)] = 2000
    demo_seed: int = 2026
    # set by `merchant-code demo` for its workers: `/` then shows where to look and the logins
    demo: bool = False
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_048_576
    # signs session tokens; unset: generated once into DATA_DIR/secret_key and kept there
    secret_key: str | None = None
    token_minutes: Annotated[int, msgspec.Meta(ge=1, le=43_200)] = 720
    # failed logins or claims allowed per account and per address in `throttle_minutes`
    throttle_failures: Annotated[int, msgspec.Meta(ge=1)] = 5
    throttle_minutes: Annotated[int, msgspec.Meta(ge=1)] = 15
    # citizen profiles kept rendered in each worker process (an LRU); each entry is a few KB
    scan_cache_entries: Annotated[int, msgspec.Meta(ge=0)] = 50_000
    # how often each worker asks which profiles and keys changed since its watermark (a cached
    # scan makes no round trip; a change shows within about this long)
    scan_watermark_seconds: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    # how long opening a connection to PostgreSQL may take before the request gets 503
    connect_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    # comma-separated addresses of reverse proxies whose X-Forwarded-For is believed
    trusted_proxies: str = ""
    # scans (/s/...) one client address may send a second on average, with a burst to spare;
    # past that, 429 for that address only (0: no limit)
    scan_rate: Annotated[float, msgspec.Meta(ge=0)] = 20.0
    scan_burst: Annotated[int, msgspec.Meta(ge=1)] = 120
    # the regulator's time zone: cron recurrences of policies and the day reminders are sent for
    timezone: str = DEFAULT_TIMEZONE
    # webhook subscribers may be at private or loopback addresses (systems inside the regulator's
    # own network); by default a subscription's URL must lead to a public address
    webhooks_allow_private: bool = False
    # the jurisdiction_id Open311 clients may send (GeoReport v2 suggests the jurisdiction's
    # website domain without www); unset: the host of PUBLIC_URL without www.
    open311_jurisdiction: (
        Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]([A-Za-z0-9._:-]{0,98}[A-Za-z0-9])?$")] | None
    ) = None

    @property
    def trusted_proxy_set(self) -> frozenset[str]:
        return frozenset(a.strip() for a in self.trusted_proxies.split(",") if a.strip())

    def __post_init__(self) -> None:
        for name in ("database_url", "replica_url"):
            value = getattr(self, name)
            if value is not None:
                check_database_url(value, PREFIX + name.upper())
        if self.public_url is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", self.public_url):
            raise ValueError(f"{PREFIX}PUBLIC_URL must look like https://host[/path]")
        if self.secret_key is not None and len(self.secret_key) < 32:
            raise ValueError(f"{PREFIX}SECRET_KEY must be at least 32 characters")
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(f"{PREFIX}TIMEZONE must name a time zone such as Asia/Shanghai") from None
        if self.jobs_pool_max < self.feed_concurrency + 2:
            raise ValueError(
                f"{PREFIX}JOBS_POOL_MAX must leave two connections beside {PREFIX}FEED_CONCURRENCY"
                " (for the profile drain and the policy sends)"
            )
        if self.pool_min > self.pool_max:
            raise ValueError(f"{PREFIX}POOL_MIN cannot be larger than {PREFIX}POOL_MAX")

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from MERCHANT_CODE_* variables, with command-line overrides on top."""
        raw: dict[str, Any] = {}
        known = set(cls.__struct_fields__)
        for key, value in env.items():
            if not key.startswith(PREFIX) or key[len(PREFIX) :] in NOT_SETTINGS:
                continue
            name = key[len(PREFIX) :].lower()
            if name not in known:
                raise SettingsError(f"{key} is not a setting (known: {_names(known)})")
            raw[name] = value
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.parse(raw, strict=False)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, strict: bool = True) -> Settings:
        try:
            return msgspec.convert(dict(raw), cls, strict=strict)
        except msgspec.ValidationError as exc:
            raise SettingsError(_explain(str(exc), raw)) from None


def check_database_url(url: str, name: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"postgresql", "postgres"}:
        raise ValueError(f"{name} must start with postgresql:// (postgresql://user@host:5432/db)")
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ValueError(f"{name} has a port that is not a number") from None
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise ValueError(f"{name} names no database (postgresql://user@host:5432/DBNAME)")


def _names(known: set[str]) -> str:
    return ", ".join(PREFIX + n.upper() for n in sorted(known))


def _explain(message: str, raw: Mapping[str, Any]) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.port`"; people set MERCHANT_CODE_PORT=abc
    match = re.search(r"at `\$\.(\w+)`", message)
    if not match:
        return message
    name = match.group(1)
    text = re.sub(r"\s*-\s*at `\$\.\w+`", "", message).replace("`", "")
    text = text.replace("Expected int", "expected a whole number").replace(
        "Expected bool", "expected true or false"
    )
    text = re.sub(r", got str$", "", text)
    return f"{PREFIX}{name.upper()}={raw.get(name)!r}: {text[:1].lower()}{text[1:]}"
