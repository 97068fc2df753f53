"""Running the `merchant-code` command line against a test's database, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m merchant_code ARGS` with this database and no other MERCHANT_CODE_ setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MERCHANT_CODE_")}
    env["MERCHANT_CODE_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "merchant_code", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        input=stdin,
    )
