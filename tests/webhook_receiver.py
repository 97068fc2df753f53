"""A webhook receiver for the outbox tests: a threaded HTTP server on 127.0.0.1 that records every
POST with its Idempotency-Key, applies each key once (as a gateway that honours the key would) and
answers as scripted: a status sequence, delays, Retry-After, or now and then a slow answer.

It runs in a thread of the test process, so it keeps answering while the test awaits worker
processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclasses.dataclass(frozen=True)
class Step:
    """One scripted answer: wait `delay` seconds, then answer `status` with `headers`."""

    status: int = 200
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Received:
    key: str | None
    body: bytes
    signature_ok: bool | None  # None: no secret configured
    at: float


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    receiver: Receiver


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:
            receiver.cut_short()  # the sender died while sending: nothing to act on, no one to answer
            return
        key = self.headers.get("idempotency-key")
        signature = self.headers.get("x-merchant-code-signature")
        step = receiver.arrived(Received(key, body, receiver.check_signature(body, signature), time.time()))
        try:
            if step.delay:
                time.sleep(step.delay)
            if 200 <= step.status < 300 and key is not None:
                receiver.apply(key)
            payload = b'{"ok": true}' if step.status < 300 else b'{"ok": false}'
            self.send_response(step.status)
            for name, value in step.headers:
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the sender went away (a worker killed mid-request, a client timeout)
        finally:
            receiver.finished()


class Receiver:
    """Start with `with Receiver(...) as r:`; `r.url` is where to POST."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        script: list[Step] | None = None,
        slow_share: float = 0.0,
        slow_delay: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.secret = secret
        self.script = list(script or [])
        self.slow_share = slow_share
        self.slow_delay = slow_delay
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self.received: list[Received] = []
        self.applied: Counter[str] = Counter()  # key -> times its effect happened (1 at most)
        self.duplicates: Counter[str] = Counter()  # key -> repeats recognised and not applied again
        self.truncated = 0  # requests whose body never arrived in full
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- called from handler threads

    def check_signature(self, body: bytes, signature: str | None) -> bool | None:
        if self.secret is None:
            return None
        want = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return signature is not None and hmac.compare_digest(want, signature)

    def cut_short(self) -> None:
        with self._lock:
            self.truncated += 1

    def arrived(self, request: Received) -> Step:
        with self._lock:
            self._in_flight += 1
            self.received.append(request)
            if self.script:
                return self.script.pop(0)
            if self.slow_share and self._rng.random() < self.slow_share:
                return Step(200, self.slow_delay)
            return Step()

    def apply(self, key: str) -> None:
        with self._lock:
            if self.applied[key]:
                self.duplicates[key] += 1
            else:
                self.applied[key] += 1

    def finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    # --- for the test

    def keys(self) -> list[str | None]:
        with self._lock:
            return [r.key for r in self.received]

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is being answered (a hung one included)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)
