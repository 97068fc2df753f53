"""A publisher's files on 127.0.0.1 for the feed tests: each GET is answered by the test's own
function of the path (query left out), so a test can change what is served between pulls."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator

# (status, body, content type or None for no header)
Answer = tuple[int, bytes, str | None]


@contextlib.contextmanager
def serving(answer: Callable[[str], Answer]) -> Iterator[str]:
    """Serve `answer(path)` on a free loopback port; yields the base URL (`http://127.0.0.1:P`)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, kind = answer(self.path.split("?", 1)[0])
            self.send_response(status)
            if kind is not None:
                self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
