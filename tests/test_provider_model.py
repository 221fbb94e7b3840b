"""The provider model with real processes: re-running a spec, --replace, --env-file, the
state machine's regressions, one stop operation, and one observation path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest

import hostconsole
from hostconsole import _proc
from hostconsole.errors import DuplicateProvider, InvalidSpec, ProviderFailed

from helpers import alive, marked, wait_until

PY = sys.executable


def providers_of(host_id):
    return {m.get("HOSTCONSOLE_PROVIDER") for m in marked(host_id).values()} - {None}


def start_thread_alive(name):
    return any(t.name == name and t.is_alive() for t in threading.enumerate())


# --- re-running a spec ----------------------------------------------------------------------


def test_running_the_same_spec_again_returns_the_same_handle(host, tmp_path):
    p = host.run("web", ["sleep", "300"], stop_timeout=2, env={"A": "1"})
    q = host.run("web", ["sleep", "300"], stop_timeout=2, env={"A": "1"})
    assert q is p and q.pid == p.pid and q.state == "running"
    assert providers_of(host.host_id) == {"web"} and len(marked(host.host_id)) == 2  # it, and the watchdog


def test_a_different_spec_is_refused_naming_what_differs(host):
    p = host.run("web", ["sleep", "300"])
    with pytest.raises(DuplicateProvider) as info:
        host.run("web", ["sleep", "301"], ready="none", stop_timeout=1, env={"A": "1"})
    msg = str(info.value)
    assert "already exists (running)" in msg and "command" in msg and "--stop-timeout" in msg and "--env" in msg
    assert "--replace" in msg and "\n" not in msg
    assert host.provider("web") is p and alive(p.main)


def test_replace_stops_the_old_and_starts_the_new_leaving_dependents_alone(host, tmp_path):
    db = host.run("db", ["sleep", "300"])
    api = host.run("api", ["sleep", "300"], requires="db")
    old_db, old_api = db.main, api.main
    new = host.run("db", ["sleep", "301"], replace=True)
    assert new is not db and new.state == "running" and new.main != old_db
    assert db.state == "stopped" and not alive(old_db)
    assert host.provider("api") is api and api.main == old_api and alive(old_api)
    assert host.provider("db").argv == ["sleep", "301"]


def test_a_stopped_or_failed_name_is_started_again_with_a_new_spec(host):
    host.run("svc", ["sleep", "300"])
    host.stop("svc")
    assert host.run("svc", ["sleep", "301"]).argv == ["sleep", "301"]
    with pytest.raises(ProviderFailed):
        host.run("bad", "exit 3", shell=True, oneshot=True)
    assert host.run("bad", "exit 0", shell=True, oneshot=True).state == "exited"


def test_env_file_reaches_the_provider_and_env_wins(host, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# settings\nexport A=1\nB='two words'\nC=\"line\\nbreak\"  # a comment\nD=plain # note\n")
    host.run("show", "printf '%s|%s|%s|%s\\n' \"$A\" \"$B\" \"$C\" \"$D\"", shell=True, oneshot=True,
             env_file=str(env_file), env={"D": "from --env"})
    assert host.logs("show") == "1|two words|line\nbreak|from --env\n"
    spec = host.provider("show").spec
    assert spec.env_file == str(env_file) and spec.env_dict["A"] == "1"


def test_an_edited_env_file_makes_a_different_spec(host, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=1\n")
    p = host.run("svc", ["sleep", "300"], env_file=str(env_file))
    assert host.run("svc", ["sleep", "300"], env_file=str(env_file)) is p
    env_file.write_text("PORT=2\n")
    with pytest.raises(DuplicateProvider, match="--env"):
        host.run("svc", ["sleep", "300"], env_file=str(env_file))
    q = host.run("svc", ["sleep", "300"], env_file=str(env_file), replace=True)
    assert q.env == {"PORT": "2"} and not alive(p.main)


def test_a_missing_or_malformed_env_file_is_one_line_and_starts_nothing(host, tmp_path):
    with pytest.raises(InvalidSpec, match="does not exist"):
        host.run("x", ["sleep", "300"], env_file=str(tmp_path / "missing.env"))
    bad = tmp_path / "bad.env"
    bad.write_text("GOOD=1\nthis is not a setting\n")
    with pytest.raises(InvalidSpec, match="line 2: expected NAME=VALUE"):
        host.run("x", ["sleep", "300"], env_file=str(bad))
    assert "x" not in host and not providers_of(host.host_id)


# --- regressions of the state machine --------------------------------------------------------


def test_a_no_wait_dependent_stopped_while_it_waits_stays_stopped_and_is_reported(host, tmp_path):
    """Regression: a --no-wait dependent the user stopped while it waited for its
    requirements later turned failed, and stop returned an empty report for it."""
    flag = tmp_path / "db-ready"
    db = host.run("db", ["sleep", "300"], ready=f"cmd:test -f {flag}", wait=False)
    api = host.run("api", ["sleep", "300"], requires="db", wait=False)
    assert api.state == "starting" and api.pid is None
    report = host.stop("api")
    assert [r["name"] for r in report] == ["api"] and report["api"]["outcome"] == "gone"
    assert api.state == "stopped"
    flag.touch()
    wait_until(lambda: db.state == "running", what="db to become ready")
    wait_until(lambda: not start_thread_alive("hostconsole-start-api"), what="api's start pipeline to end")
    assert api.state == "stopped" and api.pid is None and api.error is None
    assert providers_of(host.host_id) == {"db"}
    assert host.ps(all=True)["api"]["state"] == "stopped"


def test_interrupting_a_wait_for_requirements_leaves_the_provider_starting(host, tmp_path):
    """Regression: Ctrl-C while `run` waited for a requirement cancelled the provider
    silently (it vanished from ps --all and never started)."""
    flag = tmp_path / "db-ready"
    host.run("db", ["sleep", "300"], ready=f"cmd:test -f {flag}", wait=False)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            host.run("api", ["sleep", "300"], requires="db")
    finally:
        timer.cancel()
    api = host.provider("api")
    assert api.state == "starting" and host.ps(all=True)["api"]["state"] == "starting"
    flag.touch()
    wait_until(lambda: api.state == "running", what="api to start once db is ready")
    assert "api" in providers_of(host.host_id)


def test_a_oneshot_cannot_restart_always(host):
    with pytest.raises(InvalidSpec, match="oneshot .* restart 'always' would run it for ever"):
        host.run("job", ["true"], oneshot=True, restart="always")
    assert "job" not in host
    # on-failure is defined for a oneshot: retried until it exits 0.
    host.restart_backoff = 0.01
    job = host.run("job", "test -f tried && exit 0; touch tried; exit 1", shell=True, oneshot=True,
                   restart="on-failure", cwd=str(host.host_dir))
    assert job.state == "exited" and job.restarts == 1


def test_a_run_again_separates_its_log_and_quotes_only_its_own_output(host):
    """Regression: a name run again appended to its previous run's log, and a readiness
    error quoted the previous run's failure as if it were this one's."""
    with pytest.raises(ProviderFailed, match="first-run-failure"):
        host.run("svc", "echo first-run-failure; exit 1", shell=True, oneshot=True)
    with pytest.raises(ProviderFailed) as info:
        host.run("svc", "echo second-run; exit 2", shell=True, oneshot=True)
    msg = str(info.value)
    assert "second-run" in msg and "first-run-failure" not in msg and "exit code 2" in msg
    lines = host.logs("svc").splitlines()
    assert lines[0] == "first-run-failure" and lines[2] == "second-run"
    assert lines[1].startswith("--- hostconsole: 'svc' run 2 started ") and lines[1].endswith(" UTC ---")


def test_every_restart_of_a_crashing_provider_is_a_new_run_in_its_log(host):
    host.restart_backoff = 0.01
    p = host.run("crashy", "echo up; exit 1", shell=True, restart="on-failure")
    wait_until(lambda: p.restarts >= 2, what="two restarts")
    wait_until(lambda: host.logs("crashy").count("up\n") >= 3, what="the third run's output")
    log = host.logs("crashy")
    assert "run 2 started" in log and "run 3 started" in log
    assert log.index("run 2 started") < log.index("run 3 started")


def test_illegal_moves_raise_in_tests():
    from hostconsole.state import IllegalMove, State, check_move

    with pytest.raises(IllegalMove, match="cannot move from stopped to running"):
        check_move("x", State.STOPPED, State.RUNNING)


# --- one stop operation -----------------------------------------------------------------------


STUBBORN = "trap '' TERM; echo ready; sleep 300 & wait"


def test_a_tighter_request_tightens_a_purge_under_way(host):
    host.run("slow", STUBBORN, shell=True, stop_timeout=60)
    wait_until(lambda: "ready" in host.logs("slow"), what="the trap to be set")
    first = []
    t = threading.Thread(target=lambda: first.append(host.purge()))
    t.start()
    wait_until(lambda: host.provider("slow").state == "stopping", what="the purge to begin")
    report = host.purge(timeout=0.5)  # joins the purge under way, and caps it
    t.join(30)
    assert first and first[0] is report, "one purge, shared"
    assert report["slow"]["outcome"] == "killed" and report["slow"]["seconds"] < 10  # not 60 s


def test_shutdown_with_a_timeout_caps_a_purge_under_way(state_dir):
    h = hostconsole.Host(state_dir).start()
    h.run("slow", STUBBORN, shell=True, stop_timeout=60)
    wait_until(lambda: "ready" in h.logs("slow"), what="the trap to be set")
    t = threading.Thread(target=h.purge)
    t.start()
    wait_until(lambda: h.provider("slow").state == "stopping", what="the purge to begin")
    report = h.shutdown(timeout=0.5)
    t.join(30)
    assert report["slow"]["outcome"] == "killed" and report["slow"]["seconds"] < 10
    assert not h.started


def test_a_purge_cancels_providers_still_waiting_for_requirements(host, tmp_path):
    host.run("db", ["sleep", "300"], ready=f"cmd:test -f {tmp_path}/never", wait=False)
    api = host.run("api", ["sleep", "300"], requires="db", wait=False)
    report = host.purge()
    assert {r["name"] for r in report} == {"db", "api"}
    assert api.state == "stopped" and host.provider("db").state == "stopped"


# --- one observation path ---------------------------------------------------------------------

BUSY = [PY, "-c", "while True: pass"]


def cpu_seconds(pid):
    return _proc.stat(pid).cpu


def test_cpu_percent_is_true_on_the_first_look(host, state_dir):
    """Regression: ps read 0.0 the first time it saw a process (and always in the CLI)."""
    p = host.run("busy", BUSY)
    wait_until(lambda: cpu_seconds(p.pid) > 0.3, what="the provider to burn some CPU")
    assert host.ps()["busy"]["cpu_percent"] > 20
    r = subprocess.run([shutil.which("hostconsole", path=os.path.dirname(PY)), "ps", "--json"],
                       capture_output=True, text=True, env={**os.environ, "HOSTCONSOLE_STATE_DIR": str(state_dir)})
    rec = {x["name"]: x for x in json.loads(r.stdout)[0]["providers"]}["busy"]
    assert rec["cpu_percent"] > 20


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_host_and_cli_count_a_tree_with_another_users_process_alike(host, state_dir):
    host.run("mixed", "setpriv --reuid=nobody --regid=nogroup --clear-groups sleep 300 & sleep 300 & wait",
             shell=True)
    wait_until(lambda: host.ps()["mixed"]["nprocs"] == 3, what="3 processes, one of them nobody's")
    r = subprocess.run([shutil.which("hostconsole", path=os.path.dirname(PY)), "ps", "--json"],
                       capture_output=True, text=True, env={**os.environ, "HOSTCONSOLE_STATE_DIR": str(state_dir)})
    rec = {x["name"]: x for x in json.loads(r.stdout)[0]["providers"]}["mixed"]
    assert rec["nprocs"] == 3 and rec["state"] == "running"


def test_ps_records_of_host_and_cli_have_the_same_keys(host, state_dir):
    host.run("a", ["sleep", "300"])
    r = subprocess.run([shutil.which("hostconsole", path=os.path.dirname(PY)), "ps", "--json"],
                       capture_output=True, text=True, env={**os.environ, "HOSTCONSOLE_STATE_DIR": str(state_dir)})
    cli = json.loads(r.stdout)[0]["providers"][0]
    mine = host.ps()["a"]
    assert set(cli) == set(mine)
    for key in ("name", "kind", "state", "pid", "restarts", "exit_code", "signal", "nprocs", "ports", "command"):
        assert cli[key] == mine[key], key
