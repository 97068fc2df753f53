"""Benchmark: drawing the sticker sheet for 10,000 shops, on one core and on every core.

    .venv/bin/python bench/sheet_bench.py [--shops 10000] [--base https://hsm.xuhui.gov.cn]

The shops are synthetic (random valid codes, demo-style names) and signed with a fresh Ed25519
key, so no database is needed: the cost measured is signing, `segno.make_qr` and drawing the A4
pages, which is what `merchant-code qr sheet` spends its time on. The baseline is the same work in
one process; the ratio says how well every core is used. Appends to bench/results/sheet.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from merchant_code import qr, stickers
from merchant_code.codes import new_shop_code

RESULTS = Path(__file__).resolve().parent / "results" / "sheet.jsonl"
NAMES = ["老王面馆", "天平茶餐厅", "长桥生鲜超市", "一品美容院", "枫林大药房", "康健服装店", "徐家汇小吃"]


def cells(shops: int, base: str) -> tuple[list[stickers.Cell], float]:
    rng = random.Random(2026)
    key = qr.SigningKey(kid="bnch", private=Ed25519PrivateKey.generate())
    started = time.perf_counter()
    made = []
    for n in range(shops):
        code = new_shop_code(rng.getrandbits(60))
        made.append(stickers.Cell(key.payload(base, code), code, f"{rng.choice(NAMES)}{n}"))
    return made, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shops", type=int, default=10_000)
    parser.add_argument("--base", default="https://hsm.xuhui.gov.cn")
    args = parser.parse_args()
    made, sign_s = cells(args.shops, args.base)
    runs = {}
    for label, workers in (("one_core", 1), ("every_core", stickers.cores())):
        started = time.perf_counter()
        data, processes = stickers.render_sheet(made, f"bench {secrets.token_hex(2)}", workers=workers)
        seconds = time.perf_counter() - started
        runs[label] = {
            "workers": workers,
            "processes": processes,
            "seconds": round(seconds, 1),
            "bytes": len(data),
        }
        print(
            f"{label:10} {workers} worker(s), {processes} process(es) drew it:"
            f" {seconds:.1f} s, {len(data):,} bytes"
        )
    result = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cores": stickers.cores()},
        "shops": args.shops,
        "pages": -(-args.shops // stickers.PER_PAGE),
        "signing_seconds": round(sign_s, 2),
        "runs": runs,
        "speedup_every_core_over_one": round(runs["one_core"]["seconds"] / runs["every_core"]["seconds"], 2),
    }
    print(json.dumps(result, ensure_ascii=False))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
