"""Where the gateway listens: a socket folder only the sandbox's user may enter, and a threaded
Unix-socket server whose connections (a thread each) are capped."""

from __future__ import annotations

import os
import socketserver
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Gateway

#: connections open at once (more are answered 503 and closed); each is one thread
MAX_CONNECTIONS = 32


def socket_dir(owner: int) -> Path:
    """A fresh folder for a gateway's socket (under /tmp: a socket path has 108 bytes), mode
    0700 and owned by `owner` (the sandbox's user), so that no other host user reaches the
    socket; a process that may not give a folder away (not root) leaves it 0711, and the
    trial's secret keeps other users out."""
    d = Path(tempfile.mkdtemp(prefix="rdbench-gw-", dir="/tmp"))
    try:
        os.chown(d, owner, owner)
    except PermissionError:
        d.chmod(0o711)
    return d


class Listener(socketserver.ThreadingUnixStreamServer):
    """The gateway's server: a thread per connection, at most MAX_CONNECTIONS of them; a
    connection's failure is a transcript line, never a traceback on the console."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, path: str, handler, gateway: Gateway):
        self.gateway = gateway
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(path, handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):  # over the cap: answered and closed, no thread
            self.gateway.dropped += 1
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started
            self.slots.release()
            self.shutdown_request(request)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):  # one connection's fault: a line, no console traceback
        e = sys.exc_info()[1]
        with self.gateway._cond:
            self.gateway._note(type="gateway_error", error=f"{type(e).__name__}: {e}"[:500])


