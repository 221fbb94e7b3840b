"""Leftovers of dead hosts: judging whether a host is alive, and stopping what it left.

``Judge`` is the one judgement of a host's life, shared by reap, port diagnosis and the
CLI.  A host is

* ``ALIVE`` while its owner process (named by the ``HOSTCONSOLE_OWNER`` marker of its own
  processes, or by its registry entry) runs;
* ``ENDING`` when its owner is gone but its watchdog still runs (it is stopping them);
* ``DEAD`` when its owner is gone and no watchdog of it runs;
* ``UNKNOWN`` when nothing names its owner: it is never judged dead on a guess.

A *leftover* is a marked process of this user and this state directory whose host is
``DEAD`` or ``ENDING``.  The registry adds what a marker cannot say (stop order, signal,
timeout) but never decides alone: a process without the marker, a process of a live host,
another user's process and a recycled pid are never signalled.
"""

from __future__ import annotations

import enum
import os
import signal
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import _proc, _statedir, registry
from ._observe import Marked, same_dir, scan_marked
from ._proc import ProcId, ProcStat
from ._stop import Finder, Target, order_for_stop, stop_levels
from ._table import Table

DEFAULT_TIMEOUT = 5.0


class Life(enum.Enum):
    ALIVE = "alive"
    ENDING = "ending"
    DEAD = "dead"
    UNKNOWN = "unknown"


class Judge:
    """Whether each host is alive, judged once per host from one scan."""

    def __init__(self, records: Mapping[str, registry.HostRecord], marked: Sequence[Marked]):
        self.records = records
        self._watchdogs = {m.host_id: m.ident for m in marked if m.provider is None}
        self._owners: Dict[str, Optional[ProcId]] = {}
        for m in marked:
            if m.owner is not None:
                self._owners.setdefault(m.host_id, m.owner)
        self._cache: Dict[str, Life] = {}

    def owner(self, host_id: str) -> Optional[ProcId]:
        owner = self._owners.get(host_id)
        rec = self.records.get(host_id)
        return owner if owner is not None else (rec.owner if rec is not None else None)

    def life(self, host_id: str) -> Life:
        if host_id not in self._cache:
            self._cache[host_id] = self._judge(host_id)
        return self._cache[host_id]

    def _judge(self, host_id: str) -> Life:
        owner = self.owner(host_id)
        if owner is None:
            return Life.UNKNOWN
        if _proc.alive(owner):
            return Life.ALIVE
        rec = self.records.get(host_id)
        watchdog = self._watchdogs.get(host_id) or (rec.watchdog if rec is not None else None)
        return Life.ENDING if watchdog is not None and _proc.alive(watchdog) else Life.DEAD

    def is_leftover(self, m: Marked) -> bool:
        return self.life(m.host_id) in (Life.DEAD, Life.ENDING)


class ReapReport(Table):
    """What ``reap`` found (and, unless a dry run, what became of it)."""

    empty = "(no leftovers)"
    state_key = "outcome"
    columns = (
        ("host", "HOST", str),
        ("name", "PROVIDER", str),
        ("pids", "PIDS", lambda v: ",".join(map(str, v)) or "-"),
        ("outcome", "OUTCOME", str),
        ("seconds", "SECONDS", lambda v: "-" if v is None else f"{v:.3f}"),
    )

    def __init__(self, records: List[Dict[str, Any]], removed: Sequence[str] = (), dry_run: bool = False):
        super().__init__(records)
        self.removed = list(removed)  # registry entries of dead hosts that were cleaned up
        self.dry_run = dry_run

    @property
    def found(self) -> int:
        return sum(len(r["pids"]) for r in self.records)

    def summary(self) -> str:
        if not self.records:
            return "no leftovers of dead hosts"
        hosts = sorted({r["host"] for r in self.records})
        verb = "would stop" if self.dry_run else "stopped"
        return (f"{verb} {self.found} leftover process(es) of dead host(s) {', '.join(hosts)}: "
                + ", ".join(r["name"] for r in self.records))


def survey(state_dir: Path, exclude: Sequence[str] = ()) -> "tuple[Judge, List[Marked]]":
    """One look at the state dir: its hosts' records, and this user's marked processes of
    it; with the judge of their hosts' lives."""
    records = {r.host_id: r for r in registry.read_all(state_dir)}
    marked = [m for m in scan_marked(os.getuid()) if same_dir(m.state_dir, state_dir) and m.host_id not in exclude]
    return Judge(records, marked), marked


def find_leftovers(state_dir: Path, exclude: Sequence[str] = ()) -> Dict[str, List[Marked]]:
    """Marked processes of dead hosts of ``state_dir``, by host id."""
    judge, marked = survey(state_dir, exclude)
    found: Dict[str, List[Marked]] = {}
    for m in marked:
        if judge.is_leftover(m):
            found.setdefault(m.host_id, []).append(m)
    return found


def reap(dry_run: bool = False, state_dir: Union[str, "os.PathLike[str]", None] = None,
         exclude: Sequence[str] = ()) -> ReapReport:
    """Find leftovers of dead hosts and, unless ``dry_run``, stop them with the stop path.

    Registry entries of dead hosts with nothing left running are removed.
    """
    root = _statedir.resolve(state_dir)
    judge, marked = survey(root, exclude)
    found: Dict[str, List[Marked]] = {}
    for m in marked:
        if judge.is_leftover(m):
            found.setdefault(m.host_id, []).append(m)

    levels: List[List[Target]] = []
    targets: List[Target] = []  # in the order found, for the dry-run report
    for hid, procs in found.items():
        rec = judge.records.get(hid)
        info = rec.providers if rec is not None else {}
        names = sorted({m.provider or "" for m in procs})
        requires = {n: info[n].requires if n in info else () for n in names if n}
        host_levels = order_for_stop([n for n in names if n], requires)
        if "" in names:  # the dead host's watchdog, last: it is nobody's provider
            host_levels.append([""])
        for i, level in enumerate(host_levels):
            while len(levels) <= i:
                levels.append([])
            for name in level:
                p = info.get(name) if name else None
                sig = p.stop_signal if p is not None else int(signal.SIGTERM)
                timeout = min(p.stop_timeout, DEFAULT_TIMEOUT) if p is not None else DEFAULT_TIMEOUT
                members = {m.ident.pid: m.ident for m in procs if (m.provider or "") == name}
                main = p.main if p is not None else None
                pgid: Optional[int] = main.pid if main is not None and main in members.values() else None
                if pgid is None:
                    # Not (yet) in the registry: a provider's main process leads its own
                    # process group, so find it among the marked processes themselves --
                    # the group must get the stop signal at once, not member by member
                    # (a shell whose child dies first may end before its trap can run).
                    main = None
                    for ident in members.values():
                        st = _proc.stat(ident.pid)
                        if st is not None and st.start == ident.start and st.pgid == ident.pid:
                            main, pgid = ident, ident.pid
                            break
                t = Target(name or "(watchdog)", main, pgid, sig, timeout, members=members, host_id=hid,
                           marker=name)
                levels[i].append(t)
                targets.append(t)

    def pids_of(t: Target) -> List[int]:
        return sorted(m.ident.pid for m in found.get(t.host_id or "", []) if (m.provider or "") == (t.marker or ""))

    if dry_run:
        return ReapReport([{"host": t.host_id, "name": t.name, "pids": pids_of(t), "outcome": "would stop",
                            "seconds": None} for t in targets], dry_run=True)

    dead_hosts = set(found)
    uid = os.getuid()

    def universe() -> Dict[int, ProcStat]:
        # Only processes that carry a dead host's marker, and what they spawned since.
        roots = [pid for t in targets for pid in t.members]
        return {pid: st for pid, st in _proc.descendants(roots).items()
                if _proc.markers(pid).get("HOSTCONSOLE_HOST") in dead_hosts and _proc.owner_uid(pid) == uid}

    outcomes = stop_levels(levels, Finder("", universe)) if targets else []
    out = []
    for t, o in zip([t for level in levels for t in level], outcomes):
        out.append({"host": t.host_id, "name": t.name, "pids": pids_of(t), "outcome": o.outcome,
                    "exit_code": o.exit_code, "signal": o.signal, "seconds": o.seconds, "survivors": o.survivors})
    removed = []
    remaining = find_leftovers(root, exclude) if targets else {}
    for hid, rec in judge.records.items():
        # An entry whose owner cannot be read may belong to a live host: keep it.
        if hid not in exclude and rec.owner is not None and not rec.alive and hid not in remaining:
            _statedir.remove_tree(rec.dir)
            removed.append(hid)
    return ReapReport(out, removed=removed)
