"""Finding and stopping leftovers of dead hosts.

A *leftover* is a process of this user that carries ``HOSTCONSOLE_HOST`` for this state
directory, and whose host is dead: the owner named in its own ``HOSTCONSOLE_OWNER`` marker
(pid and start time) no longer exists.  The registry adds what the marker cannot say
(stop order, stop signal and timeout of each provider) but never decides alone: a process
without the marker, a process of a live host, another user's process and a recycled pid
are never signalled.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from . import _proc, _statedir, registry
from ._proc import ProcId, ProcStat
from ._stop import Finder, Target, order_for_stop, stop_levels
from ._table import Table

DEFAULT_TIMEOUT = 5.0


def _owner(markers: Dict[str, str]) -> Optional[ProcId]:
    try:
        pid, start = markers["HOSTCONSOLE_OWNER"].split(":")
        return ProcId(int(pid), int(start))
    except (KeyError, ValueError):
        return None


def _same_dir(a: Optional[str], b: Path) -> bool:
    if not a:
        return False
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


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

    def __init__(self, records, removed: Sequence[str] = (), dry_run: bool = False):
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


def find_leftovers(state_dir: Path, exclude: Sequence[str] = ()) -> Dict[str, Dict[ProcId, Dict[str, str]]]:
    """Marked processes of dead hosts of ``state_dir``: {host id: {identity: markers}}."""
    records = {r.host_id: r for r in registry.read_all(state_dir)}
    me, uid = os.getpid(), os.getuid()
    liveness: Dict[ProcId, bool] = {}
    found: Dict[str, Dict[ProcId, Dict[str, str]]] = {}
    for pid in _proc.all_pids():
        if pid == me or _proc.owner_uid(pid) != uid:
            continue
        m = _proc.markers(pid)
        hid = m.get("HOSTCONSOLE_HOST")
        if not hid or hid in exclude or not _same_dir(m.get("HOSTCONSOLE_STATE_DIR"), state_dir):
            continue
        owner = _owner(m)
        if owner is None and hid in records:
            owner = records[hid].owner
        if owner is None:
            continue  # cannot prove its host dead: leave it alone
        if owner not in liveness:
            liveness[owner] = _proc.alive(owner)
        if liveness[owner]:
            continue
        st = _proc.stat(pid)
        if st is None or st.dead or _proc.owner_uid(pid) != uid:
            continue
        found.setdefault(hid, {})[st.ident] = m
    return found


def reap(dry_run: bool = False, state_dir: Union[str, os.PathLike, None] = None,
         exclude: Sequence[str] = ()) -> ReapReport:
    """Find leftovers of dead hosts and, unless ``dry_run``, stop them with the stop path.

    Registry entries of dead hosts with nothing left running are removed.
    """
    root = Path(state_dir or _statedir.default_state_dir()).expanduser().absolute()
    records = {r.host_id: r for r in registry.read_all(root)}
    found = find_leftovers(root, exclude)

    levels: List[List[Target]] = []
    targets: List[Target] = []  # in the order found, for the dry-run report
    for hid, procs in found.items():
        rec = records.get(hid)
        info = rec.providers if rec is not None else {}
        names = sorted({m.get("HOSTCONSOLE_PROVIDER", "") for m in procs.values()})
        requires = {n: info.get(n, {}).get("requires", []) for n in names if n}
        host_levels = order_for_stop([n for n in names if n], requires)
        if "" in names:  # the dead host's watchdog, last: it is nobody's provider
            host_levels.append([""])
        for i, level in enumerate(host_levels):
            while len(levels) <= i:
                levels.append([])
            for name in level:
                p = info.get(name, {}) if name else {}
                main = registry._ident(p)
                try:
                    sig = int(p.get("stop_signal", signal.SIGTERM))
                    timeout = min(float(p.get("stop_timeout", DEFAULT_TIMEOUT)), DEFAULT_TIMEOUT)
                except (TypeError, ValueError):
                    sig, timeout = signal.SIGTERM, DEFAULT_TIMEOUT
                members = {ident.pid: ident for ident, m in procs.items()
                           if m.get("HOSTCONSOLE_PROVIDER", "") == name}
                pgid = p.get("pgid") if main in procs else None
                if main not in procs:
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
                t = Target(name or "(watchdog)", main, pgid, sig, timeout, members=members,
                           host_id=hid, marker=name)
                levels[i].append(t)
                targets.append(t)

    if dry_run:
        records_out = [{"host": t.host_id, "name": t.name, "pids": sorted(t.members), "outcome": "would stop",
                        "seconds": None} for t in targets]
        return ReapReport(records_out, dry_run=True)

    dead_hosts = set(found)

    def universe() -> Dict[int, ProcStat]:
        # Only processes that carry a dead host's marker, and what they spawned since.
        roots = [pid for t in targets for pid in t.members]
        out = {}
        for pid, st in _proc.descendants(roots).items():
            if _proc.markers(pid).get("HOSTCONSOLE_HOST") in dead_hosts and _proc.owner_uid(pid) == os.getuid():
                out[pid] = st
        return out

    outcomes = stop_levels(levels, Finder("", universe)) if targets else []
    out = []
    for t, o in zip([t for level in levels for t in level], outcomes):
        out.append({"host": t.host_id, "name": t.name, "pids": sorted(pid for pid in found_pids(found, t)),
                    "outcome": o.outcome, "exit_code": o.exit_code, "signal": o.signal,
                    "seconds": o.seconds, "survivors": o.survivors})
    removed = []
    remaining = find_leftovers(root, exclude) if targets else {}
    for hid, rec in records.items():
        # An entry whose owner cannot be read may belong to a live host: keep it.
        if hid not in exclude and rec.owner is not None and not rec.alive and hid not in remaining:
            _statedir.remove_tree(rec.dir)
            removed.append(hid)
    return ReapReport(out, removed=removed)


def found_pids(found, t: Target) -> List[int]:
    return [ident.pid for ident, m in found.get(t.host_id, {}).items()
            if m.get("HOSTCONSOLE_PROVIDER", "") == (t.marker or "")]
