"""Leftovers of dead hosts: judging whether a host is alive, and stopping what it left.

``Judge`` is the one judgement of a host's life, shared by reap, port diagnosis and the
CLI.  A host is

* ``ALIVE`` while its owner process (named by the ``HOSTCONSOLE_OWNER`` marker of its own
  processes, or by its registry entry) runs;
* ``ENDING`` when its owner is gone but its watchdog still runs (it is stopping them);
* ``DEAD`` when its owner is gone and no watchdog of it runs;
* ``UNKNOWN`` when nothing names its owner: it is never judged dead on a guess.

A *leftover* is a process of a ``DEAD`` host: marked (this user's, this state directory's),
recorded as a member in its registry entry (pid and start time), or in one of its cells.
An ``ENDING`` host's processes are its watchdog's to stop (a restarted kernel's previous
host hands its stops over): reap leaves them to it.  The registry adds what a marker cannot say (stop order, signal,
timeout) but never decides alone: a process without the marker, a process of a live host,
another user's process and a recycled pid are never signalled.
"""

from __future__ import annotations

import enum
import os
import signal
from pathlib import Path
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _fence, _logfiles, _proc, _statedir, registry
from ._fence import Cell
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
    """Whether each host is alive, judged once per host from one scan.

    ``ALIVE`` while its owner runs; ``ENDING`` when its owner is gone but its watchdog
    still runs (it is stopping what the host left); ``DEAD`` when neither runs -- or when
    nothing shows it alive at all (no owner named anywhere, no live watchdog, no registry
    entry: a marked process of a host nobody knows is a leftover); ``UNKNOWN`` when a
    registry entry exists but names no owner (corrupt, foreign): never judged on a guess.
    """

    def __init__(self, records: Mapping[str, registry.HostRecord], marked: Sequence[Marked],
                 entries: Collection[str] = ()):
        self.records = records
        self._entries = set(entries) | set(records)  # host ids with a registry directory
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
        if owner is not None and _proc.alive(owner):
            return Life.ALIVE
        rec = self.records.get(host_id)
        watchdog = self._watchdogs.get(host_id) or (rec.watchdog if rec is not None else None)
        if watchdog is not None and _proc.alive(watchdog):
            return Life.ENDING
        if owner is None and host_id in self._entries:
            return Life.UNKNOWN
        return Life.DEAD

    def is_leftover(self, m: Marked) -> bool:
        return self.life(m.host_id) is Life.DEAD


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
    entries = [d.name for d in registry.host_dirs(state_dir)]
    marked = [m for m in scan_marked(os.getuid()) if same_dir(m.state_dir, state_dir) and m.host_id not in exclude]
    return Judge(records, marked, entries), marked


def _recorded(rec: Optional[registry.HostRecord]) -> Dict[str, Tuple[List[ProcId], Optional[Cell]]]:
    """What a dead host's registry entry shows still running, by provider: the identities
    recorded as its members (verified: pid and start time), and its cell.  Another user's
    process counts too -- its identity, recorded while it was a member, proves it the
    host's -- but only root may signal it; others would only be refused."""
    out: Dict[str, Tuple[List[ProcId], Optional[Cell]]] = {}
    if rec is None:
        return out
    me_root = os.geteuid() == 0
    uid = os.getuid()
    fence = _fence.for_record(rec.fence, rec.host_id)
    for name, p in rec.providers.items():
        idents = [i for i in dict.fromkeys(([p.main] if p.main else []) + list(p.members))
                  if _proc.alive(i) and (me_root or _proc.owner_uid(i.pid) == uid)]
        cell = fence.cell_at(p.cell) if fence is not None and p.cell else None
        if cell is not None:
            for pid in cell.pids():
                ident = _proc.identity(pid)
                if ident is not None and ident not in idents:
                    idents.append(ident)
        if idents:
            out[name] = (idents, cell)
    return out


def find_leftovers(state_dir: Path, exclude: Sequence[str] = ()) -> Dict[str, Dict[str, List[ProcId]]]:
    """What dead hosts of ``state_dir`` left running: {host id: {provider ("" for a
    watchdog): [identities]}}, by marker, by recorded identity and by fence."""
    judge, marked = survey(state_dir, exclude)
    return _leftovers(judge, marked, exclude)[0]


def _leftovers(judge: Judge, marked: Sequence[Marked], exclude: Sequence[str]
               ) -> "tuple[Dict[str, Dict[str, List[ProcId]]], Dict[Tuple[str, str], Cell]]":
    found: Dict[str, Dict[str, List[ProcId]]] = {}
    cells: Dict[Tuple[str, str], Cell] = {}
    for m in marked:
        if judge.is_leftover(m):
            found.setdefault(m.host_id, {}).setdefault(m.provider or "", []).append(m.ident)
    for hid, rec in judge.records.items():
        if hid in exclude or judge.life(hid) is not Life.DEAD:
            continue
        for name, (idents, cell) in _recorded(rec).items():
            have = found.setdefault(hid, {}).setdefault(name, [])
            have.extend(i for i in idents if i not in have)
            if cell is not None:
                cells[(hid, name)] = cell
        # Every cell of the host, recorded or not (a provider started moments before the
        # host died may not be in its entry yet: its cell is there all the same).
        for cell in _fence.cells_of(rec.fence, hid):
            name = cell.path.name.rsplit(".", 1)[0]
            idents = [i for i in (_proc.identity(pid) for pid in cell.pids()) if i is not None]
            if idents:
                have = found.setdefault(hid, {}).setdefault(name, [])
                have.extend(i for i in idents if i not in have)
                cells.setdefault((hid, name), cell)
    return found, cells


def reap(dry_run: bool = False, state_dir: Union[str, "os.PathLike[str]", None] = None,
         exclude: Sequence[str] = ()) -> ReapReport:
    """Find leftovers of dead hosts and, unless ``dry_run``, stop them with the stop path.

    Registry entries of dead hosts with nothing left running are removed (their logs are
    kept as the previous logs of their owner: see ``_logfiles.keep_previous``).
    """
    root = _statedir.resolve(state_dir)
    judge, marked = survey(root, exclude)
    found, cells = _leftovers(judge, marked, exclude)

    levels: List[List[Target]] = []
    targets: List[Target] = []  # in the order found, for the dry-run report
    for hid, by_name in found.items():
        rec = judge.records.get(hid)
        info = rec.providers if rec is not None else {}
        names = sorted(by_name)
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
                members = {ident.pid: ident for ident in by_name[name]}
                main = p.main if p is not None and p.main in members.values() else None
                if main is None:
                    # A provider's main process leads its own process group, so find it among
                    # its members -- the group must get the stop signal at once, not member by
                    # member (a shell whose child dies first may end before its trap can run).
                    for ident in members.values():
                        st = _proc.stat(ident.pid)
                        if st is not None and st.start == ident.start and st.pgid == ident.pid:
                            main = ident
                            break
                t = Target(name or "(watchdog)", main, main.pid if main else None, sig, timeout, members=members,
                           host_id=hid, marker=name, cell=cells.get((hid, name)))
                levels[i].append(t)
                targets.append(t)

    def pids_of(t: Target) -> List[int]:
        return sorted(i.pid for i in found.get(t.host_id or "", {}).get(t.marker or "", []))

    if dry_run:
        return ReapReport([{"host": t.host_id, "name": t.name, "pids": pids_of(t), "outcome": "would stop",
                            "seconds": None} for t in targets], dry_run=True)

    def universe() -> Dict[int, ProcStat]:
        # What the leftovers are, and what they spawned since: a process forked by one
        # proven the host's is the host's.
        roots = [pid for t in targets for pid in t.members]
        return _proc.descendants(roots)

    outcomes = stop_levels(levels, Finder("", universe)) if targets else []
    out = []
    for t, o in zip([t for level in levels for t in level], outcomes):
        out.append({"host": t.host_id, "name": t.name, "pids": pids_of(t), "outcome": o.outcome,
                    "exit_code": o.exit_code, "signal": o.signal, "seconds": o.seconds, "survivors": o.survivors})
    removed = []
    remaining = find_leftovers(root, exclude) if targets else {}
    for hid, rec in judge.records.items():
        # An entry is never removed on a guess (no owner: maybe a live host's), nor while
        # anything it recorded still runs: it is the only record of them.
        if hid in exclude or rec.owner is None or judge.life(hid) is not Life.DEAD or hid in remaining:
            continue
        _logfiles.keep_previous(rec.dir, root, rec.log_key)
        _fence.remove_host_cells(rec.fence, hid)
        _statedir.remove_tree(rec.dir)
        removed.append(hid)
    return ReapReport(out, removed=removed)
