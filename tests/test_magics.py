"""The %host magics in a real InteractiveShell, with real processes.

Every subcommand, every kind of bad input (one UsageError line, nothing disturbed), IPython's
argument expansion, the cell magic, and the extension's load/unload/reload lifecycle.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest
from IPython.core.error import UsageError

import hostconsole
from hostconsole import ipython as hc_ipython

from helpers import alive, free_port, magic, marked, read_pids, sigint_after, wait_until

PY = sys.executable


def providers_of(host_id):
    return {m.get("HOSTCONSOLE_PROVIDER") for m in marked(host_id).values()} - {None}


# --- every subcommand ---------------------------------------------------------------------


def test_help_and_bare_host_print_usage(ip, capsys):
    assert magic(ip, "") is None
    out = capsys.readouterr().out
    for sub in ("start", "run NAME", "ps", "logs NAME", "stop NAME", "restart NAME", "purge", "shutdown",
                "status", "reap", "--requires", "--ready-timeout", "--no-wait"):
        assert sub in out
    assert magic(ip, "help") is None and "%%host run NAME" in capsys.readouterr().out
    assert magic(ip, "help run") is None and "--stop-signal" in capsys.readouterr().out
    assert magic(ip, "run -h") is None and "--stop-signal" in capsys.readouterr().out
    assert not hostconsole.get_host().started, "help starts nothing"


def test_start_is_idempotent_and_reports_its_state_dir(ip, tmp_path, capsys):
    d = tmp_path / "elsewhere"
    magic(ip, f"start --state-dir {d}")
    host = hostconsole.get_host()
    assert host.started and host.state_dir == d
    assert f"host {host.host_id} started" in capsys.readouterr().out
    first = host.host_id
    magic(ip, "start")
    magic(ip, f"start --state-dir {d}")
    assert host.host_id == first and "already started" in capsys.readouterr().out
    with pytest.raises(UsageError, match="already runs with state dir"):
        magic(ip, f"start --state-dir {tmp_path / 'other'}")
    assert len([m for m in marked(first).values() if "HOSTCONSOLE_PROVIDER" not in m]) == 1, "one watchdog"


def test_run_ps_logs_stop_restart(ip, capsys):
    web = magic(ip, "run web -- sleep 300")
    assert isinstance(web, hostconsole.Provider) and web.state == "running"
    assert "running" in repr(web) and f"pid {web.pid}" in repr(web)
    assert hostconsole.get_host().provider("web") is web
    magic(ip, "run worker --requires web --stop-signal INT --stop-timeout 2 -- "
              "bash -c 'trap \"echo got INT; exit 0\" INT; echo worker up; while :; do sleep 0.05; done'")
    wait_until(lambda: "worker up" in hostconsole.get_host().logs("worker"), what="worker output")

    table = magic(ip, "ps")
    assert isinstance(table, hostconsole.PsTable)
    assert {r["name"]: r["state"] for r in table.records} == {"web": "running", "worker": "running"}
    assert "<table>" in table._repr_html_() and "worker" in repr(table)

    capsys.readouterr()
    assert magic(ip, "logs worker") is None
    assert capsys.readouterr().out == "worker up\n"
    assert magic(ip, "logs worker -n 0") is None and capsys.readouterr().out == ""

    report = magic(ip, "stop web")  # its dependent first, with its own stop signal
    assert isinstance(report, hostconsole.StopReport)
    assert {r["name"] for r in report.records} == {"worker", "web"}
    assert "got INT" in hostconsole.get_host().logs("worker")
    assert magic(ip, "ps").records == []
    assert {r["name"]: r["state"] for r in magic(ip, "ps --all").records} == {"web": "stopped", "worker": "stopped"}

    again = magic(ip, "restart web")
    assert again.state == "running" and again.pid != web.pid and again.restarts == 1


def test_run_options_reach_the_host(ip, tmp_path):
    host = hostconsole.get_host()
    port = free_port()
    web = magic(ip, f"run web --no-wait --ready http://127.0.0.1:{port}/ --ready-timeout 20 -- "
                    f"{PY} -m http.server {port} --bind 127.0.0.1")
    assert web.state == "starting", "--no-wait returns before readiness"
    wait_until(lambda: web.state == "running", timeout=20, what="web to answer")
    logged = magic(ip, "run logged --ready 'log:^listening on [0-9]+$' -- "
                       "bash -c 'sleep 0.3; echo listening on 42; sleep 300'")
    assert logged.state == "running" and "listening on 42" in host.logs("logged")
    magic(ip, "run dep --requires web,logged -- sleep 300")
    assert set(host.provider("dep").requires) == {"web", "logged"}

    with pytest.raises(UsageError, match="not ready after 0.5s"):
        magic(ip, f"run never --ready port:{free_port()} --ready-timeout 0.5 -- sleep 300")
    never = host.provider("never")
    assert never.state == "failed" and never.pid is None, "a provider that never got ready is stopped"

    flaky = magic(ip, f"run flaky --restart on-failure -- bash -c 'echo run >> {tmp_path}/runs; sleep 0.2; exit 1'")
    wait_until(lambda: flaky.restarts >= 2, timeout=20, what="on-failure restarts")
    assert (tmp_path / "runs").read_text().count("run") >= 2


def test_ps_json_prints_the_records(ip, capsys):
    magic(ip, "run a -- sleep 300")
    magic(ip, "run done --oneshot -- true")
    capsys.readouterr()
    assert magic(ip, "ps --json") is None
    records = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in records} == {"a", "done"}
    a = next(r for r in records if r["name"] == "a")
    for key in ("kind", "state", "pid", "uptime", "restarts", "exit_code", "signal", "cpu_percent", "rss",
                "nprocs", "ports"):
        assert key in a
    assert a["state"] == "running" and a["nprocs"] == 1 and a["kind"] == "provider"
    magic(ip, "stop a")
    magic(ip, "ps --json --all")
    assert {r["name"]: r["state"] for r in json.loads(capsys.readouterr().out)} == {"a": "stopped", "done": "exited"}


def test_purge_stops_everything_and_the_host_stays_up(ip, tmp_path):
    magic(ip, "run base -- sleep 300")
    magic(ip, f"run top --requires base -- bash -c 'sleep 300 & echo $! > {tmp_path}/gc; wait'")
    (gc,) = read_pids(tmp_path / "gc")
    host = hostconsole.get_host()
    report = magic(ip, "purge --timeout 2")
    assert {r["name"] for r in report.records} == {"top", "base"}
    assert not providers_of(host.host_id) and not alive(gc)
    assert host.started and magic(ip, "run after -- sleep 300").state == "running"


def test_shutdown_releases_the_host_and_a_new_one_can_start(ip):
    magic(ip, "run a -- sleep 300")
    host = hostconsole.get_host()
    old = host.host_id
    report = magic(ip, "shutdown")
    assert [r["name"] for r in report.records] == ["a"]
    assert not host.started and not marked(old)
    p = magic(ip, "run b -- sleep 300")
    assert host.host_id != old and p.state == "running"


def test_status_shows_the_host_and_the_hooks(ip):
    magic(ip, "run a -- sleep 300")
    status = magic(ip, "status")
    host = hostconsole.get_host()
    assert status["host"] == host.host_id and status["pid"] == os.getpid()
    assert status["providers"] == {"running": 1}
    assert status["hooks"] == ["atexit", "exit_now"]  # no kernel here: no do_shutdown to wrap
    text = repr(status)
    assert host.host_id in text and "exit_now" in text and "{" not in text
    assert "<table>" in status._repr_html_()


def test_reap_finds_and_stops_leftovers_of_a_dead_host(ip, state_dir, tmp_path):
    from test_crash import start_owner, tree_pids

    info = start_owner(state_dir, tmp_path)
    os.kill(info["proc"].pid, signal.SIGSTOP)  # a double fault: frozen, the owner cannot replace its watchdog
    os.kill(info["watchdog"], signal.SIGKILL)  # the double fault: nothing left to clean up
    wait_until(lambda: not alive(info["watchdog"]), what="watchdog dead")
    info["proc"].kill()
    info["proc"].wait()
    dead = info["host"]
    assert {i.pid for i in marked(dead)} >= tree_pids(info)

    dry = magic(ip, "reap --dry-run")
    assert isinstance(dry, hostconsole.ReapReport) and dry.dry_run
    assert {r["name"] for r in dry} == {"plain0", "escape0", "stubborn0"}
    assert {i.pid for i in marked(dead)} >= tree_pids(info), "a dry run touches nothing"

    report = magic(ip, "reap")
    assert {r["name"] for r in report} == {"plain0", "escape0", "stubborn0"}
    assert not marked(dead)
    assert "(no leftovers)" in repr(magic(ip, "reap"))


def test_start_says_what_it_reaped(ip, state_dir, tmp_path, capsys):
    from test_crash import start_owner

    info = start_owner(state_dir, tmp_path)
    os.kill(info["proc"].pid, signal.SIGSTOP)  # a double fault: frozen, the owner cannot replace its watchdog
    os.kill(info["watchdog"], signal.SIGKILL)
    wait_until(lambda: not alive(info["watchdog"]), what="watchdog dead")
    info["proc"].kill()
    info["proc"].wait()
    capsys.readouterr()
    magic(ip, "start")
    said = capsys.readouterr()
    assert f"leftover process(es) of dead host(s) {info['host']}" in said.err  # once, from Host.start
    assert said.out.count("leftover") == 0
    assert not marked(info["host"])


# --- arguments ----------------------------------------------------------------------------


def test_dollar_and_brace_expansion(ip):
    ip.user_ns.update(pname="expanded", n=41)
    r = ip.run_cell("%host run $pname --oneshot -- echo {n + 1} $pname")
    assert r.success, r.error_in_exec
    assert r.result.name == "expanded"
    assert hostconsole.get_host().logs("expanded") == "42 expanded\n"


def test_shell_quoting_env_and_cwd(ip, tmp_path):
    # IPython leaves $ inside single quotes alone: the shell gets it.
    r = ip.run_cell(f"%host run q --oneshot --env A=1 --env 'B=two words' --cwd {tmp_path} -- "
                    "bash -c 'echo \"$A|$B|$(pwd)\"' \"it's\"")
    assert r.success, r.error_in_exec
    assert hostconsole.get_host().logs("q") == f"1|two words|{tmp_path}\n"
    assert hostconsole.get_host().provider("q").argv[-1] == "it's"


def test_cell_magic_runs_the_body_as_a_bash_script(ip, tmp_path):
    r = ip.run_cell("%%host run job --oneshot --env WHO=cell\n"
                    "for i in 1 2; do echo \"$WHO $i\"; done\n"
                    "echo {not expanded} $HOME_NOT_SET\n")
    assert r.success, r.error_in_exec
    assert r.result.state == "exited" and r.result.kind == "oneshot"
    assert hostconsole.get_host().logs("job") == "cell 1\ncell 2\n{not expanded}\n"
    r = ip.run_cell(f"%%host run srv\nsleep 300 & echo $! > {tmp_path}/pid\nwait\n")
    assert r.result.state == "running"
    (gc,) = read_pids(tmp_path / "pid")
    wait_until(lambda: hostconsole._proc.markers(gc).get("HOSTCONSOLE_PROVIDER") == "srv",
               what="the script's child to carry the provider's marker")


def test_a_failing_oneshot_is_one_error_line_after_its_output(ip, capsys):
    r = ip.run_cell("%host run bad --oneshot -- bash -c 'echo first; echo the-reason >&2; exit 3'")
    assert isinstance(r.error_in_exec, UsageError)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[-1].startswith("UsageError: oneshot 'bad'") and "3" in lines[-1]
    assert "the-reason" in err and "Traceback" not in err


# --- bad input: one line, nothing disturbed -----------------------------------------------

BAD_LINES = [
    ("bogus", "unknown subcommand 'bogus'"),
    ("run", "NAME"),
    ("run x", "missing command"),
    ("run x --", "missing command"),
    ("run x sleep 1", "missing '--'"),
    ("run x --bogus -- sleep 1", "unrecognized option --bogus"),
    ("run x --requ sleeper -- sleep 1", "unrecognized option --requ"),
    ("run x -- /nonexistent/exe", "does not exist"),
    ("run x -- no-such-command-hc", "not found"),
    ("run sleeper -- sleep 1", "already exists"),
    ("run x --requires nosuch -- sleep 1", "unknown dependency 'nosuch'"),
    ("run x --requires sleeper,nosuch -- sleep 1", "nosuch"),
    ("run x --ready bogus:1 -- sleep 1", "malformed ready check"),
    ("run x --ready port:99999 -- sleep 1", "1 to 65535"),
    ("run x --ready log:( -- sleep 1", "regular expression"),
    ("run x --ready-timeout -5 -- sleep 1", "non-negative"),
    ("run x --ready-timeout soon -- sleep 1", "not a number"),
    ("run x --stop-signal NOPE -- sleep 1", "unknown signal"),
    ("run x --stop-timeout -1 -- sleep 1", "non-negative"),
    ("run x --stop-timeout abc -- sleep 1", "not a number"),
    ("run x --restart sometimes -- sleep 1", "restart policy"),
    ("run x --env NOEQUALS -- sleep 1", "NAME=VALUE"),
    ("run x --env =v -- sleep 1", "NAME=VALUE"),
    ("run x --env HOSTCONSOLE_HOST=1 -- sleep 1", "HOSTCONSOLE_HOST"),
    ("run x --cwd /nonexistent/dir -- sleep 1", "does not exist"),
    ("run 'my web' -- sleep 1", "invalid provider name"),
    ("run a/b -- sleep 1", "invalid provider name"),
    ("run wéb -- sleep 1", "invalid provider name"),
    ("run .hidden -- sleep 1", "invalid provider name"),
    ("run '' -- sleep 1", "invalid provider name"),
    ("run " + "a" * 65 + " -- sleep 1", "invalid provider name"),
    ("run x -- 'unclosed", "cannot split"),
    ("run web2 --ready port:1 python -m http.server 1", "missing '--' before the command"),
    ("run my web -- sleep 100", "a provider name is one word"),
    ("run x --oneshot --restart always -- true", "restart 'always' would run it for ever"),
    ("run x --env-file /nonexistent/.env -- sleep 1", "env file /nonexistent/.env does not exist"),
    ("run x --ready port:² -- sleep 1", "port must be a number"),
    ("run x --ready 'http://[::1' -- sleep 1", "malformed ready check"),
    ("run sleeper --stop-timeout 1 -- sleep 300", "--stop-timeout"),
    ("run x --replace", "missing command"),
    ("ps --bogus", "unrecognized"),
    ("ps extra", "unrecognized"),
    ("logs", "NAME"),
    ("logs nosuch", "no provider named 'nosuch'"),
    ("logs nosuch --follow", "no provider named 'nosuch'"),
    ("logs sleeper -n -3", "non-negative"),
    ("logs sleeper -n many", "not a whole number"),
    ("stop", "NAME"),
    ("stop nosuch", "no provider named 'nosuch'"),
    ("stop child nosuch", "no provider named 'nosuch'"),
    ("restart nosuch", "no provider named 'nosuch'"),
    ("restart", "NAME"),
    ("purge --timeout -1", "non-negative"),
    ("purge --timeout x", "not a number"),
    ("start --bogus", "unrecognized"),
    ("start --state-dir /elsewhere", "already runs"),
    ("status now", "unrecognized"),
    ("shutdown --now", "unrecognized"),
    ("reap --bogus", "unrecognized"),
    ("help bogus", "no subcommand"),
]

BAD_CELLS = [
    ("ps", "echo hi", "only run takes a cell body"),
    ("run x -- sleep 1", "echo hi", "the cell body is the command"),
    ("run x sleep", "echo hi", "the cell body is the command"),
    ("run", "echo hi", "NAME"),
    ("run x", "  \n", "the cell body (a bash script) is empty"),
    ("run x --bogus", "echo hi", "unrecognized option"),
    ("run sleeper", "echo hi", "already exists"),
    ("", "echo hi", "only run"),
]


@pytest.fixture(scope="class")
def busy(shell, tmp_path_factory):
    """A host with running providers, shared by TestBadInput: each bad input must leave them be."""
    state = tmp_path_factory.mktemp("bad-input-state")
    shell.run_line_magic("load_ext", "hostconsole")
    port = free_port()
    try:
        magic(shell, f"start --state-dir {state}")
        magic(shell, "run sleeper -- sleep 300")
        magic(shell, "run child --requires sleeper -- sleep 300")
        magic(shell, f"run web --ready port:{port} -- {PY} -m http.server {port} --bind 127.0.0.1")
        yield shell, port
    finally:
        host_id = hostconsole.get_host().host_id
        shell.run_line_magic("unload_ext", "hostconsole")
        wait_until(lambda: not marked(host_id), timeout=15, what="the bad-input host to end")


class TestBadInput:
    """Bad input: one UsageError line, nothing running disturbed, nothing half started."""

    @staticmethod
    def snapshot():
        table = hostconsole.get_host().ps(all=True)
        return {r["name"]: (r["state"], r["pid"]) for r in table.records}

    def check_refused(self, shell, capsys, run, words):
        before = self.snapshot()
        assert all(state == "running" for state, _ in before.values())
        capsys.readouterr()
        result = run()
        err = capsys.readouterr().err
        assert isinstance(result.error_in_exec, UsageError), (result.error_in_exec, err)
        assert type(result.error_in_exec) is UsageError  # IPython shows only this exact type tracebackless
        message = str(result.error_in_exec)
        assert "\n" not in message and words in message, message
        assert err == f"UsageError: {message}\n", "one line, no traceback"
        assert self.snapshot() == before, "nothing running was disturbed, nothing half started"
        assert hostconsole.get_host().started

    @pytest.mark.parametrize("line, words", BAD_LINES, ids=[b[0][:40] for b in BAD_LINES])
    def test_bad_line(self, busy, capsys, line, words):
        shell, _ = busy
        self.check_refused(shell, capsys, lambda: shell.run_cell(f"%host {line}"), words)

    @pytest.mark.parametrize("line, body, words", BAD_CELLS, ids=[b[0] or "empty" for b in BAD_CELLS])
    def test_bad_cell(self, busy, capsys, line, body, words):
        shell, _ = busy
        self.check_refused(shell, capsys, lambda: shell.run_cell(f"%%host {line}\n{body}"), words)

    def test_a_taken_port_names_its_holder(self, busy, capsys):
        shell, port = busy
        self.check_refused(shell, capsys,
                           lambda: shell.run_cell(f"%host run x --ready port:{port} -- sleep 300"),
                           f"port {port} is already taken by provider 'web' of this host")

    def test_the_host_is_still_usable(self, busy):
        shell, _ = busy
        p = magic(shell, "run last --oneshot -- true")
        assert p.state == "exited"


# --- Ctrl-C: only the waiting ---------------------------------------------------------------


def test_ctrl_c_during_run_interrupts_only_the_waiting(ip, capsys):
    magic(ip, "run bystander -- sleep 300")
    by = hostconsole.get_host().provider("bystander").pid
    timer = sigint_after(1.0)
    try:
        with pytest.raises(KeyboardInterrupt, match="interrupted the waiting only"):
            magic(ip, "run slow --oneshot --ready-timeout 20 -- sleep 30")
    finally:
        timer.cancel()
    slow = hostconsole.get_host().provider("slow")
    assert slow.state == "starting" and alive(slow.pid), "the provider keeps running"
    assert alive(by)


def test_ctrl_c_during_purge_leaves_no_purge_half_done(ip):
    magic(ip, "run stubborn --stop-timeout 60 -- bash -c \"trap '' TERM; echo ready; sleep 300 & wait\"")
    magic(ip, "run plain -- sleep 300")
    host = hostconsole.get_host()
    wait_until(lambda: "ready" in host.logs("stubborn"), what="the trap to be set")
    timer = sigint_after(0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            magic(ip, "purge")
    finally:
        timer.cancel()
    # Only the waiting ended: the purge goes on (the stubborn one has 60 s before its SIGKILL).
    assert host.provider("stubborn").state == "stopping" and host.provider("plain").state == "stopped"
    report = host.purge(timeout=0.2)  # joins the purge under way (and caps it), never a second one
    assert report["stubborn"]["outcome"] == "killed"
    states = {r["name"]: r["state"] for r in host.ps(all=True).records}
    assert states == {"stubborn": "stopped", "plain": "stopped"}
    assert not providers_of(host.host_id)


def test_ctrl_c_ends_logs_follow_and_nothing_else(ip, capsys):
    p = magic(ip, "run ticker -- bash -c 'i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done'")
    wait_until(lambda: "tick 3" in hostconsole.get_host().logs("ticker"), what="some ticks")
    timer = sigint_after(1.0)
    try:
        assert magic(ip, "logs ticker -n 2 --follow") is None  # the interrupt ends it quietly
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped %host logs --follow")
    finally:
        timer.cancel()
    out = capsys.readouterr().out
    ticks = [int(l.split()[1]) for l in out.splitlines()]
    assert len(ticks) >= 5 and ticks == sorted(set(ticks)), out
    assert p.state == "running" and alive(p.pid)


# --- the extension's lifecycle ------------------------------------------------------------


def test_unload_shuts_down_and_removes_magic_and_hooks(shell, state_dir):
    shell.run_line_magic("load_ext", "hostconsole")
    try:
        magic(shell, "run a -- sleep 300")
        host_id = hostconsole.get_host().host_id
    finally:
        shell.run_line_magic("unload_ext", "hostconsole")
    assert not marked(host_id), "unload returns after the shutdown"
    assert shell.find_line_magic("host") is None and shell.find_cell_magic("host") is None
    assert not [h for h in shell._trait_notifiers.get("exit_now", {}).get("change", [])
                if getattr(h, "__func__", None) is hc_ipython._Hooks._on_exit_now]


def test_reload_ext_leaves_nothing_and_a_new_host_works(ip):
    magic(ip, "run a -- sleep 300")
    magic(ip, "run b --requires a -- bash -c 'sleep 300 & wait'")
    old = hostconsole.get_host().host_id
    wait_until(lambda: len(marked(old)) == 4, what="a, b and b's child, and the watchdog")
    ip.run_line_magic("reload_ext", "hostconsole")
    assert not marked(old), "reload = unload (shutdown) + load"
    p = magic(ip, "run c -- sleep 300")
    new = hostconsole.get_host().host_id
    assert new != old and p.state == "running" and providers_of(new) == {"c"}
    assert magic(ip, "status")["hooks"] == ["atexit", "exit_now"]


def test_loading_twice_makes_one_host_and_one_set_of_hooks(ip, state_dir):
    hostconsole.load_ipython_extension(ip)
    ip.run_line_magic("load_ext", "hostconsole")
    hostconsole.load_ipython_extension(ip)
    ours = [h for h in ip._trait_notifiers["exit_now"]["change"]
            if getattr(h, "__func__", None) is hc_ipython._Hooks._on_exit_now]
    assert len(ours) == 1
    magic(ip, "run a -- sleep 300")
    magic(ip, "start")
    ids = {m["HOSTCONSOLE_HOST"] for m in marked().values()
           if m.get("HOSTCONSOLE_STATE_DIR", "").startswith(str(state_dir))}
    assert ids == {hostconsole.get_host().host_id}
    wait_until(lambda: len(marked(hostconsole.get_host().host_id)) == 2, what="one provider and one watchdog")


def test_exit_now_runs_the_shutdown(ip):
    magic(ip, "run a -- sleep 300")
    host = hostconsole.get_host()
    old = host.host_id
    try:
        ip.exit_now = True  # what `exit` in a kernel cell does
        assert not host.started and not marked(old)
    finally:
        ip.exit_now = False


# --- re-running cells ---------------------------------------------------------------------


def test_a_cell_run_again_changes_nothing_and_says_so(ip, capsys):
    first = magic(ip, "run web --stop-timeout 2 -- sleep 300")
    capsys.readouterr()
    again = magic(ip, "run web --stop-timeout 2 -- sleep 300")
    assert again is first and again.pid == first.pid
    assert capsys.readouterr().out == "web: already running with this spec; nothing changed\n"
    r = ip.run_cell("%%host run job --oneshot\necho once\n")
    assert r.success and ip.run_cell("%%host run job --oneshot\necho once\n").success
    # A finished oneshot is not active: a re-run runs it again (with a header between runs).
    assert hostconsole.get_host().logs("job").count("once") == 2


def test_replace_through_the_magic(ip):
    old = magic(ip, "run web -- sleep 300")
    new = magic(ip, "run web --replace -- sleep 301")
    assert new is not old and new.state == "running" and not alive(old.main)


def test_ctrl_c_while_waiting_for_requirements_keeps_the_provider(ip, tmp_path):
    magic(ip, f"run db --no-wait --ready 'cmd:test -f {tmp_path}/ready' -- sleep 300")
    timer = sigint_after(0.5)
    try:
        with pytest.raises(KeyboardInterrupt, match="interrupted the waiting only"):
            magic(ip, "run api --requires db -- sleep 300")
    finally:
        timer.cancel()
    host = hostconsole.get_host()
    assert host.provider("api").state == "starting"
    (tmp_path / "ready").touch()
    wait_until(lambda: host.provider("api").state == "running", what="api to start after db")
