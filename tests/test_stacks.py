"""Stacks brought up and down for real: ``Host.up``/``down``, ``hostconsole up`` in a
subprocess (and under a pty), ``%host up``/``down``/``logs --all`` in a real
InteractiveShell, and ``%host up`` in a real Jupyter kernel.

Providers are small bash scripts that write timestamps (``date +%s.%N``) when they start
and, from a TERM trap, when they are stopped; they get ready (``log:^ready$``) a set time
after they start.  So order and concurrency are read from what the processes themselves
recorded, and no test sleeps: every wait polls with a bound.  The file formats and every
kind of bad input are in ``test_stack_files.py``.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

import hostconsole
from hostconsole.errors import HostconsoleError, ProviderFailed

from helpers import alive, magic, marked, sigint_after, wait_until
from test_kernel import Kernel

PY = sys.executable
SCRIPT = os.path.join(os.path.dirname(PY), "hostconsole")  # the console script of this venv
PKG_PARENT = str(Path(hostconsole.__file__).resolve().parent.parent)


# --- writing stacks -----------------------------------------------------------------------


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # (a JSON string is a TOML basic string)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def write_stack(d, providers, name="hostconsole.toml"):
    """``providers``: {name: {key: value}} as ``[providers.NAME]`` tables; returns the path."""
    lines = []
    for pname, options in providers.items():
        lines.append(f"[providers.{pname}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
        lines.append("")
    path = Path(d) / name
    path.write_text("\n".join(lines))
    return path


def stamped(d, name, *, requires=(), ready_after=0.3, stop_pause=0.0, say="", **options):
    """A provider that appends its start time to ``d/NAME.start``, prints ``ready`` after
    ``ready_after`` seconds (its readiness), and on TERM appends the time to
    ``d/NAME.stop``, pauses ``stop_pause`` seconds, and exits 0."""
    script = (f"trap 'date +%s.%N >> {d}/{name}.stop; sleep {stop_pause}; exit 0' TERM; "
              f"date +%s.%N >> {d}/{name}.start; {say}sleep {ready_after}; echo ready; "
              f"sleep 300 & wait")
    opts = {"command": script, "shell": True, "ready": "log:^ready$"}
    if requires:
        opts["requires"] = list(requires)
    opts.update(options)
    return opts


def stamps(d, name, kind="start"):
    p = Path(d) / f"{name}.{kind}"
    return [float(x) for x in p.read_text().split()] if p.exists() else []


def actions(report):
    return {r["name"]: r["action"] for r in report.records}


def pids(host, names):
    return {n: host.provider(n).pid for n in names}


# --- Host.up / Host.down ------------------------------------------------------------------


def test_independent_providers_start_together_after_what_they_require_and_up_takes_the_critical_path(
        host, tmp_path):
    deps = ["a", "b", "c", "d", "e"]
    stack = {"base": stamped(tmp_path, "base", ready_after=0.3)}
    for n in deps:
        stack[n] = stamped(tmp_path, n, requires=["base"], ready_after=0.5)
    f = write_stack(tmp_path, stack)

    t0 = time.monotonic()
    report = host.up(f)
    took = time.monotonic() - t0

    assert {r["name"]: (r["action"], r["state"]) for r in report.records} == {
        n: ("started", "running") for n in ["base", *deps]}
    base = stamps(tmp_path, "base")[0]
    starts = [stamps(tmp_path, n)[0] for n in deps]
    assert min(starts) >= base + 0.3, "each dependent started only once base was ready"
    assert max(starts) - min(starts) < 0.3, f"the dependents started together: {starts}"
    critical, serial = 0.3 + 0.5, 0.3 + 0.5 * len(deps)  # 0.8 s against 2.8 s
    assert critical <= took < serial - 1.0, f"up took {took:.2f}s (critical path {critical}, sum {serial})"
    assert all(report[n]["seconds"] >= critical for n in deps)


def test_a_chain_starts_each_provider_only_after_the_one_it_requires_is_ready(host, tmp_path):
    f = write_stack(tmp_path, {
        # (listed last first: the file's order is not the start order)
        "top": stamped(tmp_path, "top", requires=["mid"], ready_after=0.2),
        "mid": stamped(tmp_path, "mid", requires=["bottom"], ready_after=0.3),
        "bottom": stamped(tmp_path, "bottom", ready_after=0.3),
    })
    host.up(f)
    bottom, mid, top = (stamps(tmp_path, n)[0] for n in ("bottom", "mid", "top"))
    assert mid >= bottom + 0.3 and top >= mid + 0.3, (bottom, mid, top)
    assert [r["state"] for r in host.ps().records] == ["running"] * 3


def test_down_stops_dependents_first_and_independent_ones_together(host, tmp_path):
    deps = ["a", "b", "c"]
    stack = {"base": stamped(tmp_path, "base", ready_after=0.1)}
    for n in deps:
        stack[n] = stamped(tmp_path, n, requires=["base"], ready_after=0.1, stop_pause=0.4)
    stack["lone"] = stamped(tmp_path, "lone", ready_after=0.1, stop_pause=0.4)
    f = write_stack(tmp_path, stack)
    host.up(f)
    before = pids(host, stack)

    report = host.down(f)

    assert [r["name"] for r in report.records][-1] == "base"
    assert {r["name"] for r in report.records} == set(stack)
    assert all(r["outcome"] == "exited" for r in report.records), report
    stops = {n: stamps(tmp_path, n, "stop")[0] for n in stack}
    first_level = [stops[n] for n in deps + ["lone"]]
    assert max(first_level) - min(first_level) < 0.3, f"the dependents (and lone) were stopped together: {stops}"
    assert stops["base"] >= max(stops[n] for n in deps) + 0.35, f"base only once its dependents had exited: {stops}"
    assert {r["name"]: r["state"] for r in host.ps(all=True).records} == {n: "stopped" for n in stack}
    assert not any(alive(p) for p in before.values())
    host.down(f)  # again: nothing left to stop, and no error


def test_a_second_up_leaves_running_providers_alone_and_does_not_run_a_finished_oneshot_again(host, tmp_path):
    f = write_stack(tmp_path, {
        "migrate": {"command": f"echo migrated >> {tmp_path}/migrations", "shell": True, "oneshot": True},
        "db": stamped(tmp_path, "db", ready_after=0.1),
        "web": stamped(tmp_path, "web", requires=["db", "migrate"], ready_after=0.1),
    })
    first = host.up(f)
    assert actions(first) == {"migrate": "started", "db": "started", "web": "started"}
    assert first["migrate"]["state"] == "exited"
    running = pids(host, ["db", "web"])

    again = host.up(f)

    assert actions(again) == {"migrate": "unchanged", "db": "unchanged", "web": "unchanged"}
    assert {r["name"]: r["state"] for r in again.records} == {"migrate": "exited", "db": "running", "web": "running"}
    assert pids(host, ["db", "web"]) == running
    assert (tmp_path / "migrations").read_text() == "migrated\n", "the oneshot ran once"
    assert len(stamps(tmp_path, "db")) == 1 and len(stamps(tmp_path, "web")) == 1
    assert not stamps(tmp_path, "db", "stop") and not stamps(tmp_path, "web", "stop")


def test_an_edited_provider_is_restarted_with_its_dependents_only_and_a_new_one_is_started(host, tmp_path):
    stack = {
        "base": stamped(tmp_path, "base", ready_after=0.1),
        "mid": stamped(tmp_path, "mid", requires=["base"], ready_after=0.2),
        "leaf": stamped(tmp_path, "leaf", requires=["mid"], ready_after=0.1),
        "other": stamped(tmp_path, "other", requires=["base"], ready_after=0.1),
        "lone": stamped(tmp_path, "lone", ready_after=0.1),
    }
    f = write_stack(tmp_path, stack)
    host.up(f)
    before = pids(host, stack)

    stack["mid"] = stamped(tmp_path, "mid", requires=["base"], ready_after=0.2, say="echo edited; ")
    stack["extra"] = stamped(tmp_path, "extra", requires=["other"], ready_after=0.1)
    write_stack(tmp_path, stack)
    report = host.up(f)

    assert actions(report) == {"base": "unchanged", "mid": "restarted", "leaf": "restarted",
                               "other": "unchanged", "lone": "unchanged", "extra": "started"}
    assert all(r["state"] == "running" for r in report.records), report
    after = pids(host, stack)
    for n in ("base", "other", "lone"):
        assert after[n] == before[n] and len(stamps(tmp_path, n)) == 1, f"{n} was left alone"
    for n in ("mid", "leaf"):
        assert after[n] != before[n] and not alive(before[n]) and len(stamps(tmp_path, n)) == 2
    assert "edited" in host.logs("mid")
    # leaf went first and came back after mid was ready again
    assert stamps(tmp_path, "leaf", "stop")[0] <= stamps(tmp_path, "mid", "stop")[0]
    assert stamps(tmp_path, "leaf")[1] >= stamps(tmp_path, "mid")[1] + 0.2
    assert stamps(tmp_path, "extra")[0] >= stamps(tmp_path, "other")[0]


def test_up_of_named_providers_starts_them_and_what_they_require_and_down_of_one_takes_its_dependents(
        host, tmp_path):
    f = write_stack(tmp_path, {
        "base": stamped(tmp_path, "base", ready_after=0.1),
        "mid": stamped(tmp_path, "mid", requires=["base"], ready_after=0.1),
        "leaf": stamped(tmp_path, "leaf", requires=["mid"], ready_after=0.1),
        "other": stamped(tmp_path, "other", requires=["base"], ready_after=0.1),
    })
    report = host.up(f, ["leaf"])
    assert actions(report) == {"base": "started", "mid": "started", "leaf": "started"}
    assert "other" not in host and not stamps(tmp_path, "other")

    stopped = host.down(f, ["mid"])
    assert [r["name"] for r in stopped.records] == ["leaf", "mid"]
    assert {r["name"]: r["state"] for r in host.ps(all=True).records} == {
        "base": "running", "mid": "stopped", "leaf": "stopped"}
    with pytest.raises(HostconsoleError, match="no provider 'nosuch' in this stack") as e:
        host.up(f, ["nosuch"])
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_a_provider_that_fails_fails_up_naming_it_and_why_and_the_ready_ones_keep_running(host, tmp_path):
    f = write_stack(tmp_path, {
        "base": stamped(tmp_path, "base", ready_after=0.1),
        "side": stamped(tmp_path, "side", requires=["base"], ready_after=0.1),
        "broken": {"command": "echo the-reason >&2; exit 3", "shell": True, "ready": "log:never",
                   "requires": ["base"]},
        "after": stamped(tmp_path, "after", requires=["broken"], ready_after=0.1),
    })
    t0 = time.monotonic()
    with pytest.raises(ProviderFailed) as e:
        host.up(f)
    assert time.monotonic() - t0 < 10, "failed fast, not at a timeout"
    first_line = str(e.value).splitlines()[0]
    assert "'broken'" in first_line and "3" in first_line, str(e.value)
    assert "the-reason" in str(e.value)
    states = {r["name"]: r["state"] for r in host.ps(all=True).records}
    assert states["base"] == "running" and states["broken"] == "failed", states
    # (up fails at the first failure: what was still starting, independent of it, carries on)
    assert states["side"] in ("starting", "running")
    wait_until(lambda: host.provider("side").state == "running", what="side to be ready")
    wait_until(lambda: "after" not in host or host.provider("after").state in ("failed", "stopped"),
               what="what requires the failed provider to give up")
    assert not stamps(tmp_path, "after"), "what requires the failed provider never ran"


# --- hostconsole up (the console script) --------------------------------------------------


class Up:
    """``hostconsole up ARGS`` in the background, from ``cwd``; stdout and stderr go to files."""

    def __init__(self, cwd, *args, state_dir, env=()):
        self.cwd = Path(cwd)
        self.out, self.err = self.cwd / "up.stdout", self.cwd / "up.stderr"
        environ = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        environ.update(env, HOSTCONSOLE_STATE_DIR=str(state_dir))
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen([SCRIPT, "up", *map(str, args)], cwd=self.cwd, env=environ,
                                         stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        self.host_id = None

    def stdout(self):
        return self.out.read_text()

    def stderr(self):
        return self.err.read_text()

    def wait_ready(self, timeout=30):
        wait_until(lambda: "ready (host" in self.stderr() or self.proc.poll() is not None, timeout=timeout,
                   what="hostconsole up to bring the stack up")
        assert self.proc.poll() is None, self.stderr()
        self.host_id = re.search(r"\(host (\w+)\)", self.stderr()).group(1)
        return self.host_id

    def wait(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def close(self):
        """However the test went: nothing of this stack may be left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # (its watchdog stops the stack)
                self.proc.wait()
        if self.host_id:
            wait_until(lambda: not marked(self.host_id), timeout=15, what="the stack of hostconsole up to end")


@pytest.fixture
def cli_up(tmp_path):
    started = []

    def start(cwd, *args, env=()):
        up = Up(cwd, *args, state_dir=tmp_path / "cli-state", env=env)
        started.append(up)
        return up

    yield start
    for up in started:
        up.close()


def ticker(name, requires=(), **options):
    """A provider that says it starts, gets ready, then ticks every 0.1 s."""
    script = (f"echo {name} starting; sleep 0.2; echo ready; "
              f"i=0; while :; do i=$((i+1)); echo {name} tick $i; sleep 0.1; done")
    opts = {"command": script, "shell": True, "ready": "log:^ready$"}
    if requires:
        opts["requires"] = list(requires)
    opts.update(options)
    return opts


PREFIXED = re.compile(r"^(?P<name>[A-Za-z0-9._-]+) *\| (?P<line>.*)$")


def prefixed_lines(text):
    out = []
    for line in text.splitlines():
        m = PREFIXED.match(line)
        assert m, f"not a 'name | line' line: {line!r}"
        out.append((m["name"], m["line"]))
    return out


def test_cli_up_prints_every_providers_lines_prefixed_with_its_name_and_no_colour_off_a_tty(
        cli_up, tmp_path):
    write_stack(tmp_path, {"web": ticker("web"), "worker": ticker("worker", requires=["web"]),
                           "unused": stamped(tmp_path, "unused")})
    up = cli_up(tmp_path, "worker")  # worker and what it requires
    host_id = up.wait_ready()
    assert {m.get("HOSTCONSOLE_PROVIDER") for m in marked(host_id).values()} - {None} == {"web", "worker"}
    wait_until(lambda: "worker tick 3" in up.stdout() and "web tick 3" in up.stdout(), what="ticks of both")
    out = up.stdout()
    assert "\x1b" not in out, "no colour when stdout is not a terminal"
    lines = prefixed_lines(out)
    assert {n for n, _ in lines} == {"web", "worker"}
    assert all(line.startswith(name + " ") or line == "ready" for name, line in lines), lines
    assert re.search(r"^web    \| web tick \d+$", out, re.M), "names padded to the longest"
    up.proc.send_signal(signal.SIGINT)
    assert up.wait() == 0, up.stderr()
    assert not stamps(tmp_path, "unused")


def test_cli_up_also_prints_what_providers_wrote_while_the_stack_came_up(cli_up, tmp_path):
    write_stack(tmp_path, {
        "setup": {"command": "echo setup says hello", "shell": True, "oneshot": True},
        "web": ticker("web", requires=["setup"]),
    })
    up = cli_up(tmp_path)
    up.wait_ready()
    wait_until(lambda: "web tick 2" in up.stdout(), what="ticks")
    lines = prefixed_lines(up.stdout())
    assert ("setup", "setup says hello") in lines
    assert ("web", "web starting") in lines and ("web", "ready") in lines and ("web", "web tick 1") in lines


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_up_stops_the_stack_in_reverse_dependency_order_on_a_signal_and_exits_0(cli_up, tmp_path, sig):
    deps = ["a", "b"]
    stack = {"base": stamped(tmp_path, "base", ready_after=0.1)}
    for n in deps:
        stack[n] = stamped(tmp_path, n, requires=["base"], ready_after=0.1, stop_pause=0.4)
    write_stack(tmp_path, stack)
    up = cli_up(tmp_path)
    host_id = up.wait_ready()
    assert {m.get("HOSTCONSOLE_PROVIDER") for m in marked(host_id).values()} >= set(stack)

    up.proc.send_signal(sig)

    assert up.wait() == 0, up.stderr()
    stops = {n: stamps(tmp_path, n, "stop") for n in stack}
    assert all(len(s) == 1 for s in stops.values()), f"each was stopped with its stop signal: {stops}"
    assert abs(stops["a"][0] - stops["b"][0]) < 0.3, "the dependents together"
    assert stops["base"][0] >= max(stops["a"][0], stops["b"][0]) + 0.35, "base after its dependents had exited"
    assert re.search(r"stopped, in order: (a, b|b, a), base", up.stderr()), up.stderr()
    assert not marked(host_id), "nothing of the stack (nor its watchdog) is left"


def test_cli_up_fails_fast_naming_the_provider_that_failed_and_stops_the_rest(cli_up, tmp_path):
    write_stack(tmp_path, {
        "base": stamped(tmp_path, "base", ready_after=0.1),
        "good": stamped(tmp_path, "good", requires=["base"], ready_after=0.1, stop_pause=0.3),
        "bad": {"command": "echo bad is up; sleep 0.5; echo bad goes >&2; exit 3", "shell": True,
                "requires": ["base"]},
    })
    up = cli_up(tmp_path)
    host_id = up.wait_ready()
    rc = up.wait()
    assert rc != 0
    err = up.stderr()
    failed = [line for line in err.splitlines() if "failed" in line]
    assert len(failed) == 1 and "bad" in failed[0], err
    good, base = stamps(tmp_path, "good", "stop"), stamps(tmp_path, "base", "stop")
    assert good and base and base[0] >= good[0] + 0.25, "the rest stopped, dependents first"
    assert not marked(host_id)


def test_killing_cli_up_leaves_nothing_of_its_stack_running(cli_up, tmp_path):
    write_stack(tmp_path, {
        "base": stamped(tmp_path, "base", ready_after=0.1),
        "a": stamped(tmp_path, "a", requires=["base"], ready_after=0.1),
        "b": {"command": "sleep 300 & sleep 300 & wait", "shell": True, "requires": ["base"]},
    })
    up = cli_up(tmp_path)
    host_id = up.wait_ready()
    wait_until(lambda: len(marked(host_id)) >= 6, what="the stack's processes and the watchdog")
    up.proc.kill()
    up.proc.wait()
    wait_until(lambda: not marked(host_id), timeout=15, what="the watchdog to stop the stack")
    assert stamps(tmp_path, "a", "stop") and stamps(tmp_path, "base", "stop"), "stopped gracefully first"


@pytest.mark.parametrize("no_color", [False, True], ids=["tty", "tty-NO_COLOR"])
def test_cli_up_on_a_terminal_colours_the_name_prefixes_unless_no_color(tmp_path, no_color):
    from hostconsole._logfiles import colour_of

    write_stack(tmp_path, {"web": ticker("web"), "worker": ticker("worker", requires=["web"])})
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(HOSTCONSOLE_STATE_DIR=str(tmp_path / "tty-state"), TERM="xterm")
    if no_color:
        env["NO_COLOR"] = "1"
    child = pexpect.spawn(SCRIPT, ["up"], cwd=str(tmp_path), env=env, encoding="utf-8", timeout=30,
                          dimensions=(40, 200))
    seen = io.StringIO()
    child.logfile_read = seen
    host_id = None
    try:
        child.expect(r"\(host (\w+)\)")
        host_id = child.match.group(1)
        child.expect("worker tick 3")
        child.sendintr()  # Ctrl-C on the terminal
        child.expect(pexpect.EOF)
    finally:
        if child.isalive():
            child.terminate(force=True)  # (its watchdog stops the stack)
        child.close()
        if host_id:
            wait_until(lambda: not marked(host_id), timeout=15, what="the stack to end")
    out = seen.getvalue()
    if no_color:
        assert "\x1b[" not in out, out
        assert re.search(r"^worker \| worker tick \d+\r?$", out, re.M), out
    else:
        for name in ("web", "worker"):
            assert re.search(rf"\x1b\[{colour_of(name)}m{name} *\x1b\[0m \| {name} tick \d+", out), out
    assert child.exitstatus == 0, out


# --- %host up / down / logs --all in a real InteractiveShell --------------------------------


def test_magic_up_and_down_with_the_stack_file_of_the_current_directory(ip, tmp_path, monkeypatch, capsys):
    f = write_stack(tmp_path, {
        "db": stamped(tmp_path, "db", ready_after=0.1),
        "web": stamped(tmp_path, "web", requires=["db"], ready_after=0.1, stop_pause=0.2),
        "side": stamped(tmp_path, "side", ready_after=0.1),
    })
    monkeypatch.chdir(tmp_path)
    report = magic(ip, "up")
    assert actions(report) == {"db": "started", "web": "started", "side": "started"}
    assert "ACTION" in repr(report) and "started" in repr(report) and "<table>" in report._repr_html_()
    host = hostconsole.get_host()
    running = pids(host, ["db", "web", "side"])

    assert actions(magic(ip, "up")) == {"db": "unchanged", "web": "unchanged", "side": "unchanged"}
    assert actions(magic(ip, f"up {f} web")) == {"db": "unchanged", "web": "unchanged"}
    assert pids(host, ["db", "web", "side"]) == running

    stopped = magic(ip, "down db")
    assert [r["name"] for r in stopped.records] == ["web", "db"]
    assert host.provider("side").state == "running"
    stopped = magic(ip, f"down {f}")
    assert {r["name"] for r in stopped.records} >= {"side"}
    assert {r["state"] for r in host.ps(all=True).records} == {"stopped"}
    assert stamps(tmp_path, "db", "stop")[0] >= stamps(tmp_path, "web", "stop")[0] + 0.15


LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<name>\S+) *\| (?P<line>.*)$")


def log_lines(text):
    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        assert m, f"not an 'HH:MM:SS name | line' line: {line!r}"
        out.append((m["name"], m["line"]))
    return out


def test_magic_logs_all_and_of_several_names_prefix_each_line_with_its_name_in_time_order(
        ip, tmp_path, capsys):
    f = write_stack(tmp_path, {
        "alpha": {"command": "echo a1; sleep 0.8; echo a2; sleep 300", "shell": True, "ready": "log:^a1$"},
        "beta": {"command": "sleep 0.4; echo b1; sleep 0.8; echo b2; sleep 300", "shell": True,
                 "requires": ["alpha"]},
        "gamma": {"command": "echo g1; sleep 300", "shell": True, "ready": "log:^g1$"},
    })
    magic(ip, f"up {f}")
    host = hostconsole.get_host()
    wait_until(lambda: "b2" in host.logs("beta"), what="beta's second line")
    capsys.readouterr()

    assert magic(ip, "logs --all") is None
    lines = log_lines(capsys.readouterr().out)
    assert sorted(lines) == sorted([("alpha", "a1"), ("alpha", "a2"), ("beta", "b1"), ("beta", "b2"), ("gamma", "g1")])
    assert [x for x in lines if x[0] != "gamma"] == [("alpha", "a1"), ("beta", "b1"), ("alpha", "a2"), ("beta", "b2")]

    magic(ip, "logs alpha beta")
    assert log_lines(capsys.readouterr().out) == [("alpha", "a1"), ("beta", "b1"), ("alpha", "a2"), ("beta", "b2")]
    magic(ip, "logs alpha beta -n 1")
    assert log_lines(capsys.readouterr().out) == [("alpha", "a2"), ("beta", "b2")]


def test_magic_logs_all_follow_prints_new_lines_of_every_provider_until_interrupted(ip, tmp_path, capsys):
    f = write_stack(tmp_path, {
        "one": {"command": "i=0; while :; do i=$((i+1)); echo one $i; sleep 0.1; done", "shell": True},
        "two": {"command": "i=0; while :; do i=$((i+1)); echo two $i; sleep 0.1; done", "shell": True},
    })
    magic(ip, f"up {f}")
    host = hostconsole.get_host()
    wait_until(lambda: "one 3" in host.logs("one") and "two 3" in host.logs("two"), what="some lines")
    capsys.readouterr()
    timer = sigint_after(1.0)
    try:
        assert magic(ip, "logs --all -n 2 --follow") is None  # the interrupt ends it quietly
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped %host logs --all --follow")
    finally:
        timer.cancel()
    lines = log_lines(capsys.readouterr().out)
    for name in ("one", "two"):
        numbers = [int(line.split()[1]) for n, line in lines if n == name]
        assert all(line.startswith(n + " ") for n, line in lines)
        assert len(numbers) >= 6, f"the last 2, then new ones as they came: {lines}"
        assert numbers == sorted(set(numbers)), numbers
    assert all(host.provider(n).state == "running" for n in ("one", "two")), "the interrupt reached no provider"


# --- %host up in a real Jupyter kernel ----------------------------------------------------

def test_up_in_a_notebook_cell_shows_progress_per_provider_and_returns_a_table(tmp_path, kernels_dir):  # noqa: F811
    d = tmp_path / "stack"
    d.mkdir()
    f = write_stack(d, {
        "db": stamped(d, "db", ready_after=0.8),
        "api": stamped(d, "api", requires=["db"], ready_after=0.4),
        "jobs": stamped(d, "jobs", requires=["db"], ready_after=0.4),
    })
    k = Kernel(tmp_path / "kernel", kernels_dir)
    host_id = None
    try:
        k.run("%load_ext hostconsole")
        _, text = k.run(f"%host up {f}")
        host_id = k.host_id()
        lines = text.splitlines()
        for name in ("db", "api", "jobs"):
            assert any(l.startswith(f"[display_data] {name}: waiting for") for l in lines), text
            assert re.search(rf"^\[update_display_data\] {name}: ready \(\d+\.\ds\)$", text, re.M), text
        assert any(l.startswith("[display_data] api: waiting for dependencies db") for l in lines), text
        result = text[text.index("[execute_result]"):]
        assert "NAME" in result and "ACTION" in result
        for name in ("db", "api", "jobs"):
            assert re.search(rf"^{name} +started +running +\d+", result, re.M), result
        records = {r["name"]: r["state"] for r in k.eval("_hc.get_host().ps().records")}
        assert records == {"db": "running", "api": "running", "jobs": "running"}
        k.run(f"%host down {f}")
        assert not {m.get("HOSTCONSOLE_PROVIDER") for m in marked(host_id).values()} - {None}
    finally:
        k.close()
        if host_id:
            wait_until(lambda: not marked(host_id), timeout=15, what="the kernel's host to end")
