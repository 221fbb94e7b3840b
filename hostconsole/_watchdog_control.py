"""The watchdog's control socket: how ``hostconsole stop`` and ``hostconsole ps`` reach a
live host from outside.

The socket is ``STATE_DIR/hosts/ID/control.sock``: in the host's 0700 directory, mode 0600,
and every peer's uid is checked too.  One JSON line in, one JSON line out.  Requests:

* ``ping``: answered by the watchdog itself;
* ``tree``: every provider's members with their CPU %, answered by the watchdog itself
  (the same figures the host's own ``ps`` gets), so the CLI needs no marker scan;
* ``purge``: relayed to the host, which does the work (so its own view of its providers
  stays true) and answers through the watchdog.

Threads: one accept loop, one short-lived thread per connection.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional

CONTROL_SOCKET = "control.sock"
HOST_TIMEOUT = 120.0


def bind_unix(path: str) -> socket.socket:
    """A listening unix socket at ``path``, mode 0600.

    Bound by its name relative to its directory: a full path longer than sun_path
    (108 bytes) would not fit.  Call while single-threaded (it changes directory)."""
    directory, name = os.path.split(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(directory or ".")
        old_umask = os.umask(0o177)
        try:
            sock.bind(name)
        finally:
            os.umask(old_umask)
    finally:
        os.fchdir(here)
        os.close(here)
    sock.listen(16)
    return sock


def connect_unix(path: Path, timeout: float) -> socket.socket:
    """Connect to the socket at ``path`` (by a relative name, as ``bind_unix`` binds)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(path.parent)
        sock.connect(path.name)
    except OSError:
        sock.close()
        raise
    finally:
        os.fchdir(here)
        os.close(here)
    return sock


def peer_uid(conn: socket.socket) -> Optional[int]:
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(uid)


class ControlServer:
    """Serves the control socket for one watchdog.

    ``local`` answers the requests the watchdog can answer itself (op -> handler);
    ``relay(request)`` sends anything else to the host and returns its answer."""

    def __init__(self, sock: socket.socket, host_id: str, local: Dict[str, Callable[[dict], dict]],
                 send_to_host: Callable[[dict], None]):
        self.sock = sock
        self.host_id = host_id
        self.local = local
        self._send_to_host = send_to_host
        self._lock = threading.Lock()
        self._pending: Dict[int, list] = {}
        self._next = 0
        self._closed = threading.Event()

    def serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()
            except RuntimeError:  # no thread to spare: refuse this one
                conn.close()

    def _serve_one(self, conn: socket.socket) -> None:
        with conn:
            try:
                uid = peer_uid(conn)
                if uid is not None and uid != os.getuid():
                    return
                conn.settimeout(10)
                line = conn.makefile("rb").readline(1 << 20)
                req = json.loads(line or b"{}")
                if not isinstance(req, dict):
                    raise ValueError("not an object")
                op = req.get("op")
                answer: Dict[str, Any]
                if op in self.local:
                    answer = {"ok": True, "host": self.host_id, **self.local[op](req)}
                elif op == "purge":
                    answer = self._relay({"op": "purge", "timeout": req.get("timeout")})
                else:
                    answer = {"ok": False, "error": f"unknown control request {op!r}"}
                conn.settimeout(None)
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except (OSError, ValueError, RecursionError):
                pass

    def _relay(self, request: dict) -> dict:
        with self._lock:
            self._next += 1
            cid = self._next
            slot: list = [threading.Event(), None]
            self._pending[cid] = slot
        self._send_to_host({"ev": "control", "cid": cid, **request})
        if not slot[0].wait(HOST_TIMEOUT):
            with self._lock:
                self._pending.pop(cid, None)
            return {"ok": False, "error": "the host did not answer in time"}
        reply = slot[1]
        if reply is None:
            return {"ok": False, "error": "the host went away"}
        return {k: v for k, v in reply.items() if k not in ("op", "id", "cid")}

    def answered(self, msg: dict) -> None:
        """The host's answer to a relayed request (its ``control_done``)."""
        with self._lock:
            slot = self._pending.pop(msg.get("cid"), None)  # type: ignore[arg-type]
        if slot is not None:
            slot[1] = msg
            slot[0].set()

    def close(self) -> None:
        self._closed.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            waiting, self._pending = self._pending, {}
        for slot in waiting.values():
            slot[0].set()


def ask(host_dir: Path, request: dict, timeout: float) -> dict:
    """One request to a host's control socket; its answer (raises OSError, ValueError)."""
    with connect_unix(Path(host_dir) / CONTROL_SOCKET, timeout) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        line = sock.makefile("rb").readline()
    if not line:
        raise ValueError("the connection closed without an answer")
    answer = json.loads(line)
    if not isinstance(answer, dict):
        raise ValueError("a malformed answer")
    return answer
