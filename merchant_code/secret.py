"""The key that signs session tokens: from settings, or made once and kept in the data folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from merchant_code.errors import StartupError
from merchant_code.settings import Settings


def signing_key(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path(settings.data_dir) / "secret_key"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # written whole under a private name, then linked into place: a worker starting at
            # the same moment either sees no file or the complete key, never an empty one
            draft = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(draft, path)
            except FileExistsError:  # another worker's key won; use it
                pass
            finally:
                draft.unlink()
        key = path.read_text().strip()
    except OSError as exc:
        raise StartupError(f"cannot keep the signing key in {path}: {exc.strerror or exc}") from None
    if len(key) < 32:
        raise StartupError(f"{path} holds a key shorter than 32 characters; delete it to make a new one")
    return key.encode()
