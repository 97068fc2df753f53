"""Policy deliveries through the outbox, as a shop and a gateway would notice them: several service
instances in separate processes on one database, instances killed at random moments, a scheduler
that was down over a send time, a gateway that fails, hangs and then answers, and the SSRF rule.

The gateway is a real HTTP server on loopback (tests/webhook_receiver.py); the instances are real
processes (tests/policy_worker.py) running the same jobs as `policies.due_job`.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from merchant_code import auth, db, policies
from tests import factories
from tests.webhook_receiver import Receiver, Step

TZ = "Asia/Shanghai"
ROOT = Path(__file__).resolve().parent.parent
BASE_URL = "https://merchant.example"
SECRET = "gateway-shared-secret"
AREA = "310199001"


def manager(account_id: int) -> auth.Principal:
    return auth.Principal(
        account_id=account_id, login="m", role="manager", session_id="s", area_path="310199"
    )


async def district(
    conn: asyncpg.Connection,
    shops: int,
    channel_url: str,
    *,
    allow_private: bool = True,
    secret: str | None = None,
) -> tuple[auth.Principal, list[str]]:
    """`shops` catering shops in one subdistrict, a manager of the district, and the gateway."""
    area_id = await factories.area(conn, AREA, "一街道")
    codes: list[str] = []
    for i in range(shops):
        shop_id, code = await factories.shop(conn, name=f"面馆{i}", trade="catering")
        await factories.move_shop(conn, shop_id, area_id)
        codes.append(code)
    await conn.execute(
        "INSERT INTO delivery_channel (name, url, secret, allow_private) VALUES ('gateway', $1, $2, $3)",
        channel_url,
        secret,
        allow_private,
    )
    account_id = await factories.account(conn, "manager1", "manager", area_code="310199")
    return manager(account_id), codes


def policy_in(title: str, send_at: datetime.datetime | None = None) -> policies.PolicyIn:
    return policies.PolicyIn(
        title=title, body_md="请**自查**", area_codes=[AREA], trades=["catering"], send_at=send_at
    )


async def due_times(conn: asyncpg.Connection) -> dict[str, datetime.datetime]:
    """Each policy's send time as stored when it was written (its occurrence)."""
    rows = await conn.fetch("SELECT public_id::text AS id, next_at FROM policy WHERE reminder IS NULL")
    return {r["id"]: r["next_at"] for r in rows}


def expected_keys(due: dict[str, datetime.datetime], codes: list[str]) -> set[str]:
    """The Idempotency-Key of every (policy, shop) the gateway must hear about, computed from what
    was written, not from the delivery rows (a row never made would not be missed otherwise)."""
    return {
        policies.idempotency_key(
            {"policy_id": pid, "shop_code": code, "occurrence": at, "channel": "gateway"}
        )
        for pid, at in due.items()
        for code in codes
    }


def check_payloads(receiver: Receiver, due: dict[str, datetime.datetime], codes: list[str]) -> None:
    """Every request names its delivery in the body as in the header, for a known policy and shop,
    and carries a valid signature when the gateway has a secret."""
    for request in receiver.requests():
        body = msgspec.json.decode(request.body)
        assert body["delivery"] == request.key
        assert body["policy"] in due
        assert body["shop"]["code"] in codes
        assert body["inbox_url"] == f"{BASE_URL}/inbox"
        if receiver.secret is not None:
            assert request.signature_ok, "a request without a valid signature"


async def check_everything_delivered_once(
    conn: asyncpg.Connection, due: dict[str, datetime.datetime], codes: list[str]
) -> None:
    """One inbox row and one gateway row per (policy, shop), each delivered; inbox rows on the
    first attempt (their claim and delivery are one statement); every policy sent."""
    expected = len(due) * len(codes)
    rows = await conn.fetch(
        "SELECT d.channel, p.public_id::text AS policy, s.code AS shop, count(*) AS n,"
        " bool_and(d.status = 'delivered' AND d.delivered_at IS NOT NULL) AS delivered,"
        " max(d.attempts) AS attempts, max(d.status) AS status"
        " FROM delivery d JOIN policy p ON p.id = d.policy_id JOIN shop s ON s.id = d.shop_id"
        " GROUP BY 1, 2, 3"
    )
    for channel in ("inbox", "gateway"):
        mine = [r for r in rows if r["channel"] == channel]
        assert {(r["policy"], r["shop"]) for r in mine} == {(p, c) for p in due for c in codes}, channel
        assert len(mine) == expected
        assert [r for r in mine if r["n"] != 1] == [], f"{channel}: a (policy, shop) with several rows"
        not_delivered = [(r["policy"], r["shop"], r["status"]) for r in mine if not r["delivered"]]
        assert not_delivered == [], f"{channel}: not delivered"
    assert {r["attempts"] for r in rows if r["channel"] == "inbox"} == {1}
    statuses = await conn.fetch("SELECT status, last_sent_at FROM policy WHERE reminder IS NULL")
    assert {r["status"] for r in statuses} == {"sent"}
    assert all(r["last_sent_at"] is not None for r in statuses)


# -------------------------------------------------------------------------- worker processes


async def start_worker(db_url: str, *options: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.policy_worker",
        db_url,
        BASE_URL,
        *options,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_ready(proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line == b"ready\n", line


async def reap(procs: list[asyncio.subprocess.Process]) -> list[tuple[int, bytes, bytes]]:
    """Kill whatever still runs and collect every process's exit code and output."""
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
    results = []
    for proc in procs:
        out, err = await proc.communicate()
        assert proc.returncode is not None
        results.append((proc.returncode, out, err))
    return results


async def run_to_completion(procs: list[asyncio.subprocess.Process], timeout: float) -> list[dict[str, int]]:
    """Wait for workers that stop by themselves once all work is done (killed after `timeout`);
    what each did."""
    try:
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout)
        results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    except TimeoutError:
        results = list(await reap(procs))
    except BaseException:
        await reap(procs)
        raise
    stats = []
    for code, out, err in results:
        assert code == 0, f"a worker ended with {code}:\n{out.decode()}\n{err.decode()[-3000:]}"
        stats.append(json.loads(out.decode().splitlines()[-1]))
    return stats


# ------------------------------------------------------------------ several instances at once

POLICIES = 100
SHOPS = 30


@pytest.mark.slow
@pytest.mark.parametrize("instances", [2, 3])
async def test_several_instances_in_separate_processes_deliver_every_policy_exactly_once(
    db_url: str, conn: asyncpg.Connection, instances: int
) -> None:
    with Receiver(secret=SECRET) as receiver:
        me, codes = await district(conn, SHOPS, receiver.url, secret=SECRET)
        first = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
        for i in range(POLICIES):
            send_at = first + datetime.timedelta(milliseconds=50 * i)
            await policies.create(conn, me, policy_in(f"政策{i}", send_at), tz=TZ)
        due = await due_times(conn)
        assert len(set(due.values())) == POLICIES  # 100 distinct send times, over five seconds
        # the profile worker has caught up: the triggers on `delivery` start from an empty queue
        await conn.execute("DELETE FROM profile_dirty")

        procs = [
            await start_worker(db_url, "--lease", "3", "--batch", "50", "--deadline", "60")
            for _ in range(instances)
        ]
        stats = await run_to_completion(procs, timeout=90)
        assert receiver.wait_idle()

        expected = POLICIES * SHOPS
        # the instances together materialised each delivery once and put each in an inbox once
        assert sum(s["sent"] for s in stats) == 2 * expected
        assert sum(s["inbox"] for s in stats) == expected
        await check_everything_delivered_once(conn, due, codes)
        # the gateway heard of every delivery, under one key each, and applied each once
        want = expected_keys(due, codes)
        keys = receiver.keys()
        assert None not in keys
        assert set(keys) == want, (len(set(keys) - want), len(want - set(keys)))
        assert len(set(keys)) == expected
        # no instance died and no batch outlived its lease: each delivery was POSTed once
        assert len(keys) == expected, Counter(Counter(keys).values())
        assert receiver.applied == Counter(dict.fromkeys(want, 1))
        check_payloads(receiver, due, codes)


# ------------------------------------------------------------- instances killed at random


@pytest.mark.slow
async def test_instances_killed_between_claim_and_commit_lose_nothing_and_repeat_nothing_in_effect(
    db_url: str, conn: asyncpg.Connection
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    shops, count = 10, 30
    # a third of the answers take 0.4 s, so a kill often lands after the POST, before the outcome
    with Receiver(secret=SECRET, slow_share=0.35, slow_delay=0.4, seed=seed) as receiver:
        me, codes = await district(conn, shops, receiver.url, secret=SECRET)
        for i in range(count):
            await policies.create(conn, me, policy_in(f"通知{i}"), tz=TZ)
        due = await due_times(conn)
        await conn.execute("DELETE FROM profile_dirty")
        options = ("--lease", "1.5", "--batch", "8", "--deadline", "60")

        kills = 0
        for _ in range(6):
            procs = [await start_worker(db_url, *options) for _ in range(2)]
            try:
                for proc in procs:
                    await wait_ready(proc)
                for proc in procs:
                    await asyncio.sleep(rng.uniform(0.05, 1.0))
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGKILL)
                        kills += 1
            finally:
                await reap(procs)
        assert kills >= 6, f"seed {seed}: the workers ended before they could be killed"
        # claims whose holder died: leased (attempts raised) with no outcome, or claimed again since
        held = await conn.fetch(
            "SELECT d.id, p.public_id::text AS policy_id, s.code AS shop_code, d.occurrence, d.channel,"
            " d.status, d.attempts FROM delivery d JOIN policy p ON p.id = d.policy_id"
            " JOIN shop s ON s.id = d.shop_id"
            " WHERE d.channel = 'gateway' AND (d.attempts > 1 OR (d.status = 'pending' AND d.attempts > 0))"
        )
        # and some of them between the POST and the outcome: the gateway has it, the outbox does not know
        seen = set(receiver.keys())
        posted = [r for r in held if r["status"] == "pending" and policies.idempotency_key(r) in seen]
        story = f"seed {seed}: {kills} kills, {len(held)} claims lost, {len(posted)} of them after the POST"
        assert held, f"{story}: no kill landed between a claim and its outcome"
        assert posted, f"{story}: no kill landed between a POST and its outcome"

        # instances that come back (and are left alone) finish what the killed ones held
        survivors = [await start_worker(db_url, *options) for _ in range(2)]
        await run_to_completion(survivors, timeout=90)
        assert receiver.wait_idle()

        await check_everything_delivered_once(conn, due, codes)
        want = expected_keys(due, codes)
        keys = receiver.keys()
        assert set(keys) == want, story
        # retransmissions carry the key of the delivery they repeat, so the gateway applies each once
        assert receiver.applied == Counter(dict.fromkeys(want, 1)), story
        assert len(keys) > len(want), f"{story}: no retransmission was exercised"
        check_payloads(receiver, due, codes)


# --------------------------------------------------------------- down over a send time


async def test_a_policy_due_while_every_instance_was_down_is_sent_once_when_one_is_back(
    conn: asyncpg.Connection,
) -> None:
    with Receiver() as receiver:
        me, codes = await district(conn, 3, receiver.url)
        written = datetime.datetime.now(datetime.UTC)
        due_at = written + datetime.timedelta(minutes=10)
        public_id = await policies.create(conn, me, policy_in("周五检查", due_at), tz=TZ, now=written)
        assert await policies.send_due(conn, TZ, now=due_at - datetime.timedelta(seconds=1)) == 0

        # nothing runs over the send time; the first run is three hours later
        back = due_at + datetime.timedelta(hours=3)
        assert await policies.send_due(conn, TZ, now=back) == 2 * len(codes)
        assert await policies.deliver_inbox(conn) == len(codes)
        assert await policies.deliver_channels(conn, BASE_URL, lease_seconds=30, timeout=2) == len(codes)

        # a second run (another instance, a restart) and a later one add and send nothing
        for later in (back, back + datetime.timedelta(days=1)):
            assert await policies.send_due(conn, TZ, now=later) == 0
            assert await policies.deliver_inbox(conn) == 0
            assert await policies.deliver_channels(conn, BASE_URL, lease_seconds=30, timeout=2) == 0

        due = {public_id: due_at}
        await check_everything_delivered_once(conn, due, codes)
        occurrences = await conn.fetch("SELECT DISTINCT occurrence FROM delivery")
        assert [r["occurrence"] for r in occurrences] == [due_at]  # the due time, not the run's
        assert Counter(receiver.keys()) == Counter(expected_keys(due, codes))  # each once


# ----------------------------------------------------------------- a gateway that fails


async def one_gateway_delivery(conn: asyncpg.Connection, receiver: Receiver) -> tuple[int, str]:
    """One shop, one policy sent now: (the policy's row id, the gateway delivery's key)."""
    me, codes = await district(conn, 1, receiver.url)
    public_id = await policies.create(conn, me, policy_in("燃气安全"), tz=TZ)
    (key,) = expected_keys(await due_times(conn), codes)
    assert await policies.send_due(conn, TZ) == 2
    assert await policies.deliver_inbox(conn) == 1
    policy_id: int = await conn.fetchval("SELECT id FROM policy WHERE public_id::text = $1", public_id)
    return policy_id, key


async def gateway_row(conn: asyncpg.Connection) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT status, attempts, last_error, delivered_at,"
        " extract(epoch FROM next_attempt_at - clock_timestamp())::float8 AS wait"
        " FROM delivery WHERE channel = 'gateway'"
    )
    assert row is not None
    return dict(row)


async def time_passes(conn: asyncpg.Connection) -> None:
    """The backoff runs out: failed rows become due now."""
    await conn.execute("UPDATE delivery SET next_attempt_at = now() WHERE status = 'failed'")


async def deliver(conn: asyncpg.Connection, max_attempts: int = policies.MAX_ATTEMPTS) -> int:
    return await policies.deliver_channels(
        conn, BASE_URL, lease_seconds=30, timeout=0.5, max_attempts=max_attempts
    )


async def test_a_gateway_that_answers_500_then_hangs_then_200_gets_the_delivery_once(
    conn: asyncpg.Connection,
) -> None:
    script = [Step(500), Step(200, delay=2.0), Step(200)]
    with Receiver(script=script) as receiver:
        policy_id, key = await one_gateway_delivery(conn, receiver)

        assert await deliver(conn) == 1
        row = await gateway_row(conn)
        assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 1, "HTTP 500")
        assert 0.5 < row["wait"] <= 2.0  # backoff: 1 to 2 s after the first failure
        assert await deliver(conn) == 0  # not before its time

        await time_passes(conn)
        started = time.monotonic()
        assert await deliver(conn) == 1
        assert time.monotonic() - started < 1.5  # the 0.5 s timeout, not the gateway's 2 s
        row = await gateway_row(conn)
        assert (row["status"], row["attempts"]) == ("failed", 2)
        assert "Timeout" in row["last_error"]
        assert 1.5 < row["wait"] <= 4.0  # backoff doubles: 2 to 4 s
        assert await deliver(conn) == 0

        await time_passes(conn)
        assert await deliver(conn) == 1
        row = await gateway_row(conn)
        assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 3, None)
        assert row["delivered_at"] is not None
        await time_passes(conn)
        assert await deliver(conn) == 0

        assert receiver.wait_idle()  # the hung request has been answered too, late
        assert receiver.keys() == [key, key, key]
        assert receiver.applied == Counter({key: 1})
        reach = await db.queries.policy_reach(conn, policy_id=policy_id)
        assert (reach["channel_delivered"], reach["failed"], reach["waiting"]) == (1, 0, 0)


def http_date_in(seconds: float) -> str:
    return email.utils.format_datetime(
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds), usegmt=True
    )


@pytest.mark.parametrize("retry_after", ["120", "in 120 s as an HTTP-date"])
async def test_retry_after_from_the_gateway_sets_the_next_attempt(
    conn: asyncpg.Connection, retry_after: str
) -> None:
    value = retry_after if retry_after.isdigit() else http_date_in(120)
    with Receiver(script=[Step(503, headers=(("Retry-After", value),))]) as receiver:
        await one_gateway_delivery(conn, receiver)
        started = time.monotonic()
        assert await deliver(conn) == 1
        assert time.monotonic() - started < 5  # the wait is the outbox's, not a sleep in the worker
        row = await gateway_row(conn)
        assert (row["status"], row["last_error"]) == ("failed", "HTTP 503")
        assert 115 < row["wait"] <= 120
        assert await deliver(conn) == 0
        assert len(receiver.keys()) == 1


async def test_a_delivery_that_keeps_failing_is_dead_after_max_attempts(conn: asyncpg.Connection) -> None:
    with Receiver(script=[Step(500)] * 5) as receiver:
        policy_id, key = await one_gateway_delivery(conn, receiver)
        for attempt in (1, 2):
            assert await deliver(conn, max_attempts=3) == 1
            row = await gateway_row(conn)
            assert (row["status"], row["attempts"]) == ("failed", attempt)
            await time_passes(conn)
        assert await deliver(conn, max_attempts=3) == 1
        row = await gateway_row(conn)
        assert (row["status"], row["attempts"], row["last_error"]) == ("dead", 3, "HTTP 500")

        # however long one waits, a dead delivery is not tried again
        await conn.execute("UPDATE delivery SET next_attempt_at = now() - interval '1 day'")
        assert await deliver(conn, max_attempts=3) == 0
        assert receiver.keys() == [key, key, key]
        assert receiver.applied == Counter()
        reach = await db.queries.policy_reach(conn, policy_id=policy_id)
        assert (reach["channel_delivered"], reach["failed"], reach["waiting"]) == (0, 1, 0)


# ----------------------------------------------------------------------------------- SSRF


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_gateway_on_loopback_without_allow_private_is_never_connected_to(
    conn: asyncpg.Connection, host: str
) -> None:
    with Receiver() as receiver:
        url = receiver.url.replace("127.0.0.1", host)
        me, _ = await district(conn, 2, url, allow_private=False)
        await policies.create(conn, me, policy_in("消防检查"), tz=TZ)
        assert await policies.send_due(conn, TZ) == 4
        for _ in range(2):
            assert await deliver(conn) == 2
            rows = await conn.fetch("SELECT status, last_error FROM delivery WHERE channel = 'gateway'")
            for row in rows:
                assert row["status"] == "failed"
                assert row["last_error"].startswith("Refused: ")
                assert "loopback" in row["last_error"]
                assert host in row["last_error"]
            await time_passes(conn)
        assert receiver.wait_idle()
        assert receiver.requests() == []


async def test_a_misconfigured_channel_fails_its_own_rows_and_holds_up_no_other(
    conn: asyncpg.Connection,
) -> None:
    """A URL the CLI and the table accept but httpx cannot use (a port that is not a number)."""
    with Receiver() as receiver:
        me, codes = await district(conn, 3, receiver.url)
        await conn.execute(
            "INSERT INTO delivery_channel (name, url, allow_private) VALUES ('broken', $1, true)",
            "http://127.0.0.1:gateway/hook",
        )
        await policies.create(conn, me, policy_in("食品抽检"), tz=TZ)
        due = await due_times(conn)
        assert await policies.send_due(conn, TZ) == 3 * len(codes)
        assert await deliver(conn) == 2 * len(codes)

        rows = await conn.fetch("SELECT channel, status, last_error FROM delivery WHERE channel <> 'inbox'")
        assert {(r["channel"], r["status"]) for r in rows} == {("gateway", "delivered"), ("broken", "failed")}
        assert all(r["last_error"].startswith("InvalidURL") for r in rows if r["channel"] == "broken")
        assert Counter(receiver.keys()) == Counter(expected_keys(due, codes))  # each once
        # every claim got its outcome (none is left leased, to be POSTed again when the lease ends),
        # and after the backoff only the broken channel's rows are tried again
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM delivery WHERE channel <> 'inbox' AND status = 'pending'"
            )
            == 0
        )
        await time_passes(conn)
        assert await deliver(conn) == len(codes)
        assert len(receiver.keys()) == len(codes)
