"""The watchdog's side of exits and stops: what it knows of each provider, which
processes are whose, reaping, and carrying out the host's stop requests.

``Stops`` is mixed into ``Watchdog`` (``_watchdog.py``), which owns the state used here
(declared on ``Stops``) and the threads that run it:

* ``find`` and ``empty``: each provider's members, for the tracker and the stop ladder
  (``_stop.stop_levels``, through ``_LockedFinder``);
* ``reap``: by the reaper thread, and by a stop itself (``status_of``, ``empty``), so a
  stop of 50 does not wait for the reaper to wake;
* ``_stop_request`` and ``stop``: a stop request, on a thread of its own, with a deadline
  the host may tighten while it runs (``_deadline``).

Locks: ``spawn_lock`` comes before ``lock``.  Every reaping holds ``spawn_lock`` (a child
is in ``by_pid`` exactly until it is reaped, which is what ``own_child`` relies on);
``find`` looks at /proc and proves emptiness before it takes ``lock``.  While a stop
carries a provider out, its exit is told by the stop's outcome (one reply), not by an exit
event of its own (``Provider.stopping``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from . import _fence, _proc
from ._proc import ProcId, ProcStat
from ._stop import Deadline, Finder, Outcome, Target, stop_levels
from .spec import ProviderSpec


class Provider:
    """One provider as the watchdog knows it."""

    def __init__(self, spec: ProviderSpec, main: ProcId, child: bool, cell: Optional[_fence.Cell] = None,
                 log: Optional[str] = None, subreaper: bool = False):
        self.spec = spec
        self.child = child  # spawned by us; False for one adopted from a watchdog that died
        self.main = main
        self.cell = cell
        self.status: Optional[int] = None  # raw wait status once reaped
        self.target = Target.of(spec, main, cell)
        self.target.log = log
        self.target.contained = child and subreaper
        self.reported: Tuple[ProcId, ...] = ()  # the members the host was last told of
        # Stop requests under way that include it: its exit is told by their outcome, not by
        # an exit event of its own (a purge of 50 is then one message, not 101).
        self.stopping = 0
        self.exit_held = False  # an exit event kept back for that reason

    def exit_event(self) -> Dict[str, Any]:
        code, sig = _decode(self.status)
        return {"ev": "exit", "name": self.name, "pid": self.main.pid, "start": self.main.start,
                "exit_code": code, "signal": sig}

    @property
    def name(self) -> str:
        return self.spec.name


class Stops:
    """Exits and stops, for ``Watchdog`` (which sets all of this up)."""

    me: int
    host_id: str
    subreaper: bool  # whether the watchdog is a child subreaper
    lock: "threading.RLock"
    reaped: threading.Condition  # on ``lock``: a provider's exit was recorded
    spawn_lock: "threading.Lock"
    providers: Dict[str, "Provider"]
    by_pid: Dict[int, "Provider"]  # main pid -> provider, until reaped
    finder: Finder
    deadlines: Dict[Any, Deadline]  # stop operation id -> its deadline
    stopping: int  # stop requests under way
    handover: bool  # the host left the stops under way to us (a kernel restart)
    stopped: List[Outcome]  # what handed-over stops did, for the report they end with

    def _send(self, msg: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _send_many(self, msgs: List[Dict[str, Any]]) -> None:
        raise NotImplementedError

    # --- what belongs to us -------------------------------------------------------------

    def _universe(self) -> Dict[int, ProcStat]:
        # Our subtree, plus the trees of adopted providers (not our children: they were
        # re-parented elsewhere when their first watchdog died).
        roots = [self.me]
        with self.lock:
            for p in self.providers.values():
                if not p.child:
                    roots.extend(p.target.members)
        tree = _proc.descendants(roots)
        tree.pop(self.me, None)
        return tree

    def find(self, targets: List[Target], rest: Optional[Target] = None) -> Dict[int, ProcStat]:
        # The walk of /proc runs without the lock (a spawn must not wait a tracker's walk);
        # only the attribution, which changes targets, holds it.
        table = self.finder.look_for(targets, rest)
        empty = self.finder.cells_empty(targets)  # (takes spawn_lock, which comes before the lock)
        with self.lock:
            return self.finder.attribute(targets, table, rest, empty)

    def empty(self) -> bool:
        """Whether no process at all is below us: every child reaped, and, with nothing
        reaped or spawned meanwhile (spawn_lock), no child, living or ended, on any thread.
        A descendant alive now has a living line of parents up to us (we are its child
        subreaper), so we would see its topmost one, or that one's ended parent, here.
        While a provider's main process is still an unreaped child (the tracker's usual
        case), the answer is known without reading /proc."""
        if not self.subreaper:
            return False
        with self.spawn_lock:
            self._reap_held()
            if self.by_pid:  # (every mutation of by_pid holds spawn_lock)
                return False
            if not os.path.exists(f"/proc/{self.me}/task/{self.me}/children"):
                return False  # (without the kernel's children lists, an empty answer proves nothing)
            return not _proc.children(self.me)

    def status_of(self, target: Target, wait: float = 1.0) -> Tuple[Optional[int], Optional[str]]:
        """Exit code and signal name of a target's main process, once it is reaped."""
        deadline = time.monotonic() + wait
        with self.lock:
            prov = self.providers.get(target.name)
            if prov is None or prov.main != target.main or not prov.child:
                return None, None  # (an adopted provider's exit status is not ours to know)
            if prov.status is not None:
                return _decode(prov.status)
        self.reap()  # (here, not at the reaper's next wake-up: a stop of 50 settles at once)
        with self.lock:
            while prov.status is None and time.monotonic() < deadline:
                self.reaped.wait(deadline - time.monotonic())
            return _decode(prov.status)

    def reap(self) -> None:
        """Reap every child that has ended (a stop of 50 ends 50 at once), and record and
        report their exits.  All of it under spawn_lock: a spawn registers its child before
        it may be reaped, and a child stays in ``by_pid`` exactly until it is reaped, so
        ``own_child`` (which may skip proving a pid's identity) is never wrong."""
        with self.spawn_lock:
            self._reap_held()

    def _reap_held(self) -> None:
        reaped = []
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

    def _on_reaped(self, reaped: List[Tuple[int, int]]) -> None:
        events = []
        with self.lock:
            for pid, status in reaped:
                prov = self.by_pid.pop(pid, None)  # an orphan we reaped is nobody's main
                if prov is not None and prov.status is None:
                    prov.status = status
                    if prov.stopping:
                        prov.exit_held = True
                    else:
                        events.append(prov.exit_event())
            self.reaped.notify_all()
            if events:  # one write for the lot, still under the lock: after any spawn reply
                self._send_many(events)

    def _deadline(self, key: Any) -> Deadline:
        """The deadline of stop operation ``key`` (made on first mention)."""
        with self.lock:
            dl = self.deadlines.get(key)
            if dl is None:
                dl = self.deadlines[key] = Deadline()
            return dl

    def _stop_request(self, rid: Any, msg: Dict[str, Any]) -> None:
        key = msg.get("stop", 0)
        dl = self._deadline(key)
        try:
            rest = None
            if msg.get("sweep"):
                # A purge: everything under the watchdog is the host's, attributed or not.
                rest = Target("(unattributed)", None, None, signal.SIGTERM, 1.0)
            def done(ended: List[Tuple[Target, Outcome]]) -> None:  # (as soon as they are)
                self._send_many([{"ev": "stopped", "name": t.name, "pid": t.main.pid, "start": t.main.start,
                                  "outcome": o.as_dict()} for t, o in ended if t.main is not None])

            outcomes = self.stop(msg["levels"], dl, rest=rest, on_done=done)
            reply: Dict[str, Any] = {"report": [o.as_dict() for o in outcomes]}
            with self.lock:
                if self.handover:  # the host left before the answer: this goes in our report
                    self.stopped.extend(o for o in outcomes if o.outcome != "gone")
        except Exception as e:  # the host falls back to stopping by itself
            reply = {"error": {"type": type(e).__name__, "message": str(e)}}
        finally:
            with self.lock:
                self.deadlines.pop(key, None)
                self.stopping -= 1
                self.reaped.notify_all()
        reply["re"] = rid
        self._send(reply)

    def stop(self, names_by_level: List[List[str]], deadline: Optional[Deadline] = None,
             rest: Optional[Target] = None, on_done: Any = None) -> List[Outcome]:
        with self.lock:
            provs = [self.providers[n] for names in names_by_level for n in names if n in self.providers]
            levels = [[self.providers[n].target for n in names if n in self.providers] for names in names_by_level]
            for p in provs:
                p.stopping += 1
        told: Dict[str, str] = {}  # name -> outcome, of those the stop's outcome tells of
        try:
            outcomes = stop_levels(levels, _LockedFinder(self), self.status_of, rest=rest, deadline=deadline,
                                   on_done=on_done)
            told = {o.name: o.outcome for o in outcomes}
            return outcomes
        finally:
            with self.lock:
                held = []
                for p in provs:
                    p.stopping -= 1
                    # An exit kept back that no outcome carries (the stop failed, or found it
                    # already gone) is told as usual.
                    if p.exit_held and not p.stopping and told.get(p.name, "gone") == "gone":
                        held.append(p.exit_event())
                    if not p.stopping:
                        p.exit_held = False
                if held:
                    self._send_many(held)


class _LockedFinder(Finder):
    """The watchdog's finder, shared by the tracker and every stop (hence the lock)."""

    def __init__(self, watchdog: Stops):
        super().__init__(watchdog.host_id, watchdog._universe, watchdog.empty)
        self._w = watchdog

    def find(self, targets: Any, rest: Optional[Target] = None) -> Dict[int, ProcStat]:
        return self._w.find(targets, rest)

    def own_child(self, ident: ProcId) -> bool:
        prov = self._w.by_pid.get(ident.pid)  # (only children not yet reaped are in by_pid)
        return prov is not None and prov.child and prov.main == ident

    def reaping_held(self) -> Any:
        return self._w.spawn_lock


def _decode(status: Optional[int]) -> Tuple[Optional[int], Optional[str]]:
    if status is None:
        return None, None
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return None, _proc.signal_name(-code)
    return code, None
