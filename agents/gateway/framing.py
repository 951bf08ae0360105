"""What a sandbox sends the gateway, read with bounds: a request's head and body (by a strict
Content-Length, or chunked, counted as the chunks arrive), a deadline for the whole request, and
a shared budget of body bytes held in memory at once. A hostile client gets an HTTP status
(`FramingError.status`), never a traceback, a thread stuck forever or a process that grows."""

from __future__ import annotations

import re
import threading
import time

#: bytes of one request body (Anthropic's Messages API takes up to 32 MB)
MAX_BODY = 32 << 20
#: bytes of the request line and headers together
MAX_HEAD = 256 << 10
#: seconds a client has to send a whole request (head and body); each read waits at most READ_TIMEOUT_S
REQUEST_S = 120.0
READ_TIMEOUT_S = 30.0
#: body bytes all of a gateway's connections may hold at once (MAX_CONNECTIONS x MAX_BODY would not be flat;
#: with the one large body parsed at a time, the host process stays under ~200 MB)
BODY_POOL = 64 << 20
LENGTH = re.compile(rb"[0-9]{1,12}")
CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,8}")
MAX_TRAILERS = 32


class FramingError(Exception):
    """A request the gateway will not read further; `status` is the answer (400, 408, 413, 503)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class BodyPool:
    """Body bytes held by all connections together, at most `limit`."""

    def __init__(self, limit: int = BODY_POOL):
        self.limit, self.held = limit, 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Raises FramingError(503) when `n` more bytes would pass the limit."""
        with self._lock:
            if self.held + n > self.limit:
                raise FramingError(503, "rdbench gateway: too many request bytes in flight; retry")
            self.held += n

    def give(self, n: int) -> None:
        with self._lock:
            self.held -= n


class Capped:
    """A connection's read side that gives at most `room` more bytes and raises FramingError once
    the request's deadline passes. `room` starts at MAX_HEAD; reading a body adds its size."""

    def __init__(self, raw, room: int = MAX_HEAD, deadline_s: float = REQUEST_S):
        self.raw, self.room = raw, room
        self.deadline = time.monotonic() + deadline_s

    def _check(self, size: int) -> int:
        if time.monotonic() > self.deadline:
            raise FramingError(408, "rdbench gateway: the request took too long to arrive")
        if self.room <= 0:
            raise FramingError(431, "rdbench gateway: request head too large")
        return self.room if size is None or size < 0 else min(size, self.room)

    def readline(self, size: int = -1) -> bytes:
        line = self.raw.readline(self._check(size))
        self.room -= len(line)
        return line

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(self._check(size))
        self.room -= len(data)
        return data

    def __getattr__(self, name):  # close() and the rest, as the socket file has them
        return getattr(self.raw, name)


def _exact(rfile: Capped, n: int, out: bytearray, pool: BodyPool, held: list[int]) -> None:
    """Append `n` bytes to `out`, taken from `pool` whole first (a body known to fit is not
    starved halfway by others), read in pieces."""
    pool.take(n)
    held[0] += n
    rfile.room += n
    while n > 0:
        data = rfile.read(min(n, 1 << 20))
        if not data:
            raise FramingError(400, "rdbench gateway: the connection closed inside the request body")
        out += data
        n -= len(data)


def read_body(rfile: Capped, headers, pool: BodyPool, held: list[int]) -> bytearray:
    """The request's body by its framing; `held[0]` counts the bytes taken from `pool` (the
    caller gives them back). Raises FramingError: malformed framing 400, over MAX_BODY 413,
    too slow 408, the pool spent 503."""
    lengths = headers.get_all("content-length") or []
    codings = [c.strip().lower() for v in headers.get_all("transfer-encoding") or [] for c in v.split(",")]
    out = bytearray()
    if codings:
        if codings != ["chunked"]:
            raise FramingError(400, f"rdbench gateway: Transfer-Encoding {', '.join(codings)!r} is not read")
        if lengths:  # both framings at once: the request could be read two ways
            raise FramingError(400, "rdbench gateway: both Content-Length and Transfer-Encoding")
        while True:
            rfile.room += 1026
            line = rfile.readline(1026)
            if not line.endswith(b"\n"):
                raise FramingError(400, "rdbench gateway: a chunk size line that does not end")
            size = line.split(b";", 1)[0].strip()
            if not CHUNK_SIZE.fullmatch(size):
                raise FramingError(400, f"rdbench gateway: chunk size {size[:20]!r} is not hexadecimal")
            n = int(size, 16)
            if n == 0:
                break
            if len(out) + n > MAX_BODY:
                raise FramingError(413, f"rdbench gateway: a request body over {MAX_BODY} bytes")
            _exact(rfile, n, out, pool, held)
            rfile.room += 2
            if rfile.readline(2) not in (b"\r\n", b"\n"):
                raise FramingError(400, "rdbench gateway: a chunk not followed by its line end")
        for _ in range(MAX_TRAILERS):  # trailers, up to the empty line
            rfile.room += 1026
            if rfile.readline(1026) in (b"\r\n", b"\n", b""):
                return out
        raise FramingError(400, "rdbench gateway: too many trailer lines")
    if not lengths:
        return out
    if len(set(v.strip() for v in lengths)) != 1 or not LENGTH.fullmatch(lengths[0].strip().encode()):
        raise FramingError(400, f"rdbench gateway: Content-Length {lengths[0][:20]!r} is not one non-negative "
                                "integer")
    n = int(lengths[0])
    if n > MAX_BODY:
        raise FramingError(413, f"rdbench gateway: a request body over {MAX_BODY} bytes")
    _exact(rfile, n, out, pool, held)
    return out
