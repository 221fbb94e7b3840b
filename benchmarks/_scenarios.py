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
from ._systems import PopenSystem, Program, System, crash_env

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


FIGURES: List[Figure] = [
    Figure("start", "start", "start {n} providers until all running", "s", ("ratio", 1.5), "≤ 1.5× Popen"),
    Figure("start_cold", "start", "fresh Host().start() + 1st run() until running (Popen: 1 Popen)", "s", None,
           ratio=False),
    Figure("stop_term", "stop-term", "stop {n} (exit on SIGTERM) until all gone", "s", ("ratio", 2.0),
           "≤ 2× Popen"),
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
]
FIG = {f.key: f for f in FIGURES}

SCENARIOS = ["start", "stop-term", "stop-ignore", "crash", "ps", "ipython", "memory"]
DEFAULT_N = {"start": 50, "stop-term": 50, "stop-ignore": 50, "crash": 20, "ps": 100, "ipython": 3, "memory": 100}
QUICK_N = {"start": 5, "stop-term": 5, "stop-ignore": 5, "crash": 3, "ps": 10, "ipython": 1, "memory": 10}
N_MEANING = {"ipython": "IPython launches of each variant per repetition"}
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
    cls = list(classes or ctx.systems)
    k = rep % len(cls)
    return cls[k:] + cls[:k]


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
    for cls in _order(ctx, rep):
        s = ctx.make(cls)

        def one():
            s.open(_sleepers(n))
            try:
                t0 = time.perf_counter()
                s.start_all()
                dt = time.perf_counter() - t0
                running = s.remember()
                if len(running) != n:
                    raise RuntimeError(f"{len(running)} of {n} programs running after start")
                ctx.results.add("start", s.name, dt)
                C.log(f"  start       {s.name:<12} {dt * 1000:9.1f} ms")
            finally:
                s.close()

        _guard(ctx, "start", s.name, one)
        if s.name in ("popen", "hostconsole"):
            _guard(ctx, "start", s.name, lambda: _cold_start(ctx, s.name))


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
    for cls in _order(ctx, rep):
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
                ctx.results.add(key, s.name, dt)
                C.log(f"  {scenario:<11} {s.name:<12} {dt * 1000:9.1f} ms (tail after the call {tail * 1000:.1f} ms)")
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


RUNNERS = {
    "start": scenario_start,
    "stop-term": scenario_stop_term,
    "stop-ignore": scenario_stop_ignore,
    "crash": scenario_crash,
    "ps": scenario_ps,
    "ipython": scenario_ipython,
    "memory": scenario_memory,
}
FINISHERS = {"ipython": finish_ipython}
