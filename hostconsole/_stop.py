"""Stopping process trees: the one stop path.

``stop_levels`` is the only ladder in hostconsole.  The host runs it for ``stop``,
``restart``, ``purge`` and ``shutdown`` (inside its watchdog, which is the providers'
parent and can reap them), and the watchdog runs it when its owner dies.  Policy (which
signal, how long) comes from each ``Target``; which processes belong to a target comes from
a ``Finder``, so the same ladder works inside the watchdog (walking its own subtree) and
outside it (scanning the process table).

Per level, all targets are handled together:
  1. signal each process group with the stop signal (then SIGCONT, so a stopped process
     can act on it); find each tree, and signal every member that left its group;
  2. poll until every member is gone, re-finding the tree each round so late forks are
     seen; a member counts as gone once it has ended (a zombie only awaits reaping);
  3. at the target's deadline, SIGKILL the group and every member, and keep doing so
     each round until nothing is left (a forking process cannot outrun it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ContextManager, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from . import _proc
from ._proc import ProcId, ProcStat

if TYPE_CHECKING:
    from ._fence import Cell
    from .spec import ProviderSpec

# Once SIGKILL has been sent, how long we wait for the tree to vanish before giving up on
# processes the kernel will not let die (uninterruptible sleep, a stuck FUSE mount).
KILL_GRACE = 10.0
POLL_MIN, POLL_MAX = 0.002, 0.05
STOP_ROUNDS = 50  # walks to SIGSTOP a forking tree without a fence, at the most
# After the stop signal, how long the trees get to end before the first walk; the wait
# ends the moment every known member has ended (pidfds), so it costs only a slow tree.
FIRST_LOOK = 0.02


@dataclass
class Target:
    """One provider's process tree, as the stop path sees it."""

    name: str
    main: Optional[ProcId]
    pgid: Optional[int]
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 5.0
    # Every process seen in the tree so far, by pid.  Kept between finds so that a
    # descendant which later left the group and lost its parent is still ours.
    members: Dict[int, ProcId] = field(default_factory=dict)
    # Whose marker identifies the tree: HOSTCONSOLE_HOST (default: the finder's host) and
    # HOSTCONSOLE_PROVIDER (default: ``name``; "" for a host's watchdog).
    host_id: Optional[str] = None
    marker: Optional[str] = None
    # Its fence, where it has one: every process in it is a member, whatever it did.
    cell: Optional["Cell"] = None
    # Its log file: an orphan still writing to it is its own (the watchdog's finder only).
    log: Optional[str] = None
    # Every process of its cell is in the finder's universe (the watchdog's own child,
    # under a child subreaper: whatever it forks stays below the watchdog), so a universe
    # proven empty says that the cell is empty, unread.
    contained: bool = False

    def __post_init__(self) -> None:
        if self.main is not None:
            self.members.setdefault(self.main.pid, self.main)

    @classmethod
    def of(cls, spec: "ProviderSpec", main: Optional[ProcId], cell: Optional["Cell"] = None) -> "Target":
        """A provider's tree: its main process leads its process group."""
        return cls(spec.name, main, main.pid if main is not None else None, spec.stop_signal, spec.stop_timeout,
                   cell=cell)


class Deadline:
    """When SIGKILL must have reached every tree of a stop.  Tightened (never loosened)
    from any thread while the stop runs: a kernel shutdown that arrives during a long
    purge caps the purge already under way instead of waiting for it."""

    def __init__(self, within: Optional[float] = None, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self.end: Optional[float] = None if within is None else clock() + max(0.0, within)

    def tighten(self, within: Optional[float]) -> None:
        if within is None:
            return
        end = self._clock() + max(0.0, within)
        with self._lock:
            if self.end is None or end < self.end:
                self.end = end

    def remaining(self) -> Optional[float]:
        end = self.end
        return None if end is None else max(0.0, end - self._clock())


@dataclass
class Outcome:
    """How one provider ended under a stop."""

    name: str
    # "exited" (on the stop signal), "killed" (after the timeout), "gone" (already), or
    # "survived": some members outlived SIGKILL (``survivors`` names them).
    outcome: str
    exit_code: Optional[int] = None
    signal: Optional[str] = None
    seconds: float = 0.0
    survivors: List[int] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "seconds": round(self.seconds, 4),
            "survivors": list(self.survivors),
        }


class Finder:
    """Attributes processes to targets.

    ``universe()`` returns the processes worth looking at: inside the watchdog, its own
    subtree (every provider descendant is there, orphans included, because it is a child
    subreaper); elsewhere, every process of this user.  A process belongs to a target if
    it descends from a process already known to be in the tree, shares the target's
    process group, or carries the target's ``HOSTCONSOLE_HOST``/``HOSTCONSOLE_PROVIDER``.
    """

    def __init__(self, host_id: str, universe: Callable[[], Dict[int, ProcStat]],
                 empty: Callable[[], bool] = lambda: False):
        self.host_id = host_id
        self.universe = universe
        self._empty = empty
        self._marker_cache: Dict[ProcId, Tuple[str, str]] = {}

    def _marker_of(self, st: ProcStat) -> Tuple[str, str]:
        key = st.ident
        hit = self._marker_cache.get(key)
        if hit is None:
            m = _proc.markers(st.pid)
            hit = (m.get("HOSTCONSOLE_HOST", ""), m.get("HOSTCONSOLE_PROVIDER", ""))
            self._marker_cache[key] = hit
        return hit

    def find(self, targets: Sequence[Target], rest: Optional[Target] = None) -> Dict[int, ProcStat]:
        """Refresh each target's ``members`` in place; return the table used.

        With ``rest``, every live process of the universe that no target claims is given to
        it (the watchdog's final sweep: everything under it is the host's by construction).
        """
        return self.attribute(targets, self.look_for(targets, rest), rest, self.cells_empty(targets))

    def look_for(self, targets: Sequence[Target], rest: Optional[Target] = None) -> Dict[int, ProcStat]:
        """What ``find`` needs to look at: nothing when every target is fenced (its cell
        is the whole truth, and reading it is cheaper than walking the process table)."""
        if rest is None and targets and all(t.cell is not None for t in targets):
            return {}
        return self.look()

    def own_child(self, ident: ProcId) -> bool:
        """Whether ``ident`` is an unreaped child of ours that leads its own session (the
        watchdog's providers): then ``reaping_held`` keeps its pid from being recycled."""
        return False

    def reaping_held(self) -> ContextManager[object]:
        """Hold off reaping (while a group is signalled through an ``own_child``)."""
        return contextlib.nullcontext()

    def wait_gone(self, members: Iterable[ProcId], seconds: float) -> None:
        """Until every one of ``members`` has ended, for ``seconds`` at the most."""
        _proc.wait_gone(members, seconds, self.own_child, self.reaping_held())

    def look(self) -> Dict[int, ProcStat]:
        """The universe as it is now."""
        return self.universe()

    def cells_empty(self, targets: Sequence[Target]) -> bool:
        """Whether the cells of the ``contained`` targets are known to be empty without
        reading them: the universe is provably empty now (no process at all, not even one
        that has ended and awaits reaping), which only some finders can prove."""
        return any(t.cell is not None and t.contained for t in targets) and self._empty()

    def attribute(self, targets: Sequence[Target], table: Dict[int, ProcStat],
                  rest: Optional[Target] = None, cells_empty: bool = False) -> Dict[int, ProcStat]:
        """``find`` on a table already looked at (and ``cells_empty`` found out)."""
        by_marker = {
            (t.host_id or self.host_id, t.name if t.marker is None else t.marker): t
            for t in targets if t.host_id or self.host_id
        }
        claimed: Dict[int, Target] = {}
        # A fence first: the kernel's word, whatever a process did to its environment --
        # unread where the universe is empty and holds all of the cell (the end of a stop:
        # 50 cells are 50 reads, while the processes that just ended compete for the CPU).
        me = os.getpid()
        for t in targets:
            if t.cell is not None and not (cells_empty and t.contained):
                for pid in t.cell.pids():
                    st = table.get(pid) or _proc.stat(pid)
                    if st is not None and pid != me:
                        table[pid] = st
                        claimed[pid] = t
        # Then ancestry: what descends from a process known to be a member, or shares its
        # process group, is the target's.
        for t in targets:
            roots = [pid for pid, ident in t.members.items() if pid in table and table[pid].start == ident.start]
            if t.pgid is not None and any(table[pid].pgid == t.pgid for pid in roots):
                roots.extend(pid for pid, st in table.items() if st.pgid == t.pgid and pid not in claimed)
            roots.extend(pid for pid, owner in claimed.items() if owner is t)
            for pid in _proc.descendants(roots, table):
                claimed.setdefault(pid, t)
        # Then markers, read only of what is left (an orphan; a stranger): reading a
        # process's environment takes its memory's lock, which a process that forks without
        # pause holds most of the time (~80 ms a read, measured on a fork bomb).
        if by_marker:
            for st in [st for st in table.values() if st.pid not in claimed and st.pid != me]:
                hit = self._marker_of(st)
                if hit[0] and hit in by_marker:
                    for q in _proc.descendants([st.pid], table):
                        claimed.setdefault(q, by_marker[hit])
        # Last, an orphan that kept nothing of its provider but its output: a process under
        # the watchdog whose stdout or stderr is a provider's log.
        by_log = {t.log: t for t in targets if t.log}
        if by_log:
            for pid in [p for p in table if p not in claimed and p != me]:
                owner = by_log.get(_proc.output_of(pid) or "")
                if owner is not None:
                    for q in _proc.descendants([pid], table):
                        claimed.setdefault(q, owner)
        for t in targets:
            t.members = {pid: table[pid].ident for pid, owner in claimed.items() if owner is t and not table[pid].dead}
        if rest is not None:
            rest.members = {
                pid: st.ident for pid, st in table.items() if pid not in claimed and not st.dead
            }
        if len(self._marker_cache) > 4096:
            live = {st.ident for st in table.values()}
            self._marker_cache = {k: v for k, v in self._marker_cache.items() if k in live}
        return table


def user_universe() -> Dict[int, ProcStat]:
    """Every process of this user except ourselves (the finder outside the watchdog)."""
    me, uid = os.getpid(), os.getuid()
    table = _proc.snapshot()
    return {pid: st for pid, st in table.items() if pid != me and _proc.owner_uid(pid) == uid}


def _with_cont(sig: int) -> Tuple[int, ...]:
    # After a polite signal, SIGCONT: a stopped process could not act on it.
    return (sig,) if sig == signal.SIGKILL else (sig, signal.SIGCONT)


def signal_tree(t: Target, sig: int, table: Mapping[int, ProcStat]) -> None:
    """Send ``sig`` to the target's process group and to every member outside it."""
    witness = next(
        (ident for pid, ident in t.members.items() if pid in table and table[pid].pgid == t.pgid), None
    )
    if t.pgid is not None and witness is not None:
        _proc.send_group(t.pgid, witness, *_with_cont(sig))
    for pid, ident in t.members.items():
        st = table.get(pid)
        in_group = witness is not None and st is not None and st.pgid == t.pgid
        if sig == signal.SIGKILL or not in_group:
            _proc.send(ident, sig)
            if sig != signal.SIGKILL:
                _proc.send(ident, signal.SIGCONT)


def kill_tree(t: Target, finder: Finder, table: Mapping[int, ProcStat]) -> None:
    """SIGKILL the whole tree so that a forking tree cannot refill it meanwhile: freeze its
    cell where it has one (then kill every member, then thaw); otherwise SIGSTOP every
    member, walking again until a walk finds nobody new, then SIGKILL them all."""
    if t.cell is not None:
        with finder.reaping_held():  # (never freeze a cell the watchdog is spawning from)
            t.cell.kill()
    else:
        stopped: Set[ProcId] = set()
        for _ in range(STOP_ROUNDS):
            new = [i for i in t.members.values() if i not in stopped]
            if not new:
                break
            witness = next((i for p, i in t.members.items() if p in table and table[p].pgid == t.pgid), None)
            if t.pgid is not None and witness is not None:
                _proc.send_group(t.pgid, witness, signal.SIGSTOP)
            for ident in new:
                _proc.send(ident, signal.SIGSTOP)
                stopped.add(ident)
            table = finder.find([t])  # what they forked before the SIGSTOP landed
    signal_tree(t, signal.SIGKILL, table)


def stop_levels(
    levels: Sequence[Sequence[Target]],
    finder: Finder,
    status_of: Callable[[Target], Tuple[Optional[int], Optional[str]]] = lambda t: (None, None),
    *,
    rest: Optional[Target] = None,
    within: Optional[float] = None,
    deadline: Optional[Deadline] = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Optional[Callable[[float], None]] = None,
    on_done: Optional[Callable[[List[Tuple[Target, Outcome]]], None]] = None,
) -> List[Outcome]:
    """Stop ``levels`` in order, the targets of one level concurrently.

    ``within`` (or a ``deadline``, which others may tighten while this runs): SIGKILL
    reaches every tree no later than that, whatever the stop timeouts and however many
    levels (a kernel has 2.5 s).  Never raises for a process that vanished or cannot be
    signalled; returns one Outcome per target (and one for ``rest``, if given and
    non-empty).  ``on_done([(target, outcome), ...])`` is told of those done while the stop
    goes on (a provider shows as stopped when it is, not when the slowest of its level
    is), of all that ended together at once; what ends last is told only by the return.
    """
    if deadline is None:
        deadline = Deadline(within, clock)
    else:
        deadline.tighten(within)
    # Between rounds: until the members seen end (pidfds), or a given ``sleep`` (a test's
    # fake clock: then nothing here depends on how fast the machine is).
    pause: Callable[[Iterable[ProcId], float], None] = (
        finder.wait_gone if sleep is None else (lambda members, seconds: sleep(seconds)))
    # Who is done is told before the stop waits again, not at its very end: what ends last
    # is told by what this returns, not twice.
    ended: List[Tuple[Target, Outcome]] = []

    def wait(members: Iterable[ProcId], seconds: float) -> None:
        if ended and on_done is not None:
            on_done(list(ended))
        ended.clear()
        pause(members, seconds)

    outcomes: List[Outcome] = []
    for level in levels:
        outcomes.extend(_stop_level(list(level), finder, status_of, None, deadline, clock, wait, ended.extend))
    if rest is not None:
        outcomes.extend(_stop_level([], finder, status_of, rest, deadline, clock, wait, ended.extend))
    return outcomes


def _stop_level(targets: List[Target], finder: Finder,
                status_of: Callable[[Target], Tuple[Optional[int], Optional[str]]], rest: Optional[Target],
                cap: Deadline, clock: Callable[[], float],
                wait: Callable[[Iterable[ProcId], float], None],
                on_done: Optional[Callable[[List[Tuple[Target, Outcome]]], None]] = None) -> List[Outcome]:
    t0 = clock()
    settled: Set[int] = set()

    def settle() -> None:
        """Exit status (once) of each target done since the last call; word of them all."""
        news = []
        for t in targets:
            o = done.get(id(t))
            if o is not None and id(t) not in settled:
                settled.add(id(t))
                if t is not rest and o.outcome != "gone":
                    o.exit_code, o.signal = status_of(t)
                news.append((t, o))
        if on_done is not None and news:
            on_done(news)

    # What was there when the stop began: started in an earlier clock tick, or in this
    # one under a pid given out before now (the tick alone cannot tell, and a member
    # started 5 ms before the stop is no stop handler's helper).
    began, last = _proc.now_stamp(), _proc.last_pid()

    def existed(ident: ProcId) -> bool:
        return ident.start < began or (ident.start == began and _proc.born_by(ident.pid, last))

    # Signal first, walk after: every process group gets the stop signal at once through
    # its leader (verified), so the trees are already ending while we walk them.  The walk
    # then finds what left its group; what was there when the stop began gets the signal
    # too, and what started after it is the stop handler's own work, left to finish.
    with finder.reaping_held():
        presignalled = {id(t) for t in targets if t.pgid is not None and t.main is not None and _proc.send_group(
            t.pgid, t.main, *_with_cont(t.stop_signal), own_child=t.pgid == t.main.pid and finder.own_child(t.main))}
    sent: Dict[int, Set[ProcId]] = {id(t): set() for t in targets}  # members signalled one by one
    if rest is None and presignalled:
        # Members already known to have left their group get it now too; then the trees get
        # a moment to end before the walk, which is then a walk over what is left.
        for t in (t for t in targets if id(t) in presignalled):
            for pid, ident in t.members.items():
                st = _proc.stat(pid) if ident != t.main else None
                if st is not None and st.start == ident.start and st.pgid != t.pgid and existed(ident):
                    for sig in _with_cont(t.stop_signal):
                        _proc.send(ident, sig)
                    sent[id(t)].add(ident)
        wait([i for t in targets if id(t) in presignalled for i in t.members.values()],
             min([FIRST_LOOK] + [max(0.0, t.stop_timeout) for t in targets]))
    table = finder.find(targets, rest)
    if rest is not None and rest.members:
        targets = targets + [rest]
    own = {id(t): t0 + max(0.0, t.stop_timeout) for t in targets}

    def deadline(t: Target) -> float:
        end = cap.end  # re-read every round: it may have been tightened meanwhile
        return own[id(t)] if end is None else min(own[id(t)], end)

    killed_at: Dict[int, float] = {}
    done: Dict[int, Outcome] = {}
    signalled: Dict[int, Set[ProcId]] = {}  # per target: members that have had the stop signal
    for t in targets:
        key = id(t)
        if key in presignalled:
            for pid, ident in t.members.items():
                st = table.get(pid)
                if st is not None and st.pgid != t.pgid and existed(ident) and ident not in sent[key]:
                    for sig in _with_cont(t.stop_signal):
                        _proc.send(ident, sig)
            if not t.members:  # it ended on the signal while we looked
                done[key] = Outcome(t.name, "exited", seconds=clock() - t0)
        elif not t.members:
            done[key] = Outcome(t.name, "gone")
        else:
            signal_tree(t, t.stop_signal, table)
        signalled[key] = set(t.members.values())
    settle()
    pause = POLL_MIN
    while len(done) < len(targets):
        now = clock()
        wake = min(
            [deadline(t) for t in targets if id(t) not in done and id(t) not in killed_at] + [now + pause]
        )
        wait([i for t in targets if id(t) not in done for i in t.members.values()], max(0.0, wake - now))
        pause = min(pause * 2, POLL_MAX)
        active = [t for t in targets if id(t) not in done]
        table = finder.find([t for t in active if t is not rest], rest if rest in active else None)
        now = clock()
        for t in active:
            key = id(t)
            if not t.members:
                outcome = "killed" if key in killed_at else "exited"
                done[key] = Outcome(t.name, outcome, seconds=now - t0)
            elif key in killed_at:
                if now - killed_at[key] > KILL_GRACE:
                    done[key] = Outcome(t.name, "survived", seconds=now - t0, survivors=sorted(t.members))
                else:
                    kill_tree(t, finder, table)
            elif now >= deadline(t):
                killed_at[key] = now
                kill_tree(t, finder, table)
                pause = POLL_MIN  # SIGKILL acts at once: look again soon, not in 50 ms
            else:
                # A member seen only now that was there when the stop began (caught
                # mid-way while being re-parented to the subreaper, say) gets the stop
                # signal too, not just the SIGKILL at the deadline.  What the provider
                # starts after that -- its stop handler's own helpers -- is left to finish,
                # as systemd does: only the deadline's SIGKILL reaches it.
                for ident in set(t.members.values()) - signalled[key]:
                    if existed(ident):
                        _proc.send(ident, t.stop_signal)
                        if t.stop_signal != signal.SIGKILL:
                            _proc.send(ident, signal.SIGCONT)
                    signalled[key].add(ident)
        settle()
    settle()
    return [done[id(t)] for t in targets]


def order_for_stop(names: Iterable[str], requires: Mapping[str, Iterable[str]]) -> List[List[str]]:
    """Group ``names`` into levels: every provider comes after the ones that require it.

    Level 0 holds the providers nothing (among ``names``) depends on.  Cycles cannot be
    built through the API (a requirement must exist first), but a defensive fallback puts
    anything left in one last level rather than looping.
    """
    names = list(dict.fromkeys(names))
    pending = set(names)
    dependents: Dict[str, Set[str]] = {n: set() for n in names}
    for n in names:
        for dep in requires.get(n, ()):
            if dep in dependents:
                dependents[dep].add(n)
    levels: List[List[str]] = []
    while pending:
        level = [n for n in names if n in pending and not (dependents[n] & pending)]
        if not level:
            level = [n for n in names if n in pending]
        levels.append(level)
        pending.difference_update(level)
    return levels
