"""The watchdog: a small process per host that spawns, reaps and, if need be, stops providers.

Started by the host (``_watchdog_client.py``) in its own session, so the kernel's
process-group signals and ipykernel's child sweep never reach it, with one end of a socket
pair (``_wire.Channel``).  It

* marks itself a child subreaper, so orphaned provider descendants (double forks, ``setsid``
  daemons) are re-parented to it and stay visible and reapable;
* spawns every provider from its ``ProviderSpec`` (its own session and group, output to its
  log with a run header) and reaps every exit status itself, so the owner never runs
  ``waitpid`` for them and cannot have exit codes stolen from or by the user's own
  ``subprocess`` calls;
* keeps each provider's membership current (``tracker``) and samples CPU as it goes;
* runs the stop path (``_stop.stop_levels``) for the host on request, with a deadline the
  host may tighten while it runs;
* when the owner goes away -- end-of-file on the socket, or the owner's pidfd reporting its
  exit -- stops every provider tree with the same stop path, writes what it did to
  ``watchdog-report.json``, and exits.

What happens when providers end or are stopped -- what the watchdog knows of each, which
processes are whose, reaping, stop requests -- is ``Stops`` (``_watchdog_stops.py``),
mixed into ``Watchdog``; this module sets the state up, spawns, and runs the threads.

Threads: the main thread reads requests; ``reaper``, ``tracker``, ``LogGuard.run``,
``owner_watch`` and the control server run beside it; each stop request gets its own
thread.  ``self.lock`` guards the provider table; ``spawn_lock`` (taken first) is held by
every spawn and every reaping (the reaper's, or a stop's own), so a child is in ``by_pid``
exactly until it is reaped.

It imports only the standard library and hostconsole's process modules: it must start fast
and keep running when the kernel's environment is broken.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import select
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from . import _fence, _logfiles, _proc, registry
from ._proc import ProcId
from ._stop import KILL_GRACE, Deadline, Finder, Outcome, Target, order_for_stop
from ._watchdog_control import ControlServer, bind_unix
from ._watchdog_stops import Provider, Stops
from ._wire import Channel
from .spec import ProviderSpec

TRACK_INTERVAL = 0.5  # with a fence (membership is the kernel's: tracking only samples)
TRACK_INTERVAL_UNFENCED = 0.2  # without one: a tighter look, so escapees are seen sooner
# What Python itself ignores and a provider must not inherit ignored (Popen resets them too).
_RESET_SIGNALS = tuple(getattr(signal, s) for s in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, s))
PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper() -> bool:
    if not _proc.LINUX:
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


class Watchdog(Stops):
    def __init__(self, channel: Channel, host_id: str, owner: Optional[ProcId], report_path: Optional[str]):
        self.ch = channel
        self.host_id = host_id
        self.owner = owner
        self.report_path = report_path
        self.me = os.getpid()
        self.subreaper = False  # whether it is a child subreaper (``main`` makes it one)
        self.lock = threading.RLock()
        self.reaped = threading.Condition(self.lock)
        self.spawn_lock = threading.Lock()
        self.child_event = threading.Event()
        self.providers: Dict[str, Provider] = {}
        self.by_pid: Dict[int, Provider] = {}  # main pid -> provider, until reaped
        self.base_env: Dict[str, str] = dict(os.environ)
        self.finder = Finder(host_id, self._universe, self.empty)
        self.fence = _fence.detect().for_host(host_id)
        self.cpu = _proc.CpuSampler()
        self.deadlines: Dict[Any, Deadline] = {}  # stop operation id -> its deadline
        self._finished = threading.Event()
        self._finishing = threading.Lock()
        self.logs = _logfiles.LogGuard(self._finished)
        self.goodbye = False
        self.handover = False  # the host left the stops under way to us (a kernel restart)
        self.stopping = 0  # stop requests under way
        self.stopped: List[Outcome] = []  # what handed-over stops did, for the report they end with
        self.control: Optional[ControlServer] = None
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    # --- threads ------------------------------------------------------------------------

    def reaper(self) -> None:
        while not self._finished.is_set():
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                self.child_event.wait(0.2)
                self.child_event.clear()
                continue
            except InterruptedError:
                continue
            if info is not None:
                self.reap()

    def tracker(self) -> None:
        """Keep each provider's membership current, so a descendant that later escapes
        (double fork, setsid, cleared environment) is already known to be the provider's;
        and keep CPU samples, so ``ps`` figures are true on the first look."""
        interval = TRACK_INTERVAL if self.fence.kind != "none" else TRACK_INTERVAL_UNFENCED
        while not self._finished.wait(interval):
            with self.lock:
                targets = [p.target for p in self.providers.values()
                           if (p.status is None or p.target.members)]
            if targets:
                try:
                    table = self.find(targets)
                    self.cpu.percent(table[pid] for t in targets for pid in t.members if pid in table)
                    self.cpu.forget_all_but(st.ident for st in table.values())
                    self._report_members()
                except Exception as e:  # never let tracking kill the watchdog
                    print(f"hostconsole watchdog: tracking failed: {e!r}", flush=True)
            self._check_adopted()

    def _report_members(self) -> None:
        """Tell the host who belongs to each provider, when that changed: the host records
        the identities in the registry, for a replacement watchdog and for reap, which
        then need no marker (real servers rewrite theirs) and no ancestry."""
        events = []
        with self.lock:
            for p in self.providers.values():
                members = tuple(sorted(p.target.members.values()))
                if members != p.reported:
                    p.reported = members
                    events.append({"ev": "members", "name": p.name, "pid": p.main.pid, "start": p.main.start,
                                   "members": [list(m) for m in members]})
                if p.status is not None and not members and p.cell is not None and p.cell.remove():
                    p.cell = p.target.cell = None  # an ended run's empty cell goes
        if events:
            self._send_many(events)

    def _check_adopted(self) -> None:
        """Adopted providers are not our children: notice their end by looking."""
        events = []
        with self.lock:
            for p in self.providers.values():
                if not p.child and p.status is None and not _proc.alive(p.main):
                    p.status = -1
                    events.append({"ev": "exit", "name": p.name, "pid": p.main.pid, "start": p.main.start,
                                   "exit_code": None, "signal": None, "unknown": True})
            self.reaped.notify_all()
            if events:
                self._send_many(events)

    def owner_watch(self) -> None:
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

    def _send(self, msg: Dict[str, Any]) -> None:
        self._send_many([msg])

    def _send_many(self, msgs: List[Dict[str, Any]]) -> None:
        try:
            self.ch.send_many(msgs)
        except OSError:
            pass  # the owner is gone: its end of the story is ours to finish

    def handle(self, msg: Dict[str, Any]) -> None:
        if "malformed" in msg:
            print(f"hostconsole watchdog: skipping a malformed request: {msg['malformed']!r}", flush=True)
            return
        op = msg.get("op")
        rid = msg.get("id")
        reply: Dict[str, Any]
        try:
            if op == "spawn":
                self.spawn(msg)  # replies itself: see there
                return
            elif op == "stop":
                # Its deadline exists before the thread does: a "tighten" right behind this
                # request must find it.  And it counts as under way from now: see finish().
                self._deadline(msg.get("stop")).tighten(msg.get("within"))
                with self.lock:
                    self.stopping += 1
                try:
                    threading.Thread(target=self._stop_request, args=(rid, msg), daemon=True).start()
                except RuntimeError:  # no thread to spare (a process limit): stop from here
                    self._stop_request(rid, msg)
                return
            elif op == "tighten":
                self._deadline(msg.get("stop")).tighten(msg.get("within"))
                reply = {}
            elif op == "env":
                self.base_env = dict(msg["base"])
                reply = {}
            elif op == "adopt":
                reply = self.adopt(msg)
            elif op == "tree":
                reply = self.trees(msg.get("names"))
            elif op == "ping":
                reply = {"pid": self.me}
            elif op == "bye":
                self.goodbye = True
                self.handover = bool(msg.get("handover"))
                reply = {}
            elif op == "control_done":
                if self.control is not None:
                    self.control.answered(msg)
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

    def spawn(self, msg: Dict[str, Any]) -> None:
        spec = ProviderSpec.from_wire(msg["spec"])
        with self.lock:
            old = self.providers.get(spec.name)
            if old is not None and old.status is None and _proc.alive(old.main):
                raise ValueError(f"provider {spec.name!r} is still running in the watchdog")
        env = dict(self.base_env)
        env.pop("HOSTCONSOLE_PROVIDER", None)
        env.update(spec.env)
        env.update(msg["markers"])
        run = int(msg.get("run") or 1)
        log, offset = _logfiles.open_for_run(msg["log"], spec.name, run)
        cell = self.fence.cell(spec.name, run)
        try:
            with self.spawn_lock:
                before = _proc.now_stamp()
                pid = self._spawn(spec, env, log, msg.get("exe"), cell)
                # The reaper cannot reap the child while we hold spawn_lock, so its /proc
                # entry (a zombie at worst) still names it -- and by the time the reaper
                # can, the provider is registered and the host has its reply: an exit
                # event never overtakes the reply that announces the pid.
                main = _proc.spawned_identity(pid, before, _proc.now_stamp()) or ProcId(pid, 0)
                prov = Provider(spec, main, child=True, cell=cell, log=msg["log"], subreaper=self.subreaper)
                with self.lock:
                    self.providers[spec.name] = prov
                    self.by_pid[main.pid] = prov
                    self.logs.watch(msg["log"], msg.get("log_max"))
                    self._send({"re": msg["id"], "pid": main.pid, "start": main.start, "log_offset": offset,
                                "cell": str(cell.path) if cell is not None else None})
        finally:
            os.close(log)
        self.child_event.set()

    def _spawn(self, spec: ProviderSpec, env: Dict[str, str], log: int, exe: Optional[str],
               cell: Optional[_fence.Cell]) -> int:
        """posix_spawn (vfork and exec, ~0.1 ms less than Popen) in a new session, with
        output to ``log``, born inside ``cell`` (the spawning thread enters it for the spawn).
        Call with spawn_lock held: it is the only code that changes the watchdog's working
        directory (every other path the watchdog uses is absolute) or its cgroup."""
        argv0 = spec.argv[0]
        if exe is None:  # (the host names it; a watchdog on its own looks it up)
            exe = argv0 if os.sep in argv0 else shutil.which(argv0, path=env.get("PATH", os.defpath))
        if exe is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", argv0)
        try:
            os.chdir(spec.cwd)
        except OSError as e:
            raise ValueError(f"working directory {spec.cwd!r}: {e.strerror}") from None
        try:
            if cell is not None:
                self.fence.enter(cell)
            return os.posix_spawn(
                exe, list(spec.argv), env, setsid=True, setsigmask=(), setsigdef=_RESET_SIGNALS,
                file_actions=[(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, log, 1),
                              (os.POSIX_SPAWN_DUP2, log, 2)])
        finally:
            if cell is not None:
                self.fence.leave()
            os.chdir("/")

    def adopt(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        """Guard a running provider that another watchdog (now dead) spawned."""
        spec = ProviderSpec.from_wire(msg["spec"])
        main = ProcId(*msg["main"])
        if not _proc.alive(main):
            raise ValueError(f"provider {spec.name!r} (pid {main.pid}) is not running")
        cell = self.fence.cell_at(msg["cell"]) if msg.get("cell") else None
        prov = Provider(spec, main, child=False, cell=cell, log=msg.get("log"))
        for pid, start in msg.get("members", ()):
            prov.target.members[pid] = ProcId(pid, start)
        with self.lock:
            self.providers[spec.name] = prov
            if msg.get("log"):
                self.logs.watch(msg["log"], msg.get("log_max"))
        return {"adopted": spec.name}

    def trees(self, names: Optional[List[str]]) -> Dict[str, Any]:
        """Every live member of each provider, with its CPU %: [[pid, start, cpu], ...]."""
        with self.lock:
            targets = [p.target for n, p in self.providers.items() if names is None or n in names]
        table = self.find(targets)
        with self.lock:
            cpu = self.cpu.percent(table[pid] for t in targets for pid in t.members if pid in table)
        return {"trees": {t.name: sorted([pid, ident.start, cpu.get(ident, 0.0)] for pid, ident in t.members.items())
                          for t in targets}}

    # --- the end ------------------------------------------------------------------------

    def finish(self, reason: str) -> None:
        """Stop everything under us, record what happened, and mark the watchdog done."""
        with self._finishing:
            if self._finished.is_set():
                return
            t0 = time.monotonic()
            with self.lock:
                # Stops under way first finish as they were asked (a host that handed its stops
                # over left them to us): a provider is never stopped twice at once.
                longest = max([p.spec.stop_timeout for p in self.providers.values()] + [1.0])
                limit = time.monotonic() + longest + KILL_GRACE
                while self.stopping and time.monotonic() < limit:
                    self.reaped.wait(limit - time.monotonic())
                names = list(self.providers)
                requires = {n: p.spec.requires for n, p in self.providers.items()}
                longest = max([p.spec.stop_timeout for p in self.providers.values()] + [1.0])
            rest = Target("(unattributed)", None, None, signal.SIGTERM, longest)
            outcomes = self.stop(order_for_stop(names, requires), rest=rest)
            if self.handover:  # the stops the host handed over are part of the story
                outcomes = self.stopped + [o for o in outcomes if o.outcome != "gone"]
            report = {"host": self.host_id, "reason": reason, "goodbye": self.goodbye, "handover": self.handover,
                      "seconds": round(time.monotonic() - t0, 4),
                      "outcomes": [o.as_dict() for o in outcomes if o.outcome != "gone"]}
            print(f"hostconsole watchdog {self.host_id}: {json.dumps(report)}", flush=True)
            if self.report_path and report["outcomes"]:
                try:
                    registry.write_atomic(self.report_path, report)  # type: ignore[arg-type]
                except OSError as e:
                    print(f"hostconsole watchdog: cannot write its report: {e}", flush=True)
            self._finished.set()
            if self.control is not None:
                self.control.close()
            self.fence.remove_host()


def main(argv: Optional[List[str]] = None) -> int:
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
    subreaper = _set_subreaper()
    import socket

    os.set_inheritable(args.fd, False)  # providers are spawned with every inheritable fd
    channel = Channel(socket.socket(fileno=args.fd))
    owner = None
    if args.owner:
        pid, start = args.owner.split(":")
        owner = ProcId(int(pid), int(start))
    wd = Watchdog(channel, args.host_id, owner, args.report)
    wd.subreaper = subreaper
    if args.control:
        wd.control = ControlServer(bind_unix(args.control), args.host_id,
                                   {"ping": lambda req: {"pid": wd.me}, "tree": lambda req: wd.trees(None)},
                                   wd._send)

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    # A watchdog told to terminate stops its providers first, like any service manager.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    threads = [wd.reaper, wd.tracker, wd.logs.run, wd.owner_watch]
    if wd.control is not None:
        threads.append(wd.control.serve)
    try:
        for fn in threads:
            threading.Thread(target=fn, daemon=True).start()
    except RuntimeError as e:
        # Without its threads it cannot keep its promises: refuse to start (the host says so).
        print(f"hostconsole watchdog: cannot start its threads ({e}); is a process limit reached?", flush=True)
        return 1
    reason = "owner closed the channel"
    try:
        wd._send({"ev": "ready", "pid": os.getpid(), "fence": wd.fence.kind})
        while True:
            msg = channel.recv()
            if msg is None:
                break
            wd.handle(msg)
    except SystemExit as e:
        reason = f"watchdog received signal {int(e.code or 128) - 128}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if wd.goodbye:
            reason = "host shut down, its stops handed over" if wd.handover else "host shut down"
        wd.finish(reason)
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
