"""A flood of scans from one address is limited without slowing anyone else."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from litestar.testing import AsyncTestClient

from merchant_code.app import create_app
from merchant_code.flood import FloodGate
from merchant_code.settings import Settings
from tests import factories


def test_the_bucket_refills_at_its_rate() -> None:
    gate = FloodGate(rate=2.0, burst=3)
    assert [gate.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert gate.allow("b", now=0.0)  # another address has its own bucket
    assert gate.retry_after("a") == 1
    assert not gate.allow("a", now=0.2)
    assert gate.allow("a", now=0.6)  # half a second at 2 a second: one more
    assert not gate.allow("a", now=0.6)
    assert [gate.allow("a", now=10.0) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]  # never more than the burst


async def test_one_address_flooding_scans_is_refused_and_the_others_are_not(
    db_url: str, tmp_path: Path, conn: asyncpg.Connection
) -> None:
    _, code = await factories.shop(conn)
    settings = Settings(
        database_url=db_url,
        scheduler=False,
        data_dir=str(tmp_path),
        scan_rate=1,
        scan_burst=10,
        trusted_proxies="testclient",  # the test client plays a proxy naming each caller
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        flood = {"x-forwarded-for": "203.0.113.9"}
        statuses = [(await client.get(f"/s/{code}", headers=flood)).status_code for _ in range(15)]
        assert statuses[:10] == [200] * 10 and set(statuses[10:]) == {429}
        refused = await client.get(f"/s/{code}/sticker.svg", headers=flood)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["status"] == 429
        # everyone else scans as before
        for n in range(20):
            other = await client.get(f"/s/{code}", headers={"x-forwarded-for": f"198.51.100.{n}"})
            assert other.status_code == 200
        # and the flooding address may still use the rest of the service
        assert (await client.get("/healthz", headers=flood)).status_code == 200
