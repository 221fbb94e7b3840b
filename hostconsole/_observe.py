"""Observation: ``ps`` records, live figures of process trees, and the scan of marked processes.

One builder (``ps_record``) makes every ``ps`` record, for ``Host.ps()`` and for
``hostconsole ps`` alike, from a ``registry.ProviderRecord`` (what a host publishes, and
what ``Provider.record()`` returns) and the figures of its tree.  Trees and their CPU %
come from the watchdog when it is there (it samples CPU as it tracks members, so the first
look is true); ``tree_figures`` adds memory, process count and listening ports the same way
for every caller.  States are always the SPEC's: a dead host's provider is ``stopped``
once nothing of it runs, and the host's own liveness is the host record's ``alive``.

``scan_marked`` is the one pass over the process table that finds marked processes, for
reap, port diagnosis and the CLI.

No locks of the host are taken here; callers pass plain values.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from . import _proc
from ._proc import ProcId
from .registry import ProviderRecord
from .state import State

if TYPE_CHECKING:
    from ._session import Session
    from ._table import PsTable
    from .provider import Provider, ProviderTable

Member = Tuple[ProcId, float]  # a process of a tree, and its CPU %
EMPTY_FIGURES: Dict[str, Any] = {"cpu_percent": 0.0, "rss": 0, "nprocs": 0, "ports": []}
LIVE_STATES = (State.STARTING, State.RUNNING, State.STOPPING)


def members_from_wire(rows: Iterable[Sequence[Any]]) -> List[Member]:
    """The watchdog's ``[[pid, start, cpu], ...]`` as members."""
    out = []
    for row in rows:
        pid, start = int(row[0]), int(row[1])
        out.append((ProcId(pid, start), float(row[2]) if len(row) > 2 else 0.0))
    return out


# --- figures ------------------------------------------------------------------------------

if _proc.LINUX:
    _PAGE = os.sysconf("SC_PAGE_SIZE")

    def _rss(pid: int) -> Optional[int]:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            return None

    _listening = _proc.listening_sockets

    def _sockets(pid: int) -> List[int]:
        """The inodes of a process's sockets."""
        found: List[int] = []
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return found
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                found.append(int(link[8:-1]))
        return found

else:  # psutil supplies the same facts elsewhere

    def _rss(pid: int) -> Optional[int]:
        import psutil

        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None

    def _listening() -> Dict[int, int]:
        return {}

    def _sockets(pid: int) -> List[int]:
        return [pid]  # (not inodes: psutil below asks the process itself)


def _ports(pid: int, sockets: List[int], listening: Mapping[int, int]) -> Set[int]:
    if _proc.LINUX:
        return {listening[i] for i in sockets if i in listening}
    import psutil

    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}


def tree_figures(trees: Mapping[str, Sequence[Member]]) -> Dict[str, Dict[str, Any]]:
    """CPU %, RSS, process count and listening TCP ports of each tree, in one pass.

    A member counts as a process of its tree even where its memory cannot be read
    (another user's process): both ``ps`` paths count trees the same way.  The machine's
    table of listening sockets is read only if some member has a socket at all (reading
    /proc/net/tcp walks the kernel's whole connection hash: ~4 ms here, even when empty)."""
    sockets: Dict[ProcId, List[int]] = {}
    for members in trees.values():
        for ident, _ in members:
            sockets[ident] = _sockets(ident.pid)
    listening = _listening() if any(sockets.values()) else {}
    out = {}
    for name, members in trees.items():
        cpu, rss, n, ports = 0.0, 0, 0, set()
        for ident, pct in members:
            if not _proc.alive(ident):
                continue
            n += 1
            cpu += pct
            rss += _rss(ident.pid) or 0
            if sockets[ident]:
                ports |= _ports(ident.pid, sockets[ident], listening)
        out[name] = {"cpu_percent": round(cpu, 1), "rss": rss, "nprocs": n, "ports": sorted(ports)}
    return out


# --- records ------------------------------------------------------------------------------


def ps_record(rec: ProviderRecord, figures: Optional[Mapping[str, Any]] = None, *, host_alive: bool = True,
              now: Optional[float] = None) -> Dict[str, Any]:
    """The ``ps`` record of one provider (the keys SPEC.md lists, plus ready, restart,
    error, command)."""
    figs = dict(figures or EMPTY_FIGURES)
    state = rec.state
    if not host_alive and state not in (State.STOPPED, State.EXITED, State.FAILED) and not figs["nprocs"]:
        state = State.STOPPED  # its host died and its watchdog (or a reap) stopped it
    live = state in LIVE_STATES and rec.main is not None
    now = time.time() if now is None else now
    spec = rec.spec
    return {
        "name": rec.name,
        "kind": rec.kind,
        "state": state.value,
        "pid": rec.main.pid if live and rec.main is not None else None,
        "uptime": max(0.0, now - rec.started) if live and rec.started is not None else None,
        "restarts": rec.restarts,
        "exit_code": rec.exit_code,
        "signal": rec.signal,
        **figs,
        "ready": spec.ready.text if spec is not None else None,
        "restart": spec.restart if spec is not None else None,
        "error": rec.error,
        "reason": reason(rec, state),
        "next_restart_in": (max(0.0, rec.next_restart - now)
                            if state == State.RESTARTING and rec.next_restart is not None else None),
        "command": spec.command_line() if spec is not None else None,
    }


MECHANISMS = {
    "cgroup1": "a cgroup per provider (v1 freezer): nothing escapes it",
    "cgroup2": "a cgroup per provider (v2): nothing escapes it",
    "none": "markers, ancestry, recorded identities, its log (no cgroup: a daemon that clears its "
            "environment and orphans itself before it is seen escapes `stop NAME`, not purge)",
}


def inspect(p: "Provider", fence: Optional[str]) -> Dict[str, Any]:
    """A provider as it was defined, for ``%host status`` (hold the table's lock)."""
    spec = p.spec
    return {
        "name": p.name,
        "command": spec.command_line(),
        "cwd": spec.cwd,
        "ready": spec.ready.text + (f" within {spec.ready_timeout:g}s" if spec.ready.kind != "none" else ""),
        "stop": f"{_proc.signal_name(spec.stop_signal)}, SIGKILL after {spec.stop_timeout:g}s",
        "restart": spec.restart + (" (oneshot)" if spec.oneshot else ""),
        "membership": f"cgroup {p.cell}" if p.cell else (fence or "none"),
    }


def reason(rec: ProviderRecord, state: State) -> Optional[str]:
    """Why a provider failed, in a few words (``error`` says it in full)."""
    if state != State.FAILED:
        return None
    e = rec.error or ""
    m = re.match(r"not ready after [^:]+", e)
    if m:
        return m.group(0)
    if "giving up" in e:
        return "restart limit reached"
    m = re.search(r"its dependency ('[^']+') is (\w+)", e)
    if m:
        return f"dependency {m.group(1)} {m.group(2)}"
    if "survived SIGKILL" in e:
        return e.split(":")[0]
    if e.startswith("restart failed"):
        return "restart failed"
    if rec.signal:
        return f"killed by {rec.signal}"
    if rec.exit_code is not None:
        return f"exit {rec.exit_code}"
    return e.split(";")[0][:60] or None


def host_ps(session: Optional["Session"], table: "ProviderTable", records: List[ProviderRecord]) -> "PsTable":
    """A host's ``ps`` table: its records, with the figures of their trees."""
    from ._table import PsTable

    trees = _host_trees(session, table, [r.name for r in records])
    figures = tree_figures(trees)
    now = time.time()
    rows = [ps_record(r, figures.get(r.name), now=now) for r in records]
    notes = []
    if session is not None and session.watchdog_lost:
        notes.append("this host's watchdog died: providers keep running, but if this process dies now "
                     "they are left to the next reap; shut the host down and start it again to re-arm it")
    return PsTable(rows, notes)


def _host_trees(session: Optional["Session"], table: "ProviderTable", names: Sequence[str]) -> Dict[str, List[Member]]:
    """Every live process of each provider's tree, with its CPU %: the watchdog's view, or
    (without a watchdog) the host's own (``Session.own_trees``: cells, recorded members)."""
    from ._watchdog_client import WatchdogLost
    from .errors import HostError

    if session is None or not names:
        return {}
    if not session.watchdog_lost:
        try:
            trees = session.watchdog.trees(list(names))
            return {n: members_from_wire(rows) for n, rows in trees.items()}
        except (WatchdogLost, HostError):
            pass
    with table.lock:
        provs = [table.providers[n] for n in names if n in table.providers and table.providers[n].main is not None]
    _, (targets,), found = session.own_trees([provs])
    cpu = session.cpu.percent(found[pid] for t in targets for pid in t.members if pid in found)
    return {t.name: [(i, cpu.get(i, 0.0)) for i in t.members.values()] for t in targets}


# --- marked processes ---------------------------------------------------------------------


class Marked(NamedTuple):
    """A process carrying a host's marker."""

    ident: ProcId
    uid: Optional[int]
    host_id: str
    provider: Optional[str]  # None for a host's watchdog
    owner: Optional[ProcId]  # from its HOSTCONSOLE_OWNER marker
    state_dir: Optional[str]


def owner_of(markers: Mapping[str, str]) -> Optional[ProcId]:
    try:
        pid, start = markers["HOSTCONSOLE_OWNER"].split(":")
        return ProcId(int(pid), int(start))
    except (KeyError, ValueError):
        return None


def scan_marked(uid: Optional[int] = None) -> List[Marked]:
    """Every live process (of ``uid``, if given) that carries ``HOSTCONSOLE_HOST``."""
    me = os.getpid()
    out = []
    for pid in _proc.all_pids():
        if pid == me:
            continue
        owner_uid = _proc.owner_uid(pid)
        if uid is not None and owner_uid != uid:
            continue
        m = _proc.markers(pid)
        hid = m.get("HOSTCONSOLE_HOST")
        if not hid:
            continue
        st = _proc.stat(pid)
        if st is None or st.dead:
            continue
        out.append(Marked(st.ident, owner_uid, hid, m.get("HOSTCONSOLE_PROVIDER") or None, owner_of(m),
                          m.get("HOSTCONSOLE_STATE_DIR")))
    return out


def same_dir(a: Optional[str], b: "os.PathLike[str] | str") -> bool:
    if not a:
        return False
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False
