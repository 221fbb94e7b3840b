"""The scenarios: each one repetition at a time, every system in turn (the order rotates
between repetitions, so that no system always runs first or last on a noisy machine)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from . import _common as C
from ._systems import HostconsoleSystem, HostconsoleUnfenced, PopenSystem, Program, System, crash_env

HERE = os.path.dirname(os.path.abspath(__file__))
NEVER = float("inf")


# --- figures and targets ---------------------------------------------------------------


@dataclass
class Figure:
    key: str
    scenario: str
    label: str  # may use {n} and {n3}
    unit: str  # "s", "ms", "count", "bytes"
    target: Optional[Tuple] = None  # ("ratio", x) | ("max", x) | ("zero",) on hostconsole's median
    target_text: str = ""
    ratio: bool = True  # show the ratio to the Popen column
    baseline_label: str = ""  # what the Popen column measures, if not the obvious

    def text(self, n: Optional[int]) -> str:
        """The label for N (``{n}``; ``{n3}``: 3 N; ``{n1}``: N - 1)."""
        return self.label.format(n=n, n3=3 * n if n else "?", n1=n - 1 if n else "?")


FIGURES: List[Figure] = [
    Figure("start", "start", "start {n} providers until all running", "s", ("ratio", 1.5), "≤ 1.5× Popen"),
    Figure("start_unfenced", "start", "… the same with no fence (HOSTCONSOLE_FENCE=none)", "s", None),
    Figure("start_cpu", "start", "… CPU per start spent by the starter: owner + watchdog (Popen: the parent)", "us",
           None),
    Figure("start_child_cpu", "start", "… CPU per start spent by the child itself (its exec; the same program)", "us",
           None),
    Figure("start_cold", "start", "fresh Host().start() + 1st run() until running (Popen: 1 Popen)", "s", None,
           ratio=False),
    Figure("stop_term", "stop-term", "stop {n} (exit on SIGTERM) until all gone", "s", ("ratio", 2.0),
           "≤ 2× Popen"),
    Figure("stop_term_unfenced", "stop-term", "… the same with no fence (HOSTCONSOLE_FENCE=none)", "s", None),
    Figure("stop_ignore", "stop-ignore", "stop {n} (ignore SIGTERM, stop timeout 1 s) until all gone", "s",
           ("ratio", 1.05), "≤ 1.05× Popen"),
    Figure("crash_gone", "crash", "owner SIGKILLed ({n} trees): last marked process gone", "s", ("max", 0.100),
           "≤ 100 ms", ratio=False),
    Figure("crash_gone_prov", "crash", "… of which: last provider process gone", "s", None, ratio=False),
    Figure("crash_survivors", "crash", "processes alive 2 s after the SIGKILL (of {n3})", "count", ("zero",),
           "0 survive", ratio=False),
    Figure("ps_first", "ps", "ps() with {n} providers: first call (Popen: psutil, same figures)", "ms", ("max", 0.100), "≤ 100 ms",
           baseline_label="psutil figures of {n} Popen children"),
    Figure("ps_warm", "ps", "ps() with {n} providers: later calls (Popen: psutil, same figures)", "ms", None,
           baseline_label="psutil figures of {n} Popen children"),
    Figure("ipy_wall", "ipython", "IPython -c wall time (Popen column: bare IPython)", "s", None,
           baseline_label="bare IPython"),
    Figure("ipy_over", "ipython", "%load_ext + %host start over bare IPython (wall, paired launches)", "ms", ("max", 0.150),
           "≤ 150 ms", ratio=False),
    Figure("ipy_inproc", "ipython", "%load_ext + %host start, timed inside IPython", "ms", None, ratio=False),
    Figure("ipy_exit", "ipython", "IPython exit: last cell done → process gone (Popen column: bare)", "ms", None,
           baseline_label="bare IPython"),
    Figure("mem_own0", "memory", "owner RSS growth: import + start, 0 providers", "bytes", None, ratio=False),
    Figure("mem_ownN", "memory", "owner RSS growth: {n} providers (after a ps)", "bytes", None, ratio=False),
    Figure("mem_d0", "memory", "watchdog / daemon RSS, 0 providers running", "bytes", None, ratio=False),
    Figure("mem_dN", "memory", "watchdog / daemon RSS, {n} providers running", "bytes", None, ratio=False),
    Figure("up", "up", "up: a stack of {n} in 3 levels, each ready 0.3 s after it starts: until all ready "
           "(Popen: a hand-written starter; honcho: every ready line printed)", "s",
           ("path", 1.1, 3 * 0.3, "up_start"), "≤ 1.1 × (3 × 0.3 s + the start cost below)",
           baseline_label="a hand-written starter: each spawned once what it requires printed ready"),
    Figure("up_first", "up", "… the first provider seen ready, after its own start (it prints ready at 0.3 s)", "s",
           None),
    Figure("up_start", "up", "… the cost of starting the same {n} (ready=none, no requires; Popen: {n} spawns)", "s",
           None),
    Figure("up_order", "up", "… providers started before what they require was ready (of {n1} that require)",
           "count", ("zero",), "0", ratio=False),
    Figure("up_seq", "up", "a sequential starter, one at a time until ready (the sum of readiness, {n} × 0.3 s)",
           "s", None, ratio=False),
]
FIG = {f.key: f for f in FIGURES}

SCENARIOS = ["start", "stop-term", "stop-ignore", "crash", "ps", "ipython", "memory", "up"]
DEFAULT_N = {"start": 50, "stop-term": 50, "stop-ignore": 50, "crash": 20, "ps": 100, "ipython": 3, "memory": 100,
             "up": 10}
QUICK_N = {"start": 5, "stop-term": 5, "stop-ignore": 5, "crash": 3, "ps": 10, "ipython": 1, "memory": 10, "up": 10}
N_MEANING = {"ipython": "IPython launches of each variant per repetition",
             "up": "providers in the stack (at least 3: 1, then about 4/9 of the rest, then the rest)"}
STOP_TIMEOUT = 1.0
CRASH_WINDOW = 2.0


# --- the results -----------------------------------------------------------------------


@dataclass
class Results:
    samples: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    derived: Dict[str, Dict[str, Tuple[float, float]]] = field(default_factory=dict)  # key -> sys -> (min, med)
    notes: List[str] = field(default_factory=list)
    n: Dict[str, int] = field(default_factory=dict)

    def add(self, key: str, system: str, value: float):
        self.samples.setdefault(key, {}).setdefault(system, []).append(value)

    def note(self, text: str):
        if text not in self.notes:
            self.notes.append(text)
            C.log(f"  note: {text}")

    def summary(self, key: str, system: str) -> Optional[Tuple[float, float]]:
        if key in self.derived and system in self.derived[key]:
            return self.derived[key][system]
        xs = self.samples.get(key, {}).get(system)
        if not xs:
            return None
        return min(xs), C.median(xs)

    def worst(self, key: str, system: str) -> Optional[float]:
        xs = self.samples.get(key, {}).get(system)
        return max(xs) if xs else None


@dataclass
class Ctx:
    tmp: str
    token: str
    systems: List[type]  # available System classes, Popen first
    results: Results
    repeat: int
    n: Dict[str, int]
    source: str = ""

    def make(self, cls) -> System:
        return cls(self.tmp)


def _order(ctx: Ctx, rep: int, classes=None) -> List[type]:
    cls = list(classes or [c for c in ctx.systems if c.only is None])  # (honcho: only where asked for)
    k = rep % len(cls)
    return cls[k:] + cls[:k]


def _with_unfenced(ctx: Ctx, rep: int) -> List[type]:
    """The systems of a start or stop figure, and hostconsole once more with no fence."""
    classes = [c for c in ctx.systems if c.only is None]
    if HostconsoleSystem in classes:
        classes.append(HostconsoleUnfenced)
    return _order(ctx, rep, classes)


def _record(ctx: Ctx, key: str, s: System, dt: float):
    """One timing; the unfenced variant's under KEY_unfenced in the hostconsole column, beside
    the same Popen baseline."""
    if s.name == HostconsoleUnfenced.name:
        ctx.results.add(key + "_unfenced", HostconsoleSystem.name, dt)
        return
    ctx.results.add(key, s.name, dt)
    if getattr(s, "mechanism", None):
        ctx.results.note(f"hostconsole's fence in this run: {s.mechanism} (HOSTCONSOLE_FENCE unset: the strongest "
                         "the system allows; the 'no fence' rows: none)")
    if s.name == PopenSystem.name:
        ctx.results.add(key + "_unfenced", s.name, dt)


def _guard(ctx: Ctx, scenario: str, system: str, fn: Callable[[], None]) -> bool:
    """Run one system's repetition; a failure is a note, never a lost run or a leak."""
    try:
        fn()
        return True
    except Exception as e:
        ctx.results.note(f"{system} failed in {scenario}: {type(e).__name__}: {e}")
        return False
    finally:
        _sweep(ctx, f"{scenario}/{system}")


def _sweep(ctx: Ctx, where: str):
    """Nothing of this run may be alive between two systems' repetitions."""
    left = C.scan(C.TAG_VAR, ctx.token)
    if left:
        _, left = C.wait_gone(left, 2.0, 0.01)  # a reaper a few ms late is not a leak
    if left:
        desc = ", ".join(f"{i.pid} ({C.comm(i.pid)})" for i in left[:6])
        ctx.results.note(f"after {where}: {len(left)} leftover process(es) killed by pid: {desc}")
        still = C.kill_all(left)
        if still:
            raise RuntimeError(f"processes {[i.pid for i in still]} would not die")


# --- 1-3: start, stop ------------------------------------------------------------------


def _sleepers(n: int, argv=C.SLEEPER, stop_timeout: float = 5.0) -> List[Program]:
    return [Program(f"p{i}", list(argv), stop_timeout) for i in range(n)]


def scenario_start(ctx: Ctx, rep: int):
    n = ctx.n["start"]
    for cls in _with_unfenced(ctx, rep):
        s = ctx.make(cls)

        def one():
            s.open(_sleepers(n))
            try:
                starters = s.cpu_pids()
                cpu0 = [C.cpu_ns(pid) for pid in starters]
                t0 = time.perf_counter()
                s.start_all()
                dt = time.perf_counter() - t0
                cpu = sum(C.cpu_ns(pid) - c for pid, c in zip(starters, cpu0)) / n / 1e9
                running = s.remember()
                if len(running) != n:
                    raise RuntimeError(f"{len(running)} of {n} programs running after start")
                _record(ctx, "start", s, dt)
                if s.name in ("popen", "hostconsole"):
                    # Where the time goes: on 2 cores, each child's exec is CPU the starter's
                    # own work competes with (a child is counted once it sleeps: exec done).
                    C.wait_until(lambda: all((C.stat(i.pid) or ("S",))[0] == "S" for i in running), 10,
                                 what="the children to be done with their exec")
                    ctx.results.add("start_cpu", s.name, cpu)
                    ctx.results.add("start_child_cpu", s.name, sum(C.cpu_ns(i.pid) for i in running) / n / 1e9)
                C.log(f"  start       {s.name:<12} {dt * 1000:9.1f} ms  starter CPU {cpu * 1e6:.0f} µs a start"
                      + _fence_note(s))
            finally:
                s.close()

        _guard(ctx, "start", s.name, one)
        if s.name in ("popen", "hostconsole"):
            _guard(ctx, "start", s.name, lambda: _cold_start(ctx, s.name))


def _fence_note(s: System) -> str:
    mech = getattr(s, "mechanism", None)
    return f" [fence {mech}]" if mech else ""


def _cold_start(ctx: Ctx, name: str):
    """The first provider of a host that was not there: what `%host run` costs in a fresh
    kernel (Host.start() returns before its watchdog is up; the first run waits for it)."""
    if name == "popen":
        t0 = time.perf_counter()
        p = subprocess.Popen(C.SLEEPER, start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        C.stop_child(p, signal.SIGKILL)
    else:
        import hostconsole

        state = tempfile.mkdtemp(prefix="hc-cold-", dir=ctx.tmp)
        host = hostconsole.Host(state)
        try:
            t0 = time.perf_counter()
            host.start()
            host.run("cold", C.SLEEPER)
            dt = time.perf_counter() - t0
        finally:
            hid = host.host_id
            host.shutdown(timeout=10)
            C.kill_all(C.wait_gone(C.scan("HOSTCONSOLE_HOST", hid), 10, 0.005)[1] if hid else [])
            shutil.rmtree(state, ignore_errors=True)
    ctx.results.add("start_cold", name, dt)
    C.log(f"  start-cold  {name:<12} {dt * 1000:9.1f} ms")


def _stop_scenario(ctx: Ctx, rep: int, key: str, scenario: str, argv, stop_timeout: float, expect: str):
    n = ctx.n[scenario]
    for cls in (_with_unfenced(ctx, rep) if key == "stop_term" else _order(ctx, rep)):
        s = ctx.make(cls)

        def one():
            s.open(_sleepers(n, argv, stop_timeout))
            try:
                s.start_all()
                procs = s.remember()
                if len(procs) != n:
                    raise RuntimeError(f"{len(procs)} of {n} programs running after start")
                if argv is C.TERM_IGNORER:  # the shell has exec'd sleep with SIGTERM ignored
                    C.wait_until(lambda: all(C.comm(i.pid) == "sleep" for i in procs), 10, what="exec")
                t0 = time.perf_counter()
                s.stop_all()
                tail, left = C.wait_gone(procs, 30.0)
                dt = time.perf_counter() - t0
                if left:
                    raise RuntimeError(f"{len(left)} of {n} processes still alive 30 s after the stop returned")
                _record(ctx, key, s, dt)
                C.log(f"  {scenario:<11} {s.name:<12} {dt * 1000:9.1f} ms (tail after the call {tail * 1000:.1f} ms)"
                      + _fence_note(s))
                report = getattr(s, "report", None)
                if report is not None:
                    outcomes = {r["outcome"] for r in report.records}
                    if outcomes != {expect}:
                        ctx.results.note(f"hostconsole {scenario}: report outcomes {sorted(outcomes)}, expected {expect}")
            finally:
                s.close()

        _guard(ctx, scenario, s.name, one)


def scenario_stop_term(ctx: Ctx, rep: int):
    _stop_scenario(ctx, rep, "stop_term", "stop-term", C.SLEEPER, 5.0, "exited")


def scenario_stop_ignore(ctx: Ctx, rep: int):
    _stop_scenario(ctx, rep, "stop_ignore", "stop-ignore", C.TERM_IGNORER, STOP_TIMEOUT, "killed")


# --- 4: crash --------------------------------------------------------------------------


def _owner(ctx: Ctx, *args) -> Tuple[subprocess.Popen, dict, str]:
    work = tempfile.mkdtemp(prefix="owner-", dir=ctx.tmp)
    out = os.path.join(work, "owner.json")
    log = open(os.path.join(work, "owner.log"), "wb")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_owner.py"), args[0], out] + [str(a) for a in args[1:]],
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        def ready():
            if proc.poll() is not None:
                with open(os.path.join(work, "owner.log")) as f:
                    raise RuntimeError(f"owner exited with {proc.returncode}: {f.read()[-500:]}")
            return os.path.exists(out)

        C.wait_until(ready, 60, 0.01, "the owner's report")
        with open(out) as f:
            return proc, json.load(f), work
    except BaseException:
        C.stop_child(proc, signal.SIGKILL)
        raise


def _observe_crash(kill: Callable[[], None], watched: List[C.Ident], rescan: Callable[[], List[C.Ident]],
                   split: Optional[Callable[[C.Ident], bool]] = None):
    """Kill the supervisor, then poll the watched processes as fast as is sensible (every
    0.5 ms) for CRASH_WINDOW seconds.  Returns (seconds until all gone or NEVER, seconds
    until the ``split`` subset was gone or NEVER, survivors found by a full rescan)."""
    subset = [i for i in watched if split(i)] if split else []
    t_all = t_sub = None
    t0 = time.perf_counter()
    kill()
    left, left_sub = list(watched), list(subset)
    while time.perf_counter() - t0 < CRASH_WINDOW:
        left = [i for i in left if C.alive(i)]
        now = time.perf_counter()
        if split and t_sub is None:
            left_sub = [i for i in left_sub if C.alive(i)]
            if not left_sub:
                t_sub = now - t0
        if not left:
            t_all = now - t0
            break
        time.sleep(0.0005)
    rest = t0 + CRASH_WINDOW - time.perf_counter()
    if rest > 0:
        time.sleep(rest)
    survivors = rescan()
    return (NEVER if t_all is None else t_all), (NEVER if t_sub is None else t_sub), survivors


def _trees_ready(n: int, count: Callable[[], Dict[str, int]]):
    C.wait_until(lambda: (lambda c: c["all"] == 3 * n and c["sleep"] == 2 * n)(count()), 30, 0.02,
                 f"{n} trees of 3 processes")


def _record_crash(ctx: Ctx, name: str, t_all: float, t_prov: float, survivors: List[C.Ident], extra: str = ""):
    ctx.results.add("crash_gone", name, t_all)
    ctx.results.add("crash_gone_prov", name, t_prov)
    ctx.results.add("crash_survivors", name, len(survivors))
    fmt = lambda t: "never" if t == NEVER else f"{t * 1000:.1f} ms"  # noqa: E731
    C.log(f"  crash       {name:<12} all gone {fmt(t_all)}, providers gone {fmt(t_prov)}, "
          f"{len(survivors)} alive at {CRASH_WINDOW:g} s{extra}")


def _crash_hostconsole(ctx: Ctx, n: int):
    state = tempfile.mkdtemp(prefix="hc-crash-", dir=ctx.tmp)
    proc, rep, work = _owner(ctx, "hostconsole", n, state)
    hid = rep["host"]
    survivors: List[C.Ident] = []
    try:
        _trees_ready(n, lambda: C.count_crash_tree("HOSTCONSOLE_HOST", hid, also="HOSTCONSOLE_PROVIDER"))
        watched = C.scan("HOSTCONSOLE_HOST", hid)
        wd = C.ident(rep["watchdog"])
        if wd not in watched:
            raise RuntimeError("the watchdog does not carry HOSTCONSOLE_HOST")
        t_all, t_prov, survivors = _observe_crash(
            lambda: proc.send_signal(signal.SIGKILL), watched, lambda: C.scan("HOSTCONSOLE_HOST", hid),
            split=lambda i: i != wd)
        extra = ""
        report = os.path.join(state, "hosts", hid, "watchdog-report.json")
        if os.path.exists(report):
            with open(report) as f:
                outs = [o["outcome"] for o in json.load(f).get("outcomes", [])]
            extra = f"; watchdog report: {outs.count('exited')}/{len(outs)} exited on SIGTERM"
            if outs.count("exited") != len(outs):
                ctx.results.note(f"hostconsole crash: watchdog report outcomes {sorted(set(outs))}")
        _record_crash(ctx, "hostconsole", t_all, t_prov, survivors, extra)
    finally:
        C.stop_child(proc, signal.SIGKILL)
        C.kill_all(survivors + C.scan("HOSTCONSOLE_HOST", hid))
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def _crash_popen(ctx: Ctx, n: int):
    cid = secrets.token_hex(4)
    proc, rep, work = _owner(ctx, "popen", n, cid)
    survivors: List[C.Ident] = []
    try:
        _trees_ready(n, lambda: C.count_crash_tree(C.CRASH_VAR, cid))
        watched = C.scan(C.CRASH_VAR, cid)
        t_all, t_prov, survivors = _observe_crash(lambda: proc.send_signal(signal.SIGKILL), watched,
                                                  lambda: C.scan(C.CRASH_VAR, cid), split=lambda i: True)
        _record_crash(ctx, "popen", t_all, t_prov, survivors)
    finally:
        C.stop_child(proc, signal.SIGKILL)
        left = C.kill_all(survivors + C.scan(C.CRASH_VAR, cid))  # the orphans, by pid
        shutil.rmtree(work, ignore_errors=True)
        if left:
            raise RuntimeError(f"crash survivors {[i.pid for i in left]} would not die")


def _crash_peer(ctx: Ctx, cls, n: int):
    cid = secrets.token_hex(4)
    s = ctx.make(cls)
    programs = [Program(f"tree{i}", ["bash", "-c", C.CRASH_TREE], 5.0, crash_env(cid)) for i in range(n)]
    survivors: List[C.Ident] = []
    s.open(programs)
    try:
        s.start_all()
        _trees_ready(n, lambda: C.count_crash_tree(C.CRASH_VAR, cid))
        watched = C.scan(C.CRASH_VAR, cid)
        t_all, t_prov, survivors = _observe_crash(s.kill_supervisor, watched, lambda: C.scan(C.CRASH_VAR, cid),
                                                  split=lambda i: True)
        _record_crash(ctx, s.name, t_all, t_prov, survivors)
    finally:
        left = C.kill_all(survivors + C.scan(C.CRASH_VAR, cid))  # the orphans, by pid
        s.close()
        if left:
            raise RuntimeError(f"crash survivors {[i.pid for i in left]} would not die")


def scenario_crash(ctx: Ctx, rep: int):
    n = ctx.n["crash"]
    for cls in _order(ctx, rep):
        if cls is PopenSystem:
            fn = lambda: _crash_popen(ctx, n)  # noqa: E731
        elif cls.name == "hostconsole":
            fn = lambda: _crash_hostconsole(ctx, n)  # noqa: E731
        else:
            fn = (lambda c: lambda: _crash_peer(ctx, c, n))(cls)
        _guard(ctx, "crash", cls.name, fn)


# --- 5: ps -----------------------------------------------------------------------------

PS_CALLS = 5


def _psutil_figures(procs):
    """What ps reports (cpu %, rss, listening TCP ports), straight from psutil."""
    import psutil

    out = []
    for p in procs:
        try:
            with p.oneshot():
                cpu = p.cpu_percent(None)
                rss = p.memory_info().rss
            ports = [c.laddr.port for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
            out.append((cpu, rss, ports))
        except psutil.Error:
            pass
    return out


def scenario_ps(ctx: Ctx, rep: int):
    import psutil

    n = ctx.n["ps"]
    for cls in _order(ctx, rep, [c for c in ctx.systems if c.name in ("popen", "hostconsole")]):
        s = ctx.make(cls)

        def one():
            s.open(_sleepers(n))
            try:
                s.start_all()
                s.remember()
                times = []
                if s.name == "hostconsole":
                    for _ in range(PS_CALLS):
                        t0 = time.perf_counter()
                        table = s.host.ps()
                        times.append(time.perf_counter() - t0)
                    if len(table.records) != n:
                        raise RuntimeError(f"ps shows {len(table.records)} of {n} providers")
                else:
                    objs = None
                    for _ in range(PS_CALLS):
                        t0 = time.perf_counter()
                        if objs is None:
                            objs = [psutil.Process(p.pid) for p in s.procs]
                        _psutil_figures(objs)
                        times.append(time.perf_counter() - t0)
                ctx.results.add("ps_first", s.name, times[0])
                for t in times[1:]:
                    ctx.results.add("ps_warm", s.name, t)
                C.log(f"  ps          {s.name:<12} first {times[0] * 1000:.1f} ms, then "
                      f"{' '.join(f'{t * 1000:.1f}' for t in times[1:])} ms")
            finally:
                s.close()

        _guard(ctx, "ps", s.name, one)


# --- 6: IPython ------------------------------------------------------------------------

_T0 = "import time as _hcb_t; _hcb_t0 = _hcb_t.perf_counter()\n"
_T1 = "\nprint('HCBENCH_IN %.6f %.6f' % (_hcb_t.perf_counter() - _hcb_t0, _hcb_t.perf_counter()))"
IPY_BARE = _T0 + "pass" + _T1
IPY_EXT = _T0 + "%load_ext hostconsole\n%host start" + _T1
IPY_API = _T0 + "import hostconsole; hostconsole.get_host().start()" + _T1


def _ipython(ctx: Ctx, code: str) -> Tuple[float, Optional[float], str]:
    env = dict(os.environ, IPYTHONDIR=os.path.join(ctx.tmp, "ipython"),
               HOSTCONSOLE_STATE_DIR=os.path.join(ctx.tmp, "ipython-state"))
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "IPython", "--no-banner", "-c", code], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True, cwd=ctx.tmp)
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        C.stop_child(p, signal.SIGKILL)
        raise
    t1 = time.perf_counter()
    wall = t1 - t0
    text = out.decode(errors="replace")
    inproc = tail = None
    for line in text.splitlines():
        if line.startswith("HCBENCH_IN "):
            inproc = float(line.split()[1])
            tail = t1 - float(line.split()[2])  # perf_counter is CLOCK_MONOTONIC: one clock for both
    if p.returncode != 0:
        raise RuntimeError(f"IPython exited with {p.returncode}: {text[-400:]}")
    return wall, inproc, tail, text


_ipy_variant: Dict[str, str] = {}


def _ipython_variant(ctx: Ctx) -> str:
    """The magics if they work; else the Python API inside IPython (and a note)."""
    if "code" not in _ipy_variant:
        _ipython(ctx, IPY_BARE)  # creates the profile: not a cost we time
        try:
            _, inproc, _, text = _ipython(ctx, IPY_EXT)
            ok = inproc is not None and "Error" not in text and "started" in text
        except Exception as e:
            ok, text = False, str(e)
        if ok:
            _ipy_variant["code"] = IPY_EXT
        else:
            _ipy_variant["code"] = IPY_API
            ctx.results.note("IPython: `%load_ext hostconsole` / `%host start` did not work; timed "
                             "`import hostconsole; hostconsole.get_host().start()` inside IPython instead. "
                             f"Output: {text.strip()[-200:]!r}")
            _ipython(ctx, IPY_API)
    return _ipy_variant["code"]


def scenario_ipython(ctx: Ctx, rep: int):
    code = _ipython_variant(ctx)
    k = ctx.n["ipython"]
    for i in range(k):
        pair = [("popen", IPY_BARE), ("hostconsole", code)]
        if (rep + i) % 2:
            pair.reverse()
        walls = {}
        for name, c in pair:
            def one(name=name, c=c):
                wall, inproc, tail, _ = _ipython(ctx, c)
                walls[name] = wall
                ctx.results.add("ipy_wall", name, wall)
                if tail is not None:
                    ctx.results.add("ipy_exit", name, tail)
                if name == "hostconsole" and inproc is not None:
                    ctx.results.add("ipy_inproc", name, inproc)
                C.log(f"  ipython     {name if name != 'popen' else 'bare':<12} wall {wall * 1000:7.1f} ms"
                      + (f", in-process {inproc * 1000:.1f} ms" if name == "hostconsole" and inproc else "")
                      + (f", exit {tail * 1000:.1f} ms" if tail is not None else ""))

            _guard(ctx, "ipython", name, one)
        if len(walls) == 2:
            # Launches paired back to back: the difference within a pair sees the same load.
            ctx.results.add("ipy_over", "hostconsole", walls["hostconsole"] - walls["popen"])


def finish_ipython(ctx: Ctx):
    if _ipy_variant.get("code") == IPY_API:
        FIG["ipy_over"].label = "import hostconsole + get_host().start() over bare IPython (wall) [API, not magics]"
        FIG["ipy_inproc"].label = "import hostconsole + get_host().start(), timed inside IPython [API]"


# --- 7: memory -------------------------------------------------------------------------


def _mem_script(ctx: Ctx, *args) -> dict:
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "_mem.py")] + [str(a) for a in args],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        C.stop_child(p, signal.SIGKILL)
        raise
    if p.returncode != 0:
        raise RuntimeError(f"memory script failed ({p.returncode}): {err.decode()[-400:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def scenario_memory(ctx: Ctx, rep: int):
    n = ctx.n["memory"]
    r = ctx.results
    for cls in _order(ctx, rep):
        name = cls.name

        def one(cls=cls, name=name):
            if name in ("popen", "hostconsole"):
                state = tempfile.mkdtemp(prefix="hc-mem-", dir=ctx.tmp)
                try:
                    m = _mem_script(ctx, name, n, state)
                finally:
                    shutil.rmtree(state, ignore_errors=True)
                r.add("mem_own0", name, m["rss_0"] - m["rss_base"])
                r.add("mem_ownN", name, m["rss_n"] - m["rss_base"])
                if name == "hostconsole":
                    r.add("mem_d0", name, m["wd_rss_0"])
                    r.add("mem_dN", name, m["wd_rss_n"])
                    C.log(f"  memory      {name:<12} owner +{(m['rss_0'] - m['rss_base']) / 2**20:.1f} MiB "
                          f"(0) +{(m['rss_n'] - m['rss_base']) / 2**20:.1f} MiB ({n}); watchdog "
                          f"{m['wd_rss_0'] / 2**20:.1f} / {m['wd_rss_n'] / 2**20:.1f} MiB")
                else:
                    C.log(f"  memory      {name:<12} owner +{(m['rss_n'] - m['rss_base']) / 2**20:.1f} MiB ({n})")
                return
            s = ctx.make(cls)
            s.open(_sleepers(n))
            try:
                time.sleep(0.6)
                d0 = C.rss_of(s.daemon_pid)
                s.start_all()
                s.remember()
                time.sleep(0.6)
                dn = C.rss_of(s.daemon_pid)
                r.add("mem_d0", name, d0)
                r.add("mem_dN", name, dn)
                C.log(f"  memory      {name:<12} daemon {d0 / 2**20:.1f} / {dn / 2**20:.1f} MiB")
            finally:
                s.close()

        _guard(ctx, "memory", name, one)


# --- 8: up (a stack with dependencies and readiness) -----------------------------------

UP_READY = 0.3  # each provider is ready this long after it starts
UP_LINE = "ready"
UP_ARGV = ["bash", "-c", f"sleep {UP_READY:g}; echo {UP_LINE}; exec sleep 300"]
UP_SEQ_N = 10  # the sequential starter runs 10 at most (it takes N × 0.3 s)


def _up_stack(n: int) -> List[Tuple[str, List[str]]]:
    """(name, requires) in three levels: 1 -> about 4/9 of the rest -> the rest (10: 1 -> 4 -> 5).
    Each of level 2 requires the one of level 1; each of level 3 requires two of level 2
    (one, if level 2 has only one)."""
    if n < 3:
        raise SystemExit(f"--n up={n}: the up stack has 3 levels, so N must be at least 3")
    n2 = max(1, round((n - 1) * 4 / 9))
    n3 = n - 1 - n2
    if n3 < 1:
        n2, n3 = n2 - 1, 1
    l2 = [f"mid{i}" for i in range(n2)]
    out = [("base", [])] + [(m, ["base"]) for m in l2]
    for i in range(n3):
        out.append((f"top{i}", sorted({l2[i % n2], l2[(i + 1) % n2]})))
    return out


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a TOML basic string


def _up_files(ctx: Ctx, n: int) -> Tuple[str, str, str]:
    """The stack as hostconsole.toml, the same providers flat (ready=none, no requires) as
    another, and as a Procfile (no place for dependencies or readiness in one)."""
    import shlex

    d = tempfile.mkdtemp(prefix="up-", dir=ctx.tmp)
    cmd = "[" + ", ".join(_toml_str(a) for a in UP_ARGV) + "]"
    stack, flat, procfile = [], [], []
    for name, reqs in _up_stack(n):
        stack += [f"[providers.{name}]", f"command = {cmd}", f'ready = "log:{UP_LINE}"']
        if reqs:
            stack.append("requires = [" + ", ".join(_toml_str(r) for r in reqs) + "]")
        stack.append("")
        flat += [f"[providers.{name}]", f"command = {cmd}", ""]
        procfile.append(f"{name}: {shlex.join(UP_ARGV)}")
    paths = []
    for sub, text, fname in (("stack", stack, "hostconsole.toml"), ("flat", flat, "hostconsole.toml"),
                             ("honcho", procfile, "Procfile")):
        os.mkdir(os.path.join(d, sub))
        path = os.path.join(d, sub, fname)
        with open(path, "w") as f:
            f.write("\n".join(text) + "\n")
        paths.append(path)
    return paths[0], paths[1], paths[2]


def _violations(stack: List[Tuple[str, List[str]]], started: Dict[str, float], ready: Dict[str, float]) -> int:
    """Providers that started before every provider they require was ready."""
    return sum(1 for name, reqs in stack
               if reqs and any(ready.get(r) is None or started[name] < ready[r] for r in reqs))


def _popen_starter(stack: List[Tuple[str, List[str]]], sequential: bool, timeout: float = 30.0):
    """The baseline: spawn each program (Popen, its own session, stdout a pipe) as soon as
    every program it requires has printed its ready line (``sequential``: one at a time,
    each until its own ready line, in the stack's order).  Returns (seconds until all
    printed ready, started, ready (seconds from the start), the Popen objects)."""
    import select

    procs: Dict[str, subprocess.Popen] = {}
    bufs: Dict[int, Tuple[str, bytearray]] = {}
    started: Dict[str, float] = {}
    ready: Dict[str, float] = {}
    t0 = time.perf_counter()

    def spawn(name):
        p = subprocess.Popen(UP_ARGV, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        started[name] = time.perf_counter() - t0
        procs[name] = p
        bufs[p.stdout.fileno()] = (name, bytearray())

    try:
        while len(ready) < len(stack):
            for name, reqs in stack:
                if name in procs:
                    continue
                if sequential and len(procs) > len(ready):
                    break
                if all(r in ready for r in reqs):
                    spawn(name)
            fds = [fd for fd, (name, _) in bufs.items() if name not in ready]
            left = t0 + timeout - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"not all ready after {timeout:g} s: {sorted(set(procs) - set(ready))}")
            for fd in select.select(fds, [], [], left)[0]:
                name, buf = bufs[fd]
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"{name} closed its output before it printed {UP_LINE!r}")
                buf += chunk
                if (UP_LINE + "\n").encode() in buf:
                    ready[name] = time.perf_counter() - t0
        return max(ready.values()), started, ready, list(procs.values())
    except BaseException:
        _stop_popens(list(procs.values()))
        raise


def _stop_popens(procs: List[subprocess.Popen]):
    """SIGKILL each program's process group (its own session: bash's `sleep 0.3` too, if it
    has not exec'd yet), while the leader is unreaped (so the group id is still its own)."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
    for p in procs:
        p.wait(10)
        if p.stdout is not None:
            p.stdout.close()


def _up_popen(ctx: Ctx, stack, n: int, rep: int):
    dt, started, ready, procs = _popen_starter(stack, sequential=False)
    _stop_popens(procs)
    ctx.results.add("up", "popen", dt)
    ctx.results.add("up_first", "popen", ready[stack[0][0]] - started[stack[0][0]])
    ctx.results.add("up_order", "popen", _violations(stack, started, ready))
    # The cost of starting the same N: N spawns, nothing waited for.
    t0 = time.perf_counter()
    flat = [subprocess.Popen(UP_ARGV, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(n)]
    dt_start = time.perf_counter() - t0
    _stop_popens(flat)
    ctx.results.add("up_start", "popen", dt_start)
    seq = ""
    if n > UP_SEQ_N:
        ctx.results.note(f"up: the sequential starter is run for N ≤ {UP_SEQ_N} only (it takes N × {UP_READY:g} s)")
    if n <= UP_SEQ_N:  # (it takes N × 0.3 s)
        dts, _, _, procs = _popen_starter(stack, sequential=True)
        _stop_popens(procs)
        ctx.results.add("up_seq", "popen", dts)
        seq = f"; sequential {dts * 1000:.1f} ms"
    C.log(f"  up          {'popen':<12} {dt * 1000:9.1f} ms (start of {n} without waiting {dt_start * 1000:.1f} ms{seq})")


def _up_hostconsole(ctx: Ctx, stack, n: int, stack_file: str, flat_file: str):
    s = HostconsoleSystem(ctx.tmp)
    s.open([])
    try:
        t0 = time.perf_counter()
        report = s.host.up(stack_file)
        dt = time.perf_counter() - t0
        states = {r["name"]: r["state"] for r in report.records}
        if sorted(states) != sorted(name for name, _ in stack) or set(states.values()) != {"running"}:
            raise RuntimeError(f"after up: {states}")
        provs = {name: s.host.provider(name) for name, _ in stack}
        base = min(p.started_at for p in provs.values())
        started = {k: p.started_at - base for k, p in provs.items()}
        ready = {k: p.ready_at - base for k, p in provs.items() if p.ready_at is not None}
        ctx.results.add("up", "hostconsole", dt)
        ctx.results.add("up_first", "hostconsole", ready[stack[0][0]] - started[stack[0][0]])
        ctx.results.add("up_order", "hostconsole", _violations(stack, started, ready))
        levels = {}
        for name, reqs in stack:
            lv = 0 if not reqs else 1 + max(levels[r] for r in reqs)
            levels[name] = lv
        by_level = [max(ready[k] for k in levels if levels[k] == lv) for lv in range(3)]
        detail = ", ".join(f"level {i + 1} ready {t * 1000:.0f} ms" for i, t in enumerate(by_level))
    finally:
        s.close()
    s = HostconsoleSystem(ctx.tmp)
    s.open([])
    try:
        t0 = time.perf_counter()
        report = s.host.up(flat_file)
        dt_start = time.perf_counter() - t0
        if len(report.records) != n or {r["state"] for r in report.records} != {"running"}:
            raise RuntimeError(f"after up of the flat stack: {[(r['name'], r['state']) for r in report.records]}")
        ctx.results.add("up_start", "hostconsole", dt_start)
    finally:
        s.close()
    C.log(f"  up          {'hostconsole':<12} {dt * 1000:9.1f} ms ({detail} after the first start; "
          f"start of {n} with ready=none {dt_start * 1000:.1f} ms)")


def _up_honcho(ctx: Ctx, cls, stack, procfile: str):
    s = cls(ctx.tmp)
    s.open(procfile)
    try:
        dt, started, ready, pids = s.up([name for name, _ in stack], UP_LINE)
        if len(pids) != len(stack):
            raise RuntimeError(f"honcho reported {len(pids)} of {len(stack)} processes started")
        s.seen.extend(i for i in (C.ident(p) for p in pids) if i is not None)
    finally:
        s.close()
        if s.left:
            ctx.results.note(f"honcho: {len(s.left)} process(es) left after its own shutdown, killed by pid: "
                             f"{s.left[:6]}")
    ctx.results.add("up", s.name, dt)
    # (No first-ready figure for honcho: its "started" line comes through its queue after the
    # process has started, so start-to-ready would look shorter than it is.  For the order
    # figure that lateness can only hide a violation, never make one.)
    ctx.results.add("up_order", s.name, _violations(stack, started, ready))
    C.log(f"  up          {s.name:<12} {dt * 1000:9.1f} ms (every ready line; last process started "
          f"{max(started.values()) * 1000:.1f} ms after the go; {_violations(stack, started, ready)} started before "
          f"what they require was ready)")


def scenario_up(ctx: Ctx, rep: int):
    n = ctx.n["up"]
    stack = _up_stack(n)
    stack_file, flat_file, procfile = _up_files(ctx, n)
    classes = [c for c in ctx.systems if c.name in ("popen", "hostconsole", "honcho")]
    for cls in _order(ctx, rep, classes):
        if cls is PopenSystem:
            fn = lambda: _up_popen(ctx, stack, n, rep)  # noqa: E731
        elif cls.name == "hostconsole":
            fn = lambda: _up_hostconsole(ctx, stack, n, stack_file, flat_file)  # noqa: E731
        else:
            fn = (lambda c: lambda: _up_honcho(ctx, c, stack, procfile))(cls)
        _guard(ctx, "up", cls.name, fn)
    shutil.rmtree(os.path.dirname(os.path.dirname(stack_file)), ignore_errors=True)


def finish_up(ctx: Ctx):
    if any(c.name == "honcho" for c in ctx.systems):
        ctx.results.note("up: honcho has no dependencies and no readiness (a Procfile has no place for either): it "
                         "starts every line at once, so its time is one readiness (0.3 s) plus its start, and every "
                         "provider that requires another starts before that one is ready (the order figure)")


RUNNERS = {
    "start": scenario_start,
    "stop-term": scenario_stop_term,
    "stop-ignore": scenario_stop_ignore,
    "crash": scenario_crash,
    "ps": scenario_ps,
    "ipython": scenario_ipython,
    "memory": scenario_memory,
    "up": scenario_up,
}
FINISHERS = {"ipython": finish_ipython, "up": finish_up}
