"""The host's end of the channel to its watchdog process (``_watchdog.py``).

``WatchdogClient`` starts the watchdog, sends requests and waits for their replies, and
delivers the watchdog's events to a ``WatchdogListener``:

* ``on_exit(event)``: a provider's main process ended (the watchdog reaped it);
* ``on_members(event)``: who belongs to a provider changed (identities, as tracked);
* ``on_stopped(event)``: one provider of a stop under way is done (its outcome);
* ``on_control(client, request)``: a request from outside (``hostconsole stop``), called on
  a thread of its own, since answering it needs the channel's replies;
* ``on_lost(client)``: the watchdog is gone (end-of-file on the channel).

Threads: one reader per client (``hostconsole-watchdog-reader``) delivers replies and
events in channel order; callers of ``request`` may be any thread.  A reply's ``on_reply``
runs on the reader, before any later event is read, so that the effects of a spawn reply
are in place before that provider's exit event arrives.  ``_lock`` guards only the table
of pending requests; listeners are called without it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from . import _logfiles, _proc
from ._proc import ProcId
from ._watchdog_control import CONTROL_SOCKET
from ._wire import Channel
from .errors import HostError

REQUEST_TIMEOUT = 30.0
START_TIMEOUT = 30.0


def _environ_snapshot() -> Dict[Any, Any]:
    # os.environ's own bytes mapping compares in C, ~40x faster than decoding every entry:
    # this runs on every spawn.
    data = getattr(os.environ, "_data", None)
    return dict(data) if isinstance(data, dict) else dict(os.environ)


class WatchdogLost(Exception):
    """The watchdog went away while (or before) a request was answered."""


class WatchdogListener:
    """What a watchdog client tells its host.  Override what you need."""

    def on_exit(self, event: Dict[str, Any]) -> None:
        pass

    def on_members(self, event: Dict[str, Any]) -> None:
        pass

    def on_stopped(self, event: Dict[str, Any]) -> None:
        pass

    def on_control(self, client: "WatchdogClient", request: Dict[str, Any]) -> None:
        client.send_quietly({"op": "control_done", "cid": request.get("cid"), "ok": False,
                             "error": "this host takes no control requests"})

    def on_lost(self, client: "WatchdogClient") -> None:
        pass


def start_thread(target: Callable[..., Any], *args: Any, name: str, daemon: bool = True) -> bool:
    """Start a thread; False if the OS will not give us one (a process or thread limit).

    Every caller has a way to carry on without it: a stop path must never fail because
    the machine is out of processes -- that is when it is needed most."""
    try:
        threading.Thread(target=target, args=args, name=name, daemon=daemon).start()
        return True
    except RuntimeError:
        return False


class WatchdogClient:
    def __init__(self, listener: WatchdogListener, *, host_id: str, host_dir: Path, markers: Mapping[str, str],
                 owner: Optional[ProcId]):
        self._listener = listener
        parent, child = socket.socketpair()
        self.channel = Channel(parent)
        cmd = [sys.executable, "-m", "hostconsole._watchdog", "--fd", str(child.fileno()),
               "--host-id", host_id, "--report", str(host_dir / "watchdog-report.json"),
               "--control", str(host_dir / CONTROL_SOCKET)]
        if owner is not None:
            cmd += ["--owner", f"{owner.pid}:{owner.start}"]
        env = dict(os.environ)
        # Marked as this host's (so a reap can find it if its owner dies), never as a provider.
        env.pop("HOSTCONSOLE_PROVIDER", None)
        env.update(markers)
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(host_dir / "watchdog.log", "ab", buffering=0) as log:
            self.proc = subprocess.Popen(
                cmd, pass_fds=[child.fileno()], start_new_session=True, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/",
            )
        child.close()
        self.ident = _proc.identity(self.proc.pid)
        self.lost = False
        self.fence = "none"  # the membership mechanism the watchdog has in force (its "ready" says)
        self._env_sent = _environ_snapshot()  # the watchdog started with this
        self._next_id = 0
        self._pending: Dict[int, list] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.reader = threading.Thread(target=self._read, name="hostconsole-watchdog-reader", daemon=True)
        self.reader.start()
        # Started means started: the watchdog is up, with every thread it needs, before
        # the first provider exists.  If it dies on the way, say why.
        if not self._ready.wait(START_TIMEOUT) or self.lost:
            self.close(timeout=1.0)
            last = _logfiles.tail(host_dir / "watchdog.log", 1).strip()
            raise HostError("the host's watchdog did not start" + (f": {last}" if last else ""))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        while True:
            msg = self.channel.recv()
            if msg is None:
                break
            if "re" in msg:
                with self._lock:
                    slot = self._pending.pop(msg["re"], None)
                if slot is not None:
                    slot[1] = msg
                    if slot[2] is not None:
                        slot[2](msg)  # in channel order: see the module's docstring
                    slot[0].set()
            elif msg.get("ev") == "ready":
                self.fence = str(msg.get("fence") or "none")
                self._ready.set()
            elif msg.get("ev") == "exit":
                self._listener.on_exit(msg)
            elif msg.get("ev") == "members":
                self._listener.on_members(msg)
            elif msg.get("ev") == "stopped":
                self._listener.on_stopped(msg)
            elif msg.get("ev") == "control":
                # Not on this thread: answering needs the reader to carry the replies.
                if not start_thread(self._listener.on_control, self, msg, name="hostconsole-control"):
                    self.send_quietly({"op": "control_done", "cid": msg.get("cid"), "ok": False,
                                       "error": "the host cannot start a thread (process limit?)"})
        with self._lock:
            self.lost = True
            pending, self._pending = self._pending, {}
        self._ready.set()
        for slot in pending.values():
            slot[0].set()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._listener.on_lost(self)

    def request(self, op: str, timeout: Optional[float] = REQUEST_TIMEOUT,
                on_reply: Optional[Callable[[Dict[str, Any]], None]] = None, **fields: Any) -> Dict[str, Any]:
        """Send a request and wait for its reply.  An interrupt (Ctrl-C) while waiting is
        held back until the reply is in: an abandoned spawn would run unrecorded."""
        with self._lock:
            if self.lost:
                raise WatchdogLost()
            self._next_id += 1
            rid = self._next_id
            slot: list = [threading.Event(), None, on_reply]
            self._pending[rid] = slot
        try:
            self.channel.send({"id": rid, "op": op, **fields})
        except OSError:
            raise WatchdogLost() from None
        interrupted: Optional[BaseException] = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                done = slot[0].wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                break
            except KeyboardInterrupt as e:
                interrupted = e
        if interrupted is not None and done:
            raise interrupted
        if not done:
            with self._lock:
                self._pending.pop(rid, None)
            raise HostError(f"the host's watchdog did not answer {op!r} within {timeout}s")
        if slot[1] is None:
            raise WatchdogLost()
        reply: Dict[str, Any] = slot[1]
        return reply

    def send_quietly(self, msg: Dict[str, Any]) -> None:
        """A message that needs no reply; nothing happens if the watchdog is gone."""
        try:
            self.channel.send(msg)
        except OSError:
            pass

    def sync_env(self) -> None:
        """Give the watchdog the host's environment, if it changed since it last had it:
        providers inherit the environment of the moment they start, as with subprocess,
        without every spawn carrying all of it."""
        data = getattr(os.environ, "_data", None)
        if (data if isinstance(data, dict) else dict(os.environ)) != self._env_sent:
            self.request("env", base=dict(os.environ))
            self._env_sent = _environ_snapshot()

    def trees(self, names: Optional[List[str]] = None) -> Dict[str, List[List[Any]]]:
        trees: Dict[str, List[List[Any]]] = self.request("tree", names=names).get("trees", {})
        return trees

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.request("bye", timeout=timeout)
        except (HostError, WatchdogLost):
            pass
        self.channel.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # It never stops on its own only if it is wedged; its providers are already gone.
            if self.ident is not None:
                _proc.send(self.ident, signal.SIGKILL)
            self.proc.wait(timeout=timeout)

    def detach(self) -> None:
        """Forget the watchdog without a word (a forked child must not hold its socket)."""
        try:
            os.close(self.channel.sock.detach())
        except OSError:
            pass
