#!/usr/bin/env python3
"""The README's two commands: `python3 dev.py demo` and `python3 dev.py test`.

Standard library only, so it runs on a machine that has nothing but Python 3.11+ and pip.
It makes `.venv`, installs the project into it (again only when pyproject.toml changed),
installs what the tests need from the system's package manager when it is missing, and then
hands over to the real command inside the environment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".merchant-code-installed"


def say(msg: str) -> None:
    print(f"dev.py: {msg}", file=sys.stderr, flush=True)


def ensure_venv() -> None:
    extras = "[test]"  # one environment for both commands: the test tools are small
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return
    if not (BIN / "python").exists():
        say("creating .venv")
        venv.EnvBuilder(with_pip=True).create(VENV)
    say(f"installing merchant-code{extras} into .venv (first run takes a minute)")
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "install", "-e", f"{ROOT}{extras}"])
    STAMP.write_text(want)


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT)
    if done.returncode != 0:
        say(f"failed ({done.returncode}): {' '.join(cmd)}")
        sys.exit(done.returncode)


def _has_cjk_font() -> bool:
    if not shutil.which("fc-list"):
        return False
    listed = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True)
    return bool(listed.stdout.strip())


def ensure_chromium() -> None:
    """Page tests drive Debian's chromium, and Chinese pages need a Chinese font to be laid out
    as a phone would (widths, line breaks); install what is missing when we may."""
    packages = []
    if not (shutil.which("chromium") or os.environ.get("MERCHANT_CODE_CHROMIUM")):
        packages.append("chromium")
    if not _has_cjk_font():
        packages.append("fonts-noto-cjk")
    if not packages:
        return
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        say(f"installing Debian's {' and '.join(packages)} for the page tests")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
            if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                say(f"could not install {' '.join(packages)}; page tests may fail")
                return
    else:
        say(f"{' and '.join(packages)} missing and cannot be installed here; page tests may fail")


def main(argv: list[str]) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (this file may be run by an older python3)
        sys.exit("dev.py: merchant-code needs Python 3.11 or newer")
    if not argv or argv[0] not in {"demo", "test"}:
        sys.exit("usage: python3 dev.py demo [merchant-code demo options] | test [pytest options]")
    command, rest = argv[0], argv[1:]
    if command == "demo":
        ensure_venv()
        os.execv(str(BIN / "merchant-code"), [str(BIN / "merchant-code"), "demo", *rest])
    ensure_venv()
    if (ROOT / "tests" / "pages").is_dir():
        ensure_chromium()
    os.execv(str(BIN / "python"), [str(BIN / "python"), "-m", "pytest", *parallel(rest), *rest])


def parallel(pytest_args: list[str]) -> list[str]:
    """`-n N` for pytest-xdist unless the caller chose (`-n 0`, `-p no:xdist`: one process)."""
    chose = any(
        arg in {"-n", "--numprocesses", "no:xdist", "-pno:xdist"} or arg.startswith(("-n", "--numprocesses="))
        for arg in pytest_args
    )
    return [] if chose else ["-n", str(test_workers())]


def test_workers() -> int:
    # Most tests wait on PostgreSQL, a server subprocess or a browser rather than compute, so a
    # worker more than there are cores keeps them busy (measured on 2 cores: see README).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores + 1


if __name__ == "__main__":
    main(sys.argv[1:])
