"""What the scan's hot path pays for its per-client limit: `allow()` of the shared table (the
serve command's, in shared memory) against the process-local dict it replaced and an empty call,
in the same process. One address scanning (the hash cached) and many (each hashed).

    .venv/bin/python bench/limits_bench.py [--record]

--record appends a line to bench/results/limits.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import timeit
from pathlib import Path
from typing import Any

from merchant_code import shared_buckets
from merchant_code.flood import FloodGate

CALLS = 200_000
RESULTS = Path(__file__).resolve().parent / "results" / "limits.jsonl"


def _per_call(func: Any) -> float:
    """Microseconds a call, the best of five runs."""
    return min(timeit.repeat(func, number=CALLS, repeat=5)) / CALLS * 1e6


def measure() -> dict[str, float]:
    table = shared_buckets.create()
    shared = shared_buckets.SharedGate(table.buf, b"scan", 1e9, 10**9)
    local = FloodGate(1e9, 10**9)
    many = [f"10.0.{n >> 8}.{n & 255}" for n in range(50_000)]
    try:
        figures = {"empty_us": _per_call(lambda: None)}
        for name, gate in (("local", local), ("shared", shared)):
            gate.allow("203.0.113.9")
            figures[f"{name}_one_address_us"] = _per_call(lambda g=gate: g.allow("203.0.113.9"))
            spread = iter(many * (CALLS * 5 // len(many) + 1))
            figures[f"{name}_many_addresses_us"] = _per_call(lambda g=gate, s=spread: g.allow(next(s)))
        return {k: round(v, 3) for k, v in figures.items()}
    finally:
        shared.close()
        table.close()
        table.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    figures = measure()
    print(json.dumps(figures))
    if args.record:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout
        line = {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": commit.strip(),
            "machine": {
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
            },
            **figures,
        }
        with RESULTS.open("a") as out:
            out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
