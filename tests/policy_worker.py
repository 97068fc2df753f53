"""One service instance's policy jobs, as a separate process for the outbox tests.

    python -m tests.policy_worker DB_URL BASE_URL [--lease S] [--batch N] [--deadline S] ...

Prints `ready` once connected, then loops what `policies.due_job` does (send_due, deliver_inbox,
deliver_channels) until no policy is scheduled and no delivery waits, and prints one JSON line of
what it did. Exit 0 when all work is done, 3 when the deadline passed first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from merchant_code import db, policies

REMAINING = (
    "SELECT (SELECT count(*) FROM policy WHERE status = 'scheduled' AND reminder IS NULL)"
    " + (SELECT count(*) FROM delivery WHERE status IN ('pending', 'failed'))"
)


async def run(args: argparse.Namespace) -> int:
    conn = await db.connect(args.db_url)
    stats = {"sent": 0, "inbox": 0, "claimed": 0, "loops": 0}
    print("ready", flush=True)
    deadline = time.monotonic() + args.deadline
    try:
        while time.monotonic() < deadline:
            stats["loops"] += 1
            sent = await policies.send_due(conn, args.tz)
            inbox = await policies.deliver_inbox(conn)
            claimed = await policies.deliver_channels(
                conn,
                args.base_url,
                batch=args.batch,
                lease_seconds=args.lease,
                max_attempts=args.max_attempts,
                timeout=args.timeout,
            )
            stats["sent"] += sent
            stats["inbox"] += inbox
            stats["claimed"] += claimed
            if sent == inbox == claimed == 0:
                if await conn.fetchval(REMAINING) == 0:
                    print(json.dumps(stats), flush=True)
                    return 0
                await asyncio.sleep(args.idle)  # a worker's idle poll, as due_job's interval is
        print(json.dumps(stats), flush=True)
        return 3
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_url")
    parser.add_argument("base_url")
    parser.add_argument("--tz", default="Asia/Shanghai")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=policies.CHANNEL_BATCH)
    parser.add_argument("--max-attempts", type=int, default=policies.MAX_ATTEMPTS)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--idle", type=float, default=0.05)
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
