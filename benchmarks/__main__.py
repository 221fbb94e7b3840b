"""``python -m benchmarks``: run the scenarios side by side and print the table."""

from __future__ import annotations

import argparse
import atexit
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time

from . import _common as C
from . import _report
from ._scenarios import DEFAULT_N, FIGURES, FINISHERS, N_MEANING, QUICK_N, RUNNERS, SCENARIOS, Ctx, Results
from ._systems import ALL

DEFAULT_REPEAT = 5

NOTES = """\
How to read it: each cell is min / median over the repetitions (ps: over calls; IPython:
over launches); "× Popen" is the median's ratio to the raw-Popen column measured in the same
run. Popen column: a Popen loop with start_new_session=True; stop = SIGTERM each, wait each
(until the stop timeout), SIGKILL what is left, wait. hostconsole: Host(state_dir).start()
(untimed), host.run(...) per provider, host.purge(). supervisord: programs with
autostart=false, startsecs=0 (RUNNING once spawned, like ready=none), stopwaitsecs = the stop
timeout; startAllProcesses / stopAllProcesses over its unix-socket XML-RPC (what
`supervisorctl start all` / `stop all` send; in-process, so no client start-up is counted).
circus: one watcher per program (autostart=false, graceful_timeout = the stop timeout),
`start NAME --waiting` per watcher (circus's `start` without a name starts only autostart
watchers), `stop --waiting` for all, over its ipc:// endpoint with circus's own client.
pm2 (pinned, installed by the benchmark with npm into benchmarks/.node/, its own PM2_HOME in
the temp dir): one fork-mode app per program in an ecosystem.config.js (interpreter none,
autorestart false, kill_timeout = the stop timeout), the daemon's kill signal set to SIGTERM
(PM2_KILL_SIGNAL; pm2's default is SIGINT), otherwise pm2's defaults (two actions at a time,
treekill, a stopped program's exit polled every 100 ms); `pm2 start ecosystem.config.js` /
`pm2 stop all` through pm2's programmatic API (what its CLI calls) from one long-lived node
client fed over a pipe, with the daemon launched before timing: neither node's start-up nor
the daemon's is counted (each `pm2` CLI command would add node's start-up and pm2's loading).
Start's CPU rows (Popen and hostconsole only): the starter's CPU during the start (the
benchmark process, which holds the Host, plus the watchdog; the scheduler's per-thread
statistics), and each child's own CPU once it sleeps (its exec and loading), per start.
Stop figures run until every main process is gone (polled every 1 ms after the call returns).
Crash: the owner (a separate process holding the Host, or the Popen loop, or supervisord /
circusd / pm2's God daemon) is SIGKILLed; the trees are `bash -c 'sleep 300 & setsid sleep 300 & wait'`
(3 processes each); marked processes (HOSTCONSOLE_HOST=<id>, which includes the watchdog)
are polled every 0.5 ms; survivors are counted by a full /proc rescan 2 s after the kill and
then killed by pid. ps: the Popen column is psutil gathering the same figures (cpu %, rss,
listening TCP ports) for as many Popen children, with no tree discovery. IPython:
`python -m IPython --no-banner -c CODE`, fresh IPYTHONDIR (created before timing), bare vs.
with `%load_ext hostconsole` + `%host start`, launched in pairs back to back (order
alternating); the overhead is the median of the pairs' differences in wall time, which
includes the host's shutdown at exit.
Memory: RSS of a fresh interpreter (psutil imported before the first reading) and of the
watchdog; for peers, the daemon's RSS with the programs configured but not started, then
running. Bytecode: this machine sets PYTHONDONTWRITEBYTECODE, under which the editable
hostconsole is recompiled in every interpreter; the interpreters the benchmark starts get it
unset and PYTHONPYCACHEPREFIX in the temp dir instead (warmed before timing), as an installed
copy would behave (--no-bytecode-cache keeps the environment as it is).
up: a stack of N (10: 1 -> 4 -> 5; each of level 2 requires the one of level 1, each of level 3
two of level 2), every provider `bash -c 'sleep 0.3; echo ready; exec sleep 300'` with ready =
"log:ready", in a hostconsole.toml; hostconsole: a fresh Host per measurement (started and its
watchdog up before timing), Host.up(path) until it returns (every provider ready; the file is
read inside the timing). Its target is 1.1 × (the critical path, 3 × 0.3 s, + the start cost);
the start cost is hostconsole's own, measured in the same repetition: Host.up of the same N
with ready=none and no requires (one flat file), until all running (its Popen column: N spawns,
nothing waited for). Popen column of up: a hand-written starter that spawns each program (own
session, stdout a pipe) as soon as everything it requires has printed its ready line, reading
the pipes with select: the critical path with no supervisor at all. The first-ready figure is
the first provider's readiness as each system saw it, after its own start (none for honcho: its
"started" line reaches its output after the process has started, so start-to-ready would look
shorter than it is). The order figure counts providers spawned before every provider they
require was ready (hostconsole: Provider.started_at against the requirements' ready_at; Popen:
the times the benchmark saw; honcho: the times its "started" and ready lines were seen, whose
lateness can hide a violation but not make one). The sequential starter (Popen: one at a time,
each until its ready line) is what a starter that ignores independence takes: the sum of
readiness. honcho (a Procfile runner: no dependencies, no readiness): `honcho start`'s own code
(honcho.command.main) in an interpreter started, and honcho imported, before timing, told to go
on stdin; its time is until every process's ready line has come through honcho's output
(`HH:MM:SS name.1 | ready`); its processes carry a variable of their own, and after each
repetition honcho is stopped by its own SIGTERM shutdown and every one of them is verified gone
by pid."""


def _default_base() -> str:
    """Where a Linux desktop keeps hostconsole's state by default: $XDG_RUNTIME_DIR, a tmpfs.
    Without it (a container, CI), another tmpfs (/dev/shm), else the default state dir's
    parent.  Each provider's log is a file created at its start, and on some disks (this
    sandbox's, for one) creating a file costs 0.1-0.6 ms: the machine section says how much."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return runtime
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    from hostconsole._statedir import default_state_dir

    saved = os.environ.pop("HOSTCONSOLE_STATE_DIR", None)
    try:
        return str(default_state_dir().parent)
    finally:
        if saved is not None:
            os.environ["HOSTCONSOLE_STATE_DIR"] = saved


def parse_n(values, names):
    out = {}
    for v in values or []:
        for part in v.split(","):
            if "=" in part:
                k, _, x = part.partition("=")
                if k not in names:
                    raise SystemExit(f"--n: unknown scenario {k!r} (choose from {', '.join(names)})")
                out[k] = int(x)
            else:
                for k in names:
                    out[k] = int(part)
    if any(x < 1 for x in out.values()):
        raise SystemExit("--n: N must be at least 1")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="hostconsole side by side with raw Popen, supervisord, circus, pm2 and (for up) honcho, "
                    "in one run.",
        epilog="scenarios and default N: " + ", ".join(f"{s}={DEFAULT_N[s]}" for s in SCENARIOS)
        + ". " + "; ".join(f"{k}: N = {v}" for k, v in N_MEANING.items()) + ".")
    ap.add_argument("--n", action="append", metavar="N|SCENARIO=N",
                    help="N for every selected scenario, or for one (repeatable, comma-separated)")
    ap.add_argument("--repeat", type=int, help=f"repetitions of each scenario (default {DEFAULT_REPEAT})")
    ap.add_argument("--only", action="append", metavar="SCENARIO",
                    help="run only these scenarios (repeatable, comma-separated): " + ", ".join(SCENARIOS))
    ap.add_argument("--quick", action="store_true", help="tiny N and 1 repetition: a smoke test")
    ap.add_argument("--no-peers", action="store_true", help="leave supervisord, circus, pm2 and honcho out")
    ap.add_argument("--markdown", metavar="PATH", help="also write the results as markdown to PATH")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="keep the environment's PYTHONDONTWRITEBYTECODE for the interpreters we start "
                         "(by default they cache bytecode in the run's temp dir, as after a pip install)")
    ap.add_argument("--tmp", metavar="DIR",
                    help="where the run keeps every system's files (default: $XDG_RUNTIME_DIR, where a Linux "
                         "desktop keeps hostconsole's state; else /dev/shm; else ~/.cache)")
    args = ap.parse_args(argv)

    only = []
    for o in args.only or []:
        only += [x.strip() for x in o.split(",") if x.strip()]
    for o in only:
        if o not in SCENARIOS:
            ap.error(f"unknown scenario {o!r} (choose from {', '.join(SCENARIOS)})")
    scenarios = [s for s in SCENARIOS if not only or s in only]
    n = dict(QUICK_N if args.quick else DEFAULT_N)
    n.update(parse_n(args.n, SCENARIOS))
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else DEFAULT_REPEAT)
    if repeat < 1:
        ap.error("--repeat must be at least 1")

    token = secrets.token_hex(6)
    os.environ[C.TAG_VAR] = token  # inherited by everything we start, and by their children
    base = args.tmp or _default_base()
    os.makedirs(base, mode=0o700, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="hcbench-", dir=base)
    os.environ["HOSTCONSOLE_STATE_DIR"] = os.path.join(tmp, "default-state")
    C.FILE_CREATE = {d: C.file_create_cost(d) for d in dict.fromkeys([tmp, tempfile.gettempdir()])}

    if not args.no_bytecode_cache:
        # An editable install under PYTHONDONTWRITEBYTECODE recompiles hostconsole in every
        # interpreter (IPython, the watchdog, owners): not what a user's installed copy does.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        C.warm_bytecode()

    def cleanup():
        try:
            C.sweep(token)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    atexit.register(cleanup)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    results = Results()
    systems, skipped = [], []
    for cls in ALL:
        if args.no_peers and cls.name not in ("popen", "hostconsole"):
            why = "left out (--no-peers)"  # before available(): pm2's may run npm
        else:
            why = cls.available()
        if why is None:
            systems.append(cls)
        else:
            skipped.append(f"{cls.label}: {why}; its column is skipped")
    for s in skipped:
        results.note(s)
    if args.no_bytecode_cache and os.environ.get("PYTHONDONTWRITEBYTECODE"):
        results.note("PYTHONDONTWRITEBYTECODE is set and kept (--no-bytecode-cache): every interpreter we start "
                     "compiles hostconsole from source")
    ctx = Ctx(tmp=tmp, token=token, systems=systems, results=results, repeat=repeat, n=n)
    ctx.source = _report.source_state()
    C.log(f"hostconsole benchmarks: {', '.join(scenarios)}; repeat {repeat}; systems "
          f"{', '.join(c.name for c in systems)}; temp {tmp}")

    t_start = time.monotonic()
    interrupted = False
    try:
        for sc in scenarios:
            results.n[sc] = n[sc]
            C.log(f"[{sc}] N={n[sc]}")
            for rep in range(repeat):
                if repeat > 1:
                    C.log(f" repetition {rep + 1}/{repeat}")
                RUNNERS[sc](ctx, rep)
            if sc in FINISHERS:
                FINISHERS[sc](ctx)
            found = C.sweep(token)
            if found:
                results.note(f"after {sc}: {len(found)} leftover process(es) killed by pid")
    except KeyboardInterrupt:
        interrupted = True
        C.log("interrupted: cleaning up and printing what was measured")
    elapsed = time.monotonic() - t_start

    names = [c.name for c in systems]
    table = _report.text_table(ctx, names)
    print()
    print(table)
    print()
    for note in results.notes:
        print(f"note: {note}")
    met = [(f, _report.verdict(ctx, f)) for f in FIGURES]
    met = [(f, v) for f, v in met if v is not None]
    if met:
        print()
        print("hostconsole against its targets:")
        for f, (ok, how) in met:
            nn = results.n.get(f.scenario)
            print(f"  {'met   ' if ok else 'MISSED'}  {f.text(nn)}: "
                  f"target {f.target_text}, {how}")
    print(f"\n{len(scenarios)} scenario(s), {repeat} repetition(s), {elapsed:.0f} s")

    if args.markdown:
        given = sys.argv[1:] if argv is None else list(argv)
        cmd = "python -m benchmarks" + (" " + shlex.join(given) if given else "")
        write_markdown(args.markdown, ctx, names, cmd, scenarios, repeat, elapsed, skipped)
        print(f"wrote {args.markdown}")
    return 130 if interrupted else 0


def write_markdown(path, ctx, names, cmd, scenarios, repeat, elapsed, skipped):
    r = ctx.results
    lines = ["# hostconsole benchmarks", "",
             f"Produced by `{cmd}` (from the repository root, with the project's venv: "
             f"`.venv/bin/python -m benchmarks ...`) on {time.strftime('%Y-%m-%d %H:%M %Z')}, "
             f"in {elapsed:.0f} s: {', '.join(scenarios)}; {repeat} repetition(s) each.", "",
             "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in _report.machine()]
    lines += [f"- packages: {_report.versions(ctx)}",
              f"- hostconsole source at the start of the run: {ctx.source}", "",
              "A shared machine: other test suites may run at the same time, so absolute figures are "
              "noisy; the ratios to the Popen baseline, measured in the same run, are what count.", "",
              "## Results", "", _report.markdown_table(ctx, names), ""]
    lines += ["N per scenario: " + ", ".join(f"{s} {r.n[s]}" for s in scenarios if s in r.n)
              + (" (ipython: launches of each variant per repetition)" if "ipython" in r.n else "") + ".", ""]
    met = [(f, _report.verdict(ctx, f)) for f in FIGURES]
    met = [(f, v) for f, v in met if v is not None]
    if met:
        lines += ["## Targets", ""]
        for f, (ok, how) in met:
            nn = r.n.get(f.scenario)
            lines.append(f"- **{'met' if ok else 'MISSED'}**: {f.text(nn)}"
                         f" — target {f.target_text}; {how}")
        lines.append("")
    if r.notes:
        lines += ["## Notes from the run", ""] + [f"- {n}" for n in r.notes] + [""]
    lines += ["## Method", "", NOTES, ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
