"""The watchdog: a small process per host that spawns, reaps and, if need be, stops providers.

Started by the host in its own session (so the kernel's process-group signals and
ipykernel's child sweep never reach it) with one end of a socket pair.  It

* marks itself a child subreaper, so orphaned provider descendants (double forks,
  ``setsid`` daemons) are re-parented to it and stay visible and reapable;
* spawns every provider (its own session and group, output to the provider's log) and
  reaps every exit status itself, so the owner never runs ``waitpid`` for them and cannot
  have exit codes stolen from or by the user's own ``subprocess`` calls;
* runs the stop path for the host on request;
* when the owner goes away -- end-of-file on the socket, or the owner's pidfd reporting
  its exit -- stops every provider tree with the same stop path and exits.

It imports only the standard library and hostconsole's process modules: it must start
fast and keep running when the kernel's environment is broken.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Optional

from . import _proc
from ._proc import ProcId
from ._stop import Finder, Target, order_for_stop, stop_levels
from ._wire import Channel

TRACK_INTERVAL = 0.5
CONTROL_TIMEOUT = 120.0
LOG_CHECK_INTERVAL = 0.1
PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper() -> bool:
    if not _proc.LINUX:
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


class Provider:
    def __init__(self, name, popen, main: ProcId, stop_signal, stop_timeout, requires):
        self.name = name
        self.popen = popen  # None for a provider adopted from a watchdog that died
        self.main = main
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.requires = list(requires)
        self.status: Optional[int] = None  # raw wait status once reaped
        self.target = Target(name, main, main.pid, stop_signal, stop_timeout)


class Shepherd:
    def __init__(self, channel: Channel, host_id: str, owner: Optional[ProcId], report_path: Optional[str]):
        self.ch = channel
        self.host_id = host_id
        self.owner = owner
        self.report_path = report_path
        self.me = os.getpid()
        self.lock = threading.RLock()
        self.reaped = threading.Condition(self.lock)
        self.spawn_lock = threading.Lock()
        self.child_event = threading.Event()
        self.providers: Dict[str, Provider] = {}
        self.by_pid: Dict[int, Provider] = {}  # main pid -> provider, until reaped
        self.logs: Dict[str, int] = {}  # log path -> size cap
        self.finder = Finder(host_id, self._universe)
        self._finished = threading.Event()
        self._finishing = threading.Lock()
        self.goodbye = False
        self.control_sock = None
        self._controls: Dict[int, list] = {}
        self._next_control = 0

    # --- what belongs to us -------------------------------------------------------------

    def _universe(self):
        # Our subtree, plus the trees of adopted providers (not our children: they were
        # re-parented elsewhere when their first watchdog died).
        roots = [self.me]
        with self.lock:
            for p in self.providers.values():
                if p.popen is None:
                    roots.extend(p.target.members)
        tree = _proc.descendants(roots)
        tree.pop(self.me, None)
        return tree

    def find(self, targets, rest=None):
        with self.lock:
            return self.finder.find(targets, rest)

    def status_of(self, target: Target, wait: float = 1.0):
        """Exit code and signal name of a target's main process, once the reaper has it."""
        deadline = time.monotonic() + wait
        with self.lock:
            prov = self.providers.get(target.name)
            if prov is None or prov.main != target.main or prov.popen is None:
                return None, None  # (an adopted provider's exit status is not ours to know)
            while prov.status is None and time.monotonic() < deadline:
                self.reaped.wait(deadline - time.monotonic())
            return _decode(prov.status)

    # --- threads ------------------------------------------------------------------------

    def reaper(self):
        while not self._finished.is_set():
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                self.child_event.wait(0.2)
                self.child_event.clear()
                continue
            except InterruptedError:
                continue
            if info is None:
                continue
            # Popen reaps a child whose exec failed itself; holding spawn_lock keeps us out
            # of its way, so neither of us ever sees ECHILD for the other's child.  Under
            # it, drain every child that has ended: a stop of 50 ends 50 at once.
            reaped = []
            with self.spawn_lock:
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if not pid:
                        break
                    reaped.append((pid, status))
            if reaped:
                self._on_reaped(reaped)

    def _on_reaped(self, reaped):
        events = []
        with self.lock:
            for pid, status in reaped:
                prov = self.by_pid.pop(pid, None)  # an orphan we reaped is nobody's main
                if prov is not None and prov.status is None:
                    prov.status = status
                    prov.popen.returncode = os.waitstatus_to_exitcode(status)
                    code, sig = _decode(status)
                    events.append({"ev": "exit", "name": prov.name, "pid": pid, "start": prov.main.start,
                                   "exit_code": code, "signal": sig})
            self.reaped.notify_all()
            if events:  # one write for the lot, still under the lock: after any spawn reply
                try:
                    self.ch.send_many(events)
                except OSError:
                    pass

    def tracker(self):
        """Keep each provider's membership current, so a descendant that later escapes
        (double fork, setsid, cleared environment) is already known to be the provider's."""
        while not self._finished.wait(TRACK_INTERVAL):
            with self.lock:
                targets = [p.target for p in self.providers.values()
                           if (p.status is None or p.target.members)]
            if targets:
                try:
                    self.find(targets)
                except Exception as e:  # never let tracking kill the watchdog
                    print(f"hostconsole watchdog: tracking failed: {e!r}", flush=True)
            self._check_adopted()

    def _check_adopted(self):
        """Adopted providers are not our children: notice their end by looking."""
        events = []
        with self.lock:
            for p in self.providers.values():
                if p.popen is None and p.status is None and not _proc.alive(p.main):
                    p.status = -1
                    events.append({"ev": "exit", "name": p.name, "pid": p.main.pid, "start": p.main.start,
                                   "exit_code": None, "signal": None, "unknown": True})
            self.reaped.notify_all()
            if events:
                try:
                    self.ch.send_many(events)
                except OSError:
                    pass

    def log_guard(self):
        """Keep every log under its cap: past it, keep its last cap bytes as NAME.log.1 and
        truncate NAME.log (providers write with O_APPEND, so they carry on at the new end).
        Like logrotate's copytruncate, output written during the copy can be lost.  Disk
        use stays below twice the cap plus what a provider writes in ~10 ms."""
        pause = LOG_CHECK_INTERVAL
        while not self._finished.wait(pause):
            with self.lock:
                logs = list(self.logs.items())
            rotated = False
            for path, cap in logs:
                try:
                    if os.stat(path).st_size > cap:
                        rotate_log(path, cap)
                        rotated = True
                except OSError:
                    pass  # deleted under us, or the disk is full: nothing better to do here
            # A provider writing as fast as it can overshoots by what it writes in one
            # pause: look again soon while one is that busy.
            pause = LOG_CHECK_INTERVAL / 10 if rotated else LOG_CHECK_INTERVAL

    def control_server(self):
        """Serve ``hostconsole stop`` and friends on the host's control socket.

        Requests are relayed to the host, which does the work itself (so its own view of
        its providers stays true) and answers through us.  Only this user may connect: the
        socket lives in the 0700 host directory, and the peer's uid is checked too."""
        srv = self.control_sock
        while not self._finished.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_control, args=(conn,), daemon=True).start()

    def _serve_control(self, conn):
        import socket as _socket
        import struct

        with conn:
            try:
                if hasattr(_socket, "SO_PEERCRED"):
                    _, uid, _ = struct.unpack("3i", conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED,
                                                                    struct.calcsize("3i")))
                    if uid != os.getuid():
                        return
                conn.settimeout(10)
                req = json.loads(conn.makefile("rb").readline() or b"{}")
                op = req.get("op")
                if op == "ping":
                    answer = {"ok": True, "host": self.host_id, "pid": self.me}
                elif op == "purge":
                    answer = self._ask_host({"op": "purge", "timeout": req.get("timeout")})
                else:
                    answer = {"ok": False, "error": f"unknown control request {op!r}"}
                conn.settimeout(None)
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except (OSError, ValueError):
                pass

    def _ask_host(self, request):
        with self.lock:
            self._next_control += 1
            cid = self._next_control
            slot = [threading.Event(), None]
            self._controls[cid] = slot
        self._send({"ev": "control", "cid": cid, **request})
        if not slot[0].wait(CONTROL_TIMEOUT):
            with self.lock:
                self._controls.pop(cid, None)
            return {"ok": False, "error": "the host did not answer in time"}
        reply = slot[1]
        if reply is None:
            return {"ok": False, "error": "the host went away"}
        return {k: v for k, v in reply.items() if k not in ("op", "id", "cid")}

    def owner_watch(self):
        if self.owner is None:
            return
        fd = None
        if hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(self.owner.pid)
            except OSError:
                fd = None
        if fd is not None and _proc.alive(self.owner):
            p = select.poll()
            p.register(fd, select.POLLIN)
            while not self._finished.is_set():
                if p.poll(1000):
                    break
        else:
            while not self._finished.is_set() and _proc.alive(self.owner):
                time.sleep(0.1)
        if not self._finished.is_set():
            self.finish("owner process exited")
            os._exit(0)

    # --- requests -----------------------------------------------------------------------

    def _send(self, msg):
        try:
            self.ch.send(msg)
        except OSError:
            pass

    def handle(self, msg):
        if "malformed" in msg:
            print(f"hostconsole watchdog: skipping a malformed request: {msg['malformed']!r}", flush=True)
            return
        op = msg.get("op")
        rid = msg.get("id")
        try:
            if op == "spawn":
                self.spawn(msg)  # replies itself: see there
                return
            elif op == "stop":
                try:
                    threading.Thread(target=self._stop_request, args=(rid, msg), daemon=True).start()
                except RuntimeError:  # no thread to spare (a process limit): stop from here
                    self._stop_request(rid, msg)
                return
            elif op == "adopt":
                reply = self.adopt(msg)
            elif op == "tree":
                reply = self.trees(msg.get("names"))
            elif op == "ping":
                reply = {"pid": self.me}
            elif op == "bye":
                self.goodbye = True
                reply = {}
            elif op == "control_done":
                with self.lock:
                    slot = self._controls.pop(msg.get("cid"), None)
                if slot is not None:
                    slot[1] = msg
                    slot[0].set()
                reply = {}
            else:
                raise ValueError(f"unknown op {op!r}")
        except OSError as e:
            reply = {"error": {"type": type(e).__name__, "errno": e.errno, "message": e.strerror or str(e),
                               "filename": getattr(e, "filename", None)}}
        except Exception as e:
            reply = {"error": {"type": type(e).__name__, "message": str(e)}}
        if rid is not None:
            reply["re"] = rid
            self._send(reply)

    def spawn(self, msg):
        name = msg["name"]
        with self.lock:
            old = self.providers.get(name)
            if old is not None and old.status is None and _proc.alive(old.main):
                raise ValueError(f"provider {name!r} is still running in the watchdog")
        log = open(msg["log"], "ab", buffering=0)
        try:
            with self.spawn_lock:
                popen = subprocess.Popen(
                    msg["argv"], env=msg["env"], cwd=msg.get("cwd") or None,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True,
                )
                # The reaper cannot reap the child while we hold spawn_lock, so its /proc
                # entry (a zombie at worst) still names it -- and by the time the reaper
                # can, the provider is registered and the host has its reply: an exit
                # event never overtakes the reply that announces the pid.
                main = _proc.identity(popen.pid)
                prov = Provider(name, popen, main, msg["stop_signal"], msg["stop_timeout"], msg.get("requires", ()))
                with self.lock:
                    self.providers[name] = prov
                    self.by_pid[main.pid] = prov
                    if msg.get("log_max"):
                        self.logs[msg["log"]] = int(msg["log_max"])
                    self._send({"re": msg["id"], "pid": main.pid, "start": main.start, "pgid": main.pid})
        finally:
            log.close()
        self.child_event.set()

    def adopt(self, msg):
        """Guard a running provider that another watchdog (now dead) spawned."""
        main = ProcId(msg["pid"], msg["start"])
        if not _proc.alive(main):
            raise ValueError(f"provider {msg['name']!r} (pid {main.pid}) is not running")
        prov = Provider(msg["name"], None, main, msg["stop_signal"], msg["stop_timeout"], msg.get("requires", ()))
        for pid, start in msg.get("members", ()):
            prov.target.members[pid] = ProcId(pid, start)
        with self.lock:
            self.providers[prov.name] = prov
            if msg.get("log") and msg.get("log_max"):
                self.logs[msg["log"]] = int(msg["log_max"])
        return {"adopted": prov.name}

    def trees(self, names):
        with self.lock:
            provs = [p for n, p in self.providers.items() if names is None or n in names]
            targets = [p.target for p in provs]
        self.find(targets)
        return {"trees": {t.name: sorted([pid, ident.start] for pid, ident in t.members.items()) for t in targets}}

    def _stop_request(self, rid, msg):
        try:
            rest = None
            if msg.get("sweep"):
                # A purge: everything under the watchdog is the host's, attributed or not.
                rest = Target("(unattributed)", None, None, signal.SIGTERM, 1.0)
            outcomes = self.stop(msg["levels"], msg.get("within"), rest=rest)
            reply = {"report": [o.as_dict() for o in outcomes]}
        except Exception as e:  # the host falls back to stopping by itself
            reply = {"error": {"type": type(e).__name__, "message": str(e)}}
        reply["re"] = rid
        self._send(reply)

    def stop(self, names_by_level, within=None, rest=None):
        levels = []
        with self.lock:
            for names in names_by_level:
                levels.append([self.providers[n].target for n in names if n in self.providers])
        return stop_levels(levels, _LockedFinder(self), self.status_of, rest=rest, within=within)

    # --- the end ------------------------------------------------------------------------

    def finish(self, reason: str):
        """Stop everything under us, record what happened, and mark the watchdog done."""
        with self._finishing:
            if self._finished.is_set():
                return
            t0 = time.monotonic()
            with self.lock:
                names = list(self.providers)
                requires = {n: p.requires for n, p in self.providers.items()}
            rest = Target("(unattributed)", None, None, signal.SIGTERM,
                          max([p.stop_timeout for p in self.providers.values()] + [1.0]))
            outcomes = self.stop(order_for_stop(names, requires), rest=rest)
            report = {"host": self.host_id, "reason": reason, "goodbye": self.goodbye,
                      "seconds": round(time.monotonic() - t0, 4),
                      "outcomes": [o.as_dict() for o in outcomes if o.outcome != "gone"]}
            print(f"hostconsole watchdog {self.host_id}: {json.dumps(report)}", flush=True)
            if self.report_path and report["outcomes"]:
                _write_json(self.report_path, report)
            self._finished.set()
            self._close_control()

    def _close_control(self):
        if self.control_sock is not None:
            try:
                self.control_sock.close()
            except OSError:
                pass
        with self.lock:
            waiting, self._controls = self._controls, {}
        for slot in waiting.values():
            slot[0].set()


class _LockedFinder(Finder):
    """The shepherd's finder, shared by the tracker and every stop (hence the lock)."""

    def __init__(self, shepherd: Shepherd):
        self._s = shepherd

    def find(self, targets, rest=None):
        return self._s.find(targets, rest)


def bind_unix(path: str):
    """A listening unix socket at ``path``, mode 0600.

    Bound by its name relative to its directory: a full path longer than sun_path
    (108 bytes) would not fit.  Call while single-threaded (it changes directory)."""
    import socket

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


def rotate_log(path: str, cap: int) -> None:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - cap))
        data = f.read(cap)
    # Truncate at once: what a provider writes between our read and the truncate is lost
    # (copytruncate's price), so keep that window to two system calls.
    os.truncate(path, 0)
    nl = data.find(b"\n")
    if 0 <= nl < len(data) - 1:
        data = data[nl + 1:]  # start the kept part at a whole line
    old = path + ".1"
    tmp = f"{old}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, old)


def _decode(status):
    if status is None:
        return None, None
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return None, _proc.signal_name(-code)
    return code, None


def _write_json(path, obj):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="hostconsole-watchdog")
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--host-id", required=True)
    ap.add_argument("--owner", help="PID:START of the owning process")
    ap.add_argument("--report", help="where to write what happened when the owner died")
    ap.add_argument("--control", help="path of the control socket to serve")
    args = ap.parse_args(argv)

    # Inherited "ignore" dispositions would pass on to every provider; start clean.  Not
    # SIGPIPE: the watchdog must survive writing to the socket of an owner that just died
    # (Python's SIG_IGN turns that into BrokenPipeError), and Popen restores it for
    # providers anyway.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    _set_subreaper()
    import socket

    channel = Channel(socket.socket(fileno=args.fd))
    owner = None
    if args.owner:
        pid, start = args.owner.split(":")
        owner = ProcId(int(pid), int(start))
    shep = Shepherd(channel, args.host_id, owner, args.report)
    if args.control:
        shep.control_sock = bind_unix(args.control)

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    # A watchdog told to terminate stops its providers first, like any service manager.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    threads = [shep.reaper, shep.tracker, shep.log_guard, shep.owner_watch]
    if shep.control_sock is not None:
        threads.append(shep.control_server)
    try:
        for fn in threads:
            threading.Thread(target=fn, daemon=True).start()
    except RuntimeError as e:
        # Without its threads it cannot keep its promises: refuse to start (the host says so).
        print(f"hostconsole watchdog: cannot start its threads ({e}); is a process limit reached?", flush=True)
        return 1
    reason = "owner closed the channel"
    try:
        shep._send({"ev": "ready", "pid": os.getpid()})
        while True:
            msg = channel.recv()
            if msg is None:
                break
            shep.handle(msg)
    except SystemExit as e:
        reason = f"watchdog received signal {e.code - 128}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if shep.goodbye:
            reason = "host shut down"
        shep.finish(reason)
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
