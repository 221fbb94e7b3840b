"""JSON lines over a stream socket: the channel between a host and its watchdog.

Requests carry ``id``; replies carry ``re`` (the request's id) and either the result
fields or ``error``; events carry ``ev``.  End-of-file on the socket means the other side
is gone, which is the watchdog's signal that its owner died.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Optional


class Channel:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._rfile = sock.makefile("rb")
        self._wlock = threading.Lock()

    def send(self, msg: dict) -> None:
        self.send_many([msg])

    def send_many(self, msgs) -> None:
        data = b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in msgs)
        with self._wlock:
            self.sock.sendall(data)

    def recv(self) -> Optional[dict]:
        """The next message, or None at end-of-file (or if the socket broke).

        A line that is not a JSON object (a write torn by an interrupt) comes back as
        ``{"malformed": ...}``, for the caller to report and skip: one bad line must
        never end the channel, which the watchdog would take for its owner's death."""
        try:
            line = self._rfile.readline()
        except (OSError, ValueError):
            return None
        if not line:
            return None
        try:
            msg = json.loads(line)
        except ValueError:
            return {"malformed": line[:200].decode("utf-8", "replace")}
        return msg if isinstance(msg, dict) else {"malformed": repr(msg)[:200]}

    def close(self) -> None:
        # Shut down first: it wakes a reader blocked in recv() with end-of-file, which
        # releases the buffered reader's lock that close() would otherwise wait on.
        for f in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self._rfile.close, self.sock.close):
            try:
                f()
            except OSError:
                pass
