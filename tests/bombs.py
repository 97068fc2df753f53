"""Decompression bombs for the limit tests, and a loopback HTTP server that serves them.

The 1 GiB bzip2 bomb takes seconds of CPU to build, so it is kept built in
tests/fixtures/feeds/lives/bomb.zip; `python -m tests.bombs` builds it again.
"""

from __future__ import annotations

import http.server
import io
import threading
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BOMB = Path(__file__).parent / "fixtures" / "feeds" / "lives" / "bomb.zip"
HEADER = b"business_id,date,score\n"


def zip_bomb(size: int = 2**30, compression: int = zipfile.ZIP_BZIP2) -> bytes:
    """A zip whose one member, inspections.csv, is a LIVES header and then `size` bytes in all of
    zeros: one line a gigabyte long. Built a megabyte at a time."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", compression, compresslevel=9) as archive,
        archive.open("inspections.csv", "w") as member,
    ):
        member.write(HEADER)
        left = size - len(HEADER)
        zeros = bytes(2**20)
        while left:
            member.write(zeros[: min(left, len(zeros))])
            left -= min(left, len(zeros))
    return buffer.getvalue()


def gzip_bomb(size: int, wbits: int = zlib.MAX_WBITS | 16) -> bytes:
    """`size` zero bytes gzipped (or, with other wbits, as a zlib or raw deflate stream)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(2**20)
    parts = [packer.compress(zeros[: min(size - at, len(zeros))]) for at in range(0, size, len(zeros))]
    return b"".join([*parts, packer.flush()])


@contextmanager
def serving(body: bytes, headers: dict[str, str], length: bool = True) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering every GET with `body` (with a Content-Length, or
    without: then the body ends when the connection closes); yields its URL. The body goes out in
    64 KiB writes, so a client that stops reading stops it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            sized = {"content-length": str(len(body))} if length else {}
            for name, value in {**sized, **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                for at in range(0, len(body), 2**16):
                    self.wfile.write(body[at : at + 2**16])
            except OSError:
                pass  # the client hung up at its limit

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/feed"
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    BOMB.write_bytes(zip_bomb())
    print(f"{BOMB}: {BOMB.stat().st_size} bytes")
