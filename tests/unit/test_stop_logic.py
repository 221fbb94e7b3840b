"""The stop path's logic, with no process at all: order_for_stop, Deadline, the Finder's attribution,
and stop_levels' escalation against a fake clock, a fake process table and recorded signals.

``_proc.send`` and ``_proc.send_group`` are replaced for every test in this file by a fake that
records the signal and applies its effect to the fake table; nothing reaches the OS.
"""

from __future__ import annotations

import signal
from typing import Callable, Dict, List, Optional, Set, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostconsole import _proc
from hostconsole._proc import ProcId, ProcStat
from hostconsole._stop import (FIRST_LOOK, KILL_GRACE, POLL_MAX, Deadline, Finder, Target, order_for_stop, signal_tree,
                               stop_levels)

TERM, INT, KILL, CONT = int(signal.SIGTERM), int(signal.SIGINT), int(signal.SIGKILL), int(signal.SIGCONT)
T0 = 1000.0
BEGAN = 50_000  # what _proc.now_stamp() says while a level is stopped (the units of ProcId.start)
LAST_PID = 600  # what _proc.last_pid() says then: pids up to it were given out before the stop
fuzz = settings(max_examples=80, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


# --- order_for_stop ----------------------------------------------------------------------------

def position(levels: List[List[str]]) -> Dict[str, int]:
    return {n: i for i, level in enumerate(levels) for n in level}


def test_dependents_are_stopped_before_what_they_require():
    assert order_for_stop(["db", "web"], {"web": ["db"]}) == [["web"], ["db"]]
    assert order_for_stop(["web", "db"], {"web": ["db"]}) == [["web"], ["db"]]


def test_a_chain_is_stopped_from_its_end():
    req = {"web": ["api"], "api": ["db"], "db": []}
    assert order_for_stop(["db", "api", "web"], req) == [["web"], ["api"], ["db"]]


def test_independent_providers_share_one_level_in_the_given_order():
    assert order_for_stop(["c", "a", "b"], {}) == [["c", "a", "b"]]


def test_a_diamond_stops_the_top_then_both_sides_together_then_the_bottom():
    req = {"app": ["left", "right"], "left": ["base"], "right": ["base"]}
    assert order_for_stop(["base", "left", "right", "app"], req) == [["app"], ["left", "right"], ["base"]]


def test_requirements_not_being_stopped_are_ignored():
    # "db" is not among the names (it keeps running): "web" is not held back by it.
    assert order_for_stop(["web", "cache"], {"web": ["db", "cache"], "ghost": ["web"]}) == [["web"], ["cache"]]


def test_names_absent_from_the_requires_map_have_no_requirements():
    assert order_for_stop(["a", "b"], {"zzz": ["a"]}) == [["a", "b"]]


def test_duplicate_names_are_stopped_once():
    assert order_for_stop(["a", "b", "a"], {"b": ["a"]}) == [["b"], ["a"]]


def test_no_names_no_levels():
    assert order_for_stop([], {"a": ["b"]}) == []


def test_a_cycle_falls_back_to_one_last_level():
    assert order_for_stop(["a", "b"], {"a": ["b"], "b": ["a"]}) == [["a", "b"]]


def test_a_cycle_is_stopped_after_what_it_does_not_hold_back():
    req = {"a": ["b"], "b": ["a"], "top": ["a"]}
    assert order_for_stop(["a", "b", "top", "free"], req) == [["top", "free"], ["a", "b"]]


def test_a_self_requirement_is_a_cycle_and_does_not_loop():
    assert order_for_stop(["a", "b"], {"a": ["a"], "b": ["a"]}) == [["b"], ["a"]]


@st.composite
def dags(draw):
    """Names in a topological order; each may require only earlier ones."""
    n = draw(st.integers(0, 12))
    names = [f"p{i}" for i in range(n)]
    requires = {}
    for i, name in enumerate(names):
        requires[name] = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=i)) if i else []
    order = draw(st.permutations(names))
    return order, requires


@fuzz
@given(dags())
def test_for_any_dag_every_provider_comes_after_all_its_dependents(dag):
    names, requires = dag
    levels = order_for_stop(names, requires)
    pos = position(levels)
    assert sorted(pos) == sorted(names) and sum(map(len, levels)) == len(names)
    assert all(levels)
    for n, deps in requires.items():
        for d in deps:
            assert pos[n] < pos[d], (n, d, levels)
    # As parallel as possible: each provider is in the earliest level its dependents allow.
    for n in names:
        dependents = [m for m in names if n in requires[m]]
        assert pos[n] == (max(pos[m] for m in dependents) + 1 if dependents else 0)
    # Within a level, the given order is kept.
    for level in levels:
        assert level == sorted(level, key=names.index)


@fuzz
@given(st.lists(st.sampled_from("abcdefg"), max_size=10),
       st.dictionaries(st.sampled_from("abcdefgh"), st.lists(st.sampled_from("abcdefgh"), max_size=4), max_size=8))
def test_for_any_requires_map_cycles_included_every_name_is_stopped_once(names, requires):
    levels = order_for_stop(names, requires)
    flat = [n for level in levels for n in level]
    assert sorted(flat) == sorted(set(names)) and all(levels)
    assert len(levels) <= len(set(names))


# --- Deadline ----------------------------------------------------------------------------------

class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_deadline_of_none_has_no_cap():
    d = Deadline(None, Clock())
    assert d.end is None and d.remaining() is None
    d.tighten(None)
    assert d.end is None and d.remaining() is None


def test_remaining_counts_down_with_the_clock_and_stops_at_zero():
    clock = Clock()
    d = Deadline(2.5, clock)
    assert d.end == T0 + 2.5 and d.remaining() == 2.5
    clock.t += 1.0
    assert d.remaining() == 1.5
    clock.t += 10.0
    assert d.remaining() == 0.0


def test_a_negative_within_is_now():
    clock = Clock()
    assert Deadline(-3, clock).end == T0
    d = Deadline(None, clock)
    d.tighten(-1)
    assert d.end == T0 and d.remaining() == 0.0


def test_tighten_sets_a_cap_on_a_deadline_that_had_none():
    clock = Clock()
    d = Deadline(None, clock)
    clock.t += 4
    d.tighten(1.0)
    assert d.end == T0 + 5.0 and d.remaining() == 1.0


def test_tighten_never_loosens():
    clock = Clock()
    d = Deadline(5.0, clock)
    d.tighten(10.0)
    assert d.end == T0 + 5.0
    clock.t += 3
    d.tighten(2.5)  # T0 + 5.5: later than the cap in force
    assert d.end == T0 + 5.0
    d.tighten(1.0)
    assert d.end == T0 + 4.0
    d.tighten(None)
    assert d.end == T0 + 4.0


@fuzz
@given(st.lists(st.tuples(st.floats(0, 100), st.none() | st.floats(-5, 100)), max_size=12))
def test_a_deadline_only_ever_moves_earlier(steps):
    clock = Clock()
    d = Deadline(None, clock)
    prev = None
    for advance, within in steps:
        clock.t += advance
        d.tighten(within)
        if prev is not None:
            assert d.end is not None and d.end <= prev
        if within is not None:
            assert d.end <= clock.t + max(0.0, within)
        prev = d.end


# --- a fake process table, clock and signals ---------------------------------------------------

class World:
    """Processes (ProcStats), who they belong to, what kills them, a clock and a record of signals."""

    def __init__(self, t: float = T0):
        self.t = t
        self.procs: Dict[int, ProcStat] = {}
        self.owner: Dict[int, str] = {}
        self.dies_on: Dict[int, Set[int]] = {}
        self.sent: List[Tuple[float, str, int, int, bool]] = []  # (time, "pid"/"group", pid/pgid, sig, delivered)
        self.sleeps: List[float] = []
        self.events: List[Tuple[float, Callable[[], None]]] = []
        self.finds = 0

    # processes
    def spawn(self, pid: int, owner: Optional[str], pgid: int, *, start: int = 100, ppid: int = 1,
              dies_on=(TERM, KILL), state: str = "S") -> ProcId:
        self.procs[pid] = ProcStat(pid, ppid, pgid, pgid, start, state, 0.0)
        self.owner[pid] = owner
        self.dies_on[pid] = set(dies_on)
        return ProcId(pid, start)

    def _deliver(self, pid: int, sig: int) -> None:
        if sig in self.dies_on.get(pid, ()):
            del self.procs[pid]

    # the clock
    def clock(self) -> float:
        return self.t

    def at(self, when: float, action: Callable[[], None]) -> None:
        self.events.append((when, action))

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += seconds
        due = [e for e in self.events if e[0] <= self.t]
        self.events = [e for e in self.events if e[0] > self.t]
        for _, action in due:
            action()
        if self.t > T0 + 1000:
            raise AssertionError("the stop never ended (fake clock ran 1000 s)")

    # the fakes of _proc.send / _proc.send_group: verify identity as the real ones do
    def send(self, ident: ProcId, sig: int) -> bool:
        st_ = self.procs.get(ident.pid)
        ok = st_ is not None and st_.start == ident.start
        self.sent.append((self.t, "pid", ident.pid, int(sig), ok))
        if ok:
            self._deliver(ident.pid, int(sig))
        return ok

    def send_group(self, pgid: int, witness: ProcId, *sigs: int, own_child: bool = False) -> bool:
        w = self.procs.get(witness.pid)
        ok = w is not None and w.start == witness.start and w.pgid == pgid
        for sig in sigs:
            self.sent.append((self.t, "group", pgid, int(sig), ok))
            if ok:
                for pid in [p for p, s in self.procs.items() if s.pgid == pgid]:
                    self._deliver(pid, int(sig))
        return ok

    # reading the record
    def signals(self, kind: Optional[str] = None, to: Optional[int] = None, sig: Optional[int] = None,
                delivered: Optional[bool] = True):
        """The signals that reached a process (``delivered=None``: every attempt, verified or not)."""
        return [(t, k, who, s) for t, k, who, s, ok in self.sent
                if (kind is None or k == kind) and (to is None or who == to) and (sig is None or s == sig)
                and (delivered is None or ok == delivered)]

    def index(self, sig: int, to: int) -> int:
        """Where in the sequence of delivered signals ``sig`` first reached ``to``."""
        delivered = [(k, who, s) for _, k, who, s, ok in self.sent if ok]
        return next(i for i, (_, who, s) in enumerate(delivered) if who == to and s == sig)

    def first(self, sig: int, to: Optional[int] = None) -> float:
        times = [t for t, _, _, _ in self.signals(to=to, sig=sig)]
        assert times, f"no signal {sig} sent to {to}"
        return min(times)


class FakeFinder(Finder):
    """Claims processes by the World's ``owner`` map; ``rest`` gets every unclaimed live one."""

    def __init__(self, world: World):
        super().__init__("host-under-test", universe=lambda: dict(world.procs))
        self.world = world

    def find(self, targets, rest=None):
        self.world.finds += 1
        table = dict(self.world.procs)
        names = {t.name for t in targets}
        for t in targets:
            t.members = {pid: s.ident for pid, s in table.items() if self.world.owner.get(pid) == t.name and not s.dead}
        if rest is not None:
            rest.members = {pid: s.ident for pid, s in table.items()
                            if self.world.owner.get(pid) not in names and not s.dead}
        return table


@pytest.fixture
def world(monkeypatch):
    w = World()
    monkeypatch.setattr(_proc, "send", w.send)
    monkeypatch.setattr(_proc, "send_group", w.send_group)
    monkeypatch.setattr(_proc, "now_stamp", lambda: BEGAN)
    monkeypatch.setattr(_proc, "last_pid", lambda: LAST_PID)

    def not_here(*args):
        raise AssertionError("a stop under test reached for the real process table")

    monkeypatch.setattr(_proc, "markers", not_here)
    monkeypatch.setattr(_proc, "stat", not_here)
    monkeypatch.setattr(_proc, "wait_gone", not_here, raising=False)  # waits on real pidfds
    return w


def run(world: World, levels, **kw):
    return stop_levels(levels, FakeFinder(world), clock=world.clock, sleep=world.sleep, **kw)


def target(world: World, name: str, pgid: int, pids=None, *, stop_signal=TERM, stop_timeout=5.0,
           dies_on=(TERM, KILL)) -> Target:
    """A provider whose tree is the group ``pgid`` with processes ``pids`` (the first is its main)."""
    pids = pids or [pgid]
    idents = [world.spawn(p, name, pgid, dies_on=dies_on) for p in pids]
    return Target(name, idents[0], pgid, stop_signal=stop_signal, stop_timeout=stop_timeout)


def kill_time(world: World, to: Optional[int] = None) -> float:
    return world.first(KILL, to)


# --- stop_levels: the escalation ---------------------------------------------------------------

def test_the_stop_signal_goes_first_to_the_group_with_sigcont(world):
    t = target(world, "web", 500, [500, 501, 502])
    [o] = run(world, [[t]])
    assert world.signals() == [(T0, "group", 500, TERM), (T0, "group", 500, CONT)]
    assert o.name == "web" and o.outcome == "exited" and 0 <= o.seconds <= POLL_MAX
    assert world.procs == {}


def test_the_configured_stop_signal_is_the_one_sent(world):
    t = target(world, "db", 500, stop_signal=INT, dies_on=(INT, KILL))
    [o] = run(world, [[t]])
    assert [s for _, _, _, s in world.signals()] == [INT, CONT] and o.outcome == "exited"


def test_a_stop_signal_of_sigkill_is_not_followed_by_sigcont(world):
    t = target(world, "web", 500, [500, 501], stop_signal=KILL)
    run(world, [[t]])
    assert world.signals(kind="group", delivered=None) == [(T0, "group", 500, KILL)]
    assert not world.signals(sig=CONT, delivered=None)


def test_sigkill_comes_at_the_targets_stop_timeout(world):
    t = target(world, "web", 500, [500, 501], stop_timeout=5.0, dies_on=(KILL,))
    world.spawn(777, "web", 777, dies_on=(KILL,))  # a member that left the group
    [o] = run(world, [[t]])
    k = kill_time(world)
    assert T0 + 5.0 <= k <= T0 + 5.0 + 1e-9
    assert all(s in (TERM, CONT) for t_, _, _, s in world.signals() if t_ < k)
    # Without a fence, the tree is stopped (SIGSTOP) before the SIGKILL: it cannot refill.
    stops = world.signals(sig=int(signal.SIGSTOP), delivered=None)
    assert stops and all(t_ == k for t_, _, _, _ in stops)
    # The group at once; a member that left it, unknown to the stop until its first walk,
    # once the trees have had their first look's moment to end.
    assert world.first(TERM, 500) == T0 and T0 < world.first(TERM, 777) <= T0 + FIRST_LOOK
    # SIGKILL goes to the group (without SIGCONT) and to the member outside it by identity.
    at_kill = [(kind, who, s) for t_, kind, who, s in world.signals() if t_ >= k]
    assert ("group", 500, KILL) in at_kill and ("pid", 777, KILL) in at_kill
    assert all(s in (KILL, int(signal.SIGSTOP)) for _, _, s in at_kill) and ("group", 500, int(signal.SIGSTOP)) in at_kill
    assert o.outcome == "killed" and 5.0 <= o.seconds <= 5.0 + POLL_MAX


def test_a_stop_timeout_of_zero_kills_at_the_first_look(world):
    t = target(world, "web", 500, stop_timeout=0.0, dies_on=(KILL,))
    [o] = run(world, [[t]])
    assert kill_time(world) == T0 and o.outcome == "killed"


def test_within_brings_sigkill_before_the_stop_timeout(world):
    t = target(world, "web", 500, stop_timeout=5.0, dies_on=(KILL,))
    [o] = run(world, [[t]], within=1.0)
    assert T0 + 1.0 <= kill_time(world) <= T0 + 1.0 + 1e-9 and o.outcome == "killed"


def test_within_does_not_extend_a_shorter_stop_timeout(world):
    t = target(world, "web", 500, stop_timeout=0.5, dies_on=(KILL,))
    run(world, [[t]], within=30.0)
    assert T0 + 0.5 <= kill_time(world) <= T0 + 0.5 + 1e-9


def test_a_deadline_tightened_during_the_stop_brings_sigkill_earlier(world):
    deadline = Deadline(None, world.clock)
    t = target(world, "web", 500, stop_timeout=5.0, dies_on=(KILL,))
    tightened = []

    def kernel_shutdown():  # another thread, as far as the stop can tell
        tightened.append(world.t)
        deadline.tighten(1.0)

    world.at(T0 + 0.5, kernel_shutdown)
    [o] = run(world, [[t]], deadline=deadline)
    [when] = tightened
    assert T0 + 0.5 <= when < T0 + 0.6
    assert when + 1.0 <= kill_time(world) <= when + 1.0 + 1e-9
    assert o.outcome == "killed" and o.seconds < 2.0


def test_a_deadline_tightened_to_the_past_kills_at_the_next_look(world):
    deadline = Deadline(None, world.clock)
    t = target(world, "web", 500, stop_timeout=60.0, dies_on=(KILL,))
    world.at(T0 + 3.0, lambda: deadline.tighten(0.0))
    run(world, [[t]], deadline=deadline)
    k = kill_time(world)
    assert T0 + 3.0 <= k <= T0 + 3.0 + POLL_MAX


def test_a_deadline_loosened_during_the_stop_changes_nothing(world):
    deadline = Deadline(2.0, world.clock)
    t = target(world, "web", 500, stop_timeout=60.0, dies_on=(KILL,))
    world.at(T0 + 0.5, lambda: deadline.tighten(30.0))
    run(world, [[t]], deadline=deadline)
    assert T0 + 2.0 <= kill_time(world) <= T0 + 2.0 + 1e-9


def test_the_deadline_caps_every_level_together(world):
    # Two levels, each with a 5 s stop timeout and ignoring TERM: "within 3" means SIGKILL
    # reaches the second level at T0+3 at the latest, not 3 s after it began.
    web = target(world, "web", 500, stop_timeout=5.0, dies_on=(KILL,))
    db = target(world, "db", 600, stop_timeout=5.0, dies_on=(KILL,))
    outcomes = run(world, [[web], [db]], within=3.0)
    assert [o.outcome for o in outcomes] == ["killed", "killed"]
    assert kill_time(world, 500) <= T0 + 3.0 + 1e-9
    assert world.first(TERM, 600) >= kill_time(world, 500)
    assert kill_time(world, 600) <= T0 + 3.0 + POLL_MAX


def test_targets_of_one_level_are_signalled_together(world):
    a = target(world, "a", 500, stop_timeout=1.0, dies_on=(KILL,))
    b = target(world, "b", 600, stop_timeout=3.0, dies_on=(KILL,))
    c = target(world, "c", 700, stop_timeout=9.0)  # exits on TERM
    outcomes = run(world, [[a, b, c]])
    # Every target got its stop signal before the first pause.
    assert world.first(TERM, 500) == world.first(TERM, 600) == world.first(TERM, 700) == T0
    # Each is killed at its own timeout, counted from the same start.
    assert T0 + 1.0 <= kill_time(world, 500) <= T0 + 1.0 + 1e-9
    assert T0 + 3.0 <= kill_time(world, 600) <= T0 + 3.0 + 1e-9
    assert not world.signals(to=700, sig=KILL)
    assert [(o.name, o.outcome) for o in outcomes] == [("a", "killed"), ("b", "killed"), ("c", "exited")]


def test_levels_are_stopped_one_after_the_other(world):
    web = target(world, "web", 500, stop_timeout=2.0, dies_on=(KILL,))
    db = target(world, "db", 600, stop_timeout=1.0, dies_on=(KILL,))
    outcomes = run(world, [[web], [db]])
    assert [o.name for o in outcomes] == ["web", "db"]
    web_gone = kill_time(world, 500)
    assert T0 + 2.0 <= web_gone
    db_term = world.first(TERM, 600)
    assert db_term > web_gone
    # The second level's stop timeout counts from when that level began.
    assert db_term + 1.0 <= kill_time(world, 600) <= db_term + 1.0 + 1e-9


def test_a_target_with_no_members_is_gone(world):
    called = []
    ghost = Target("ghost", None, None)
    [o] = run(world, [[ghost]], status_of=lambda t: called.append(t) or (0, None))
    assert o.outcome == "gone" and o.seconds == 0.0 and o.exit_code is None
    assert world.sent == [] and world.sleeps == [] and called == []


def test_a_target_whose_process_already_ended_is_gone(world):
    t = Target("web", ProcId(500, 100), 500)  # never spawned in the world: it is not there
    [o] = run(world, [[t]])
    assert o.outcome == "gone" and world.signals() == [] and world.sleeps == []


def test_a_gone_target_does_not_hold_up_its_level(world):
    ghost = Target("ghost", None, None)
    web = target(world, "web", 500)
    outcomes = run(world, [[ghost, web]])
    assert [(o.name, o.outcome) for o in outcomes] == [("ghost", "gone"), ("web", "exited")]
    assert world.t <= T0 + POLL_MAX


def test_status_of_gives_the_exit_code_and_signal_of_a_stopped_target(world):
    t = target(world, "web", 500)
    [o] = run(world, [[t]], status_of=lambda tg: (None, "SIGTERM") if tg is t else (1, None))
    assert (o.exit_code, o.signal) == (None, "SIGTERM")
    assert o.as_dict()["signal"] == "SIGTERM" and o.as_dict()["outcome"] == "exited"


def test_a_member_that_left_the_group_is_signalled_by_identity(world):
    t = target(world, "web", 500, [500], stop_timeout=1.0)
    world.spawn(777, "web", 777, dies_on=(KILL,))  # setsid()'d away, still the provider's
    run(world, [[t]])
    assert (T0, "group", 500, TERM) in world.signals()
    [(t1, _, _, s1), (t2, _, _, s2)] = world.signals(kind="pid", to=777)[:2]
    assert (s1, s2) == (TERM, CONT) and t1 == t2 <= T0 + FIRST_LOOK
    assert not world.signals(kind="pid", to=500, delivered=None)  # in the group: the group signal reached it


def test_without_a_living_group_member_each_member_is_signalled_by_identity(world):
    # The leader is gone and the rest left the group: no witness, so no group signal at all.
    world.spawn(501, "web", 900)
    world.spawn(502, "web", 901)
    t = Target("web", ProcId(500, 100), 500)
    t.members[501] = ProcId(501, 100)
    run(world, [[t]])
    assert not world.signals(kind="group")
    assert {who for _, _, who, s in world.signals(sig=TERM)} == {501, 502}


def test_a_target_without_a_pgid_is_signalled_member_by_member(world):
    world.spawn(501, "web", 501, dies_on=(KILL,))
    t = Target("web", ProcId(501, 100), None, stop_timeout=1.0)
    run(world, [[t]])
    assert world.signals(delivered=None)[:2] == [(T0, "pid", 501, TERM), (T0, "pid", 501, CONT)]
    assert not world.signals(kind="group", delivered=None)


def test_sigkill_is_repeated_until_nothing_is_left(world):
    t = target(world, "web", 500, stop_timeout=1.0, dies_on=(KILL,))
    # A child that appears after the first SIGKILL (forked in the same instant, seen late):
    # the next round finds it and SIGKILLs it too.
    world.at(T0 + 1.0005, lambda: world.spawn(503, "web", 500, start=BEGAN + 5, dies_on=(KILL,)))
    [o] = run(world, [[t]])
    first = kill_time(world)
    assert T0 + 1.0 <= first < T0 + 1.0005
    [(k1, *_), (k2, *_)] = world.signals(kind="group", to=500, sig=KILL)
    assert k1 == first and k2 > T0 + 1.0005
    assert not world.signals(to=503, sig=TERM)  # new since the stop began: no stop signal, only SIGKILL
    assert o.outcome == "killed" and world.procs == {}


def test_an_unkillable_tree_is_given_up_after_kill_grace_with_its_survivors(world):
    t = target(world, "web", 500, [500, 501], stop_timeout=1.0, dies_on=())  # uninterruptible sleep
    [o] = run(world, [[t]])
    # Never reported as stopped while a member lives: "survived", and who.
    assert o.outcome == "survived" and o.survivors == [500, 501]
    assert T0 + 1.0 + KILL_GRACE < T0 + o.seconds <= T0 + 1.0 + KILL_GRACE + 2 * POLL_MAX
    assert len(world.signals(kind="group", sig=KILL)) > 10  # every round, not once


def test_a_late_member_from_before_the_stop_gets_the_stop_signal_and_a_new_one_does_not(world):
    t = target(world, "web", 500, stop_timeout=2.0, dies_on=(KILL,))

    def late_arrivals():
        # Seen only now, e.g. caught mid-way while being re-parented: one older than the stop,
        # one forked by the provider's stop handler after the stop began.
        world.spawn(601, "web", 601, start=BEGAN - 1, dies_on=(KILL,))
        world.spawn(602, "web", 602, start=BEGAN, dies_on=(KILL,))

    world.at(T0 + 0.001, late_arrivals)
    run(world, [[t]])
    arrived = T0 + world.sleeps[0]
    assert world.signals(to=601, sig=TERM) and world.first(TERM, 601) >= arrived
    assert world.signals(to=601, sig=CONT)
    assert not world.signals(to=602, sig=TERM)
    # Both are reached by the deadline's SIGKILL.
    assert T0 + 2.0 <= kill_time(world, 602) <= T0 + 2.0 + 1e-9
    assert T0 + 2.0 <= kill_time(world, 601) <= T0 + 2.0 + 1e-9


def test_a_late_member_born_in_the_stops_own_tick_but_before_it_gets_the_stop_signal(world):
    """Regression: a member started in the same 10 ms clock tick as the stop was taken for
    the stop handler's helper and got no SIGTERM, so a graceful tree whose owner was killed
    right after it started waited out its whole stop timeout.  The pid tells them apart."""
    t = target(world, "web", 500, stop_timeout=2.0, dies_on=(TERM, KILL))

    def late_arrivals():
        world.spawn(599, "web", 599, start=BEGAN, dies_on=(TERM, KILL))  # pid given out before the stop
        world.spawn(602, "web", 602, start=BEGAN, dies_on=(KILL,))  # after it: the stop handler's

    world.at(T0 + 0.001, late_arrivals)
    run(world, [[t]])
    assert world.signals(to=599, sig=TERM) and not world.signals(to=599, sig=KILL)
    assert not world.signals(to=602, sig=TERM) and world.signals(to=602, sig=KILL)


def test_pids_are_told_born_before_or_after_a_moment_across_the_wrap():
    assert _proc.born_by(599, 600) and _proc.born_by(600, 600) and not _proc.born_by(601, 600)
    if _proc.LINUX:
        top = _proc._pid_max[0]
        assert _proc.born_by(top - 1, 5) and not _proc.born_by(6, 5)  # given out just before the wrap


def test_the_rest_sweep_stops_whatever_no_target_claimed_after_the_levels(world):
    web = target(world, "web", 500)
    world.spawn(900, None, 900)  # an orphan the watchdog found under it
    rest = Target("", None, None)
    outcomes = run(world, [[web]], rest=rest, status_of=lambda t: (7, None))
    assert [(o.name, o.outcome) for o in outcomes] == [("web", "exited"), ("", "exited")]
    assert world.index(TERM, 900) > world.index(TERM, 500)
    assert outcomes[1].exit_code is None  # status_of is for targets, not the sweep


def test_an_empty_rest_sweep_has_no_outcome(world):
    web = target(world, "web", 500)
    outcomes = run(world, [[web]], rest=Target("", None, None))
    assert [o.name for o in outcomes] == ["web"]


def test_no_levels_no_outcomes_no_signals(world):
    assert run(world, []) == [] and world.sent == []


def test_a_gone_target_is_not_signalled_even_by_attempt_to_a_recycled_pid(world):
    # Pid 500 now belongs to someone else (another start time): nothing may reach it.
    world.spawn(500, None, 500, start=999, dies_on=(TERM, KILL))
    t = Target("web", ProcId(500, 100), 500)
    [o] = run(world, [[t]])
    assert o.outcome == "gone" and world.signals() == [] and 500 in world.procs


# --- the real Finder, on a fake table ---------------------------------------------------------

def table(*stats: ProcStat) -> Dict[int, ProcStat]:
    return {s.pid: s for s in stats}


def P(pid, ppid, pgid, start=100, state="S") -> ProcStat:  # noqa: N802
    return ProcStat(pid, ppid, pgid, pgid, start, state, 0.0)


@pytest.fixture
def markers(monkeypatch):
    m: Dict[int, Dict[str, str]] = {}
    monkeypatch.setattr(_proc, "markers", lambda pid: m.get(pid, {}))
    return m


def test_the_finder_claims_descendants_by_parent_links(markers):
    universe = table(P(500, 1, 500), P(501, 500, 501), P(502, 501, 777), P(900, 1, 900))
    t = Target("web", ProcId(500, 100), 500)
    Finder("h", lambda: universe).find([t])
    assert set(t.members) == {500, 501, 502}


def test_the_finder_claims_the_group_of_a_living_member(markers):
    universe = table(P(500, 1, 500), P(503, 1, 500), P(900, 1, 900))
    t = Target("web", ProcId(500, 100), 500)
    Finder("h", lambda: universe).find([t])
    assert set(t.members) == {500, 503}


def test_the_finder_does_not_take_a_group_it_has_no_living_member_of(markers):
    # The main is gone and its pid recycled (another start time): group 500 is no longer proven ours.
    universe = table(P(500, 1, 500, start=999), P(503, 1, 500))
    t = Target("web", ProcId(500, 100), 500)
    Finder("h", lambda: universe).find([t])
    assert t.members == {}


def test_the_finder_claims_by_marker(markers):
    universe = table(P(500, 1, 500), P(800, 1, 800), P(801, 800, 801), P(802, 1, 802))
    markers[800] = {"HOSTCONSOLE_HOST": "h", "HOSTCONSOLE_PROVIDER": "web"}
    markers[802] = {"HOSTCONSOLE_HOST": "other-host", "HOSTCONSOLE_PROVIDER": "web"}
    t = Target("web", ProcId(500, 100), 500)
    Finder("h", lambda: universe).find([t])
    assert set(t.members) == {500, 800, 801}


def test_the_finder_leaves_out_the_dead_and_gives_the_rest_the_unclaimed(markers):
    universe = table(P(500, 1, 500), P(501, 500, 500, state="Z"), P(900, 1, 900), P(901, 1, 901, state="X"))
    t = Target("web", ProcId(500, 100), 500)
    rest = Target("", None, None)
    Finder("h", lambda: universe).find([t], rest)
    assert set(t.members) == {500} and set(rest.members) == {900}


def test_signal_tree_signals_the_group_once_and_outsiders_by_identity(world):
    world.spawn(500, "web", 500)
    world.spawn(501, "web", 500)
    world.spawn(777, "web", 777)
    t = Target("web", ProcId(500, 100), 500)
    t.members.update({501: ProcId(501, 100), 777: ProcId(777, 100)})
    signal_tree(t, signal.SIGHUP, dict(world.procs))
    hup = int(signal.SIGHUP)
    assert world.signals() == [(T0, "group", 500, hup), (T0, "group", 500, CONT), (T0, "pid", 777, hup),
                               (T0, "pid", 777, CONT)]
