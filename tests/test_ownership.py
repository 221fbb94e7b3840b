"""Ownership nothing escapes: what belongs to a provider, on every mechanism this machine
offers (a cgroup v1 freezer cell, a cgroup v2 cell, or no fence: markers, ancestry,
recorded identities and the log a process writes to), and stopped gracefully first."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import hostconsole
from hostconsole import _fence, _proc, registry

from helpers import PidsCgroup, alive, marked, pids_cgroup_usable, read_pids, wait_until
from remote_host import RemoteHost

PY = sys.executable
FENCES = ["cgroup1", "cgroup2", "none"]


@pytest.fixture(params=FENCES)
def fence(request, monkeypatch):
    """Each test below runs once per mechanism this machine offers (the watchdog inherits
    HOSTCONSOLE_FENCE and uses exactly that one)."""
    kind = request.param
    if kind != "none" and _fence.detect(kind).kind != kind:
        pytest.skip(f"no {kind} fence here (needs a cgroup hierarchy this user may write)")
    monkeypatch.setenv("HOSTCONSOLE_FENCE", kind)
    return kind


@pytest.fixture
def fhost(fence, state_dir):
    h = hostconsole.Host(state_dir).start()
    assert h.status()["fence"] == fence
    host_id = h.host_id
    yield h
    h.shutdown()
    wait_until(lambda: not marked(host_id), timeout=15, what=f"host {host_id}'s processes to end")


def sneaky_daemon(pidfile):
    # A daemon that clears its environment (no marker), leaves the session and is orphaned
    # at once (no parent in the tree): the hostile provider.
    return (f"(env -i setsid bash -c 'echo $$ > {pidfile}; while :; do sleep 0.2; done' &); "
            f"exec sleep 1000")


def recorded(state_dir, host_id, name):
    """The member identities the registry entry records for provider ``name`` (none yet: ())."""
    rec = registry.read(state_dir / "hosts" / host_id)
    p = rec.providers.get(name) if rec is not None else None
    return p.members if p is not None else ()


def daemon_pid(pidfile):
    (pid,) = read_pids(pidfile)
    wait_until(lambda: _proc.markers(pid) == {} and alive(pid), what="the env-cleared daemon")
    return pid


# --- what belongs to a provider ---------------------------------------------------------------


def test_an_env_cleared_double_forked_daemon_is_stopped_with_its_provider(fhost, tmp_path):
    pidfile = tmp_path / "daemon"
    fhost.run("sneaky", sneaky_daemon(pidfile), shell=True)
    daemon = daemon_pid(pidfile)
    wait_until(lambda: fhost.ps()["sneaky"]["nprocs"] >= 2, what="ps to count the daemon in the tree")
    report = fhost.stop("sneaky")
    assert report["sneaky"]["outcome"] == "exited"
    wait_until(lambda: not alive(daemon), timeout=5, what="the daemon to be stopped with its provider")


def test_restart_does_not_pile_up_escaped_daemons(fhost, tmp_path):
    pidfile = tmp_path / "daemon"
    fhost.run("sneaky", sneaky_daemon(pidfile), shell=True)
    first = daemon_pid(pidfile)
    pidfile.unlink()
    fhost.restart("sneaky")
    second = daemon_pid(pidfile)
    assert second != first and not alive(first), "the old copy went with the old run"
    fhost.stop("sneaky")
    wait_until(lambda: not alive(second), timeout=5, what="the new copy to go too")


def test_after_a_watchdog_replacement_the_daemon_is_still_stopped(fence, state_dir, tmp_path):
    """Regression: a replacement watchdog adopted trees by marker only, so an env-cleared
    daemon survived purge, shutdown, an owner SIGKILL and reap."""
    rh = RemoteHost(state_dir)
    try:
        pidfile = tmp_path / "daemon"
        rh.call("run", "sneaky", sneaky_daemon(pidfile), shell=True)
        daemon = daemon_pid(pidfile)
        wait_until(lambda: {r["name"]: r["nprocs"] for r in rh.call("ps")}["sneaky"] >= 2,
                   what="the daemon recorded as a member")
        wait_until(lambda: any(m.pid == daemon for m in recorded(state_dir, rh.host_id, "sneaky")),
                   what="its identity in the registry")
        os.kill(rh.watchdog, signal.SIGKILL)
        wait_until(lambda: rh.call("status")["watchdog_alive"] and rh.call("status")["watchdog_pid"] != rh.watchdog,
                   what="a new watchdog")
        rh.kill()  # the owner dies: the new watchdog must stop everything, the daemon included
        wait_until(lambda: not alive(daemon), timeout=10, what="the adopted daemon to be stopped")
        wait_until(lambda: not marked(rh.host_id), timeout=10, what="everything of the host to be gone")
    finally:
        if rh.proc.is_alive():
            rh.kill()


def _give_up_on_the_watchdog(host, capsys):
    """Kill the host's watchdog once more than the host replaces it: from then on the host
    stops its providers itself."""
    from hostconsole._session import REARM_LIMIT

    for _ in range(REARM_LIMIT):
        old = host.status()["watchdog_pid"]
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: host.status()["watchdog_alive"] and host.status()["watchdog_pid"] != old,
                   what="a new watchdog")
    os.kill(host.status()["watchdog_pid"], signal.SIGKILL)
    said: list = []
    wait_until(lambda: said.append(capsys.readouterr().err) or "not restarting it again" in "".join(said),
               what="the host to give up on its watchdog")
    assert not host.status()["watchdog_alive"]


@pytest.mark.parametrize("how", ["stop", "shutdown"])
def test_a_host_without_its_watchdog_still_stops_the_env_cleared_daemon(fhost, tmp_path, capsys, how):
    """Regression: once the host had given up replacing a watchdog that kept dying, its
    own stop path found members by marker and ancestry only, without the provider's cell
    and recorded members: the env-cleared daemon outlived ``stop`` and even ``shutdown``
    (its cell, not empty, then stayed behind too), and neither ``ps`` counted it."""
    pidfile = tmp_path / "daemon"
    fhost.run("sneaky", sneaky_daemon(pidfile), shell=True)
    daemon = daemon_pid(pidfile)
    wait_until(lambda: any(m.pid == daemon for m in fhost.provider("sneaky").members),
               what="the daemon recorded as a member")
    _give_up_on_the_watchdog(fhost, capsys)
    assert alive(daemon)
    assert fhost.ps()["sneaky"]["nprocs"] >= 2, "ps counts the daemon without the watchdog too"
    cli = subprocess.run([os.path.join(os.path.dirname(PY), "hostconsole"), "ps", "--json"], capture_output=True,
                         text=True, timeout=60)
    seen = {p["name"]: p for h in json.loads(cli.stdout) if h["host"] == fhost.host_id for p in h["providers"]}
    assert seen["sneaky"]["nprocs"] >= 2, "and so does hostconsole ps"
    if how == "stop":
        report = fhost.stop("sneaky")
        assert report["sneaky"]["outcome"] == "exited", report.records
    else:
        fence, host_id = fhost.status()["fence"], fhost.host_id
        fhost.shutdown()
        assert not _fence.cells_of(fence, host_id)
    wait_until(lambda: not alive(daemon), timeout=5, what="the daemon to be stopped with its provider")


def test_reap_finds_an_unmarked_member_by_its_recorded_identity(fence, state_dir, tmp_path):
    """The double fault (watchdog, then owner, SIGKILLed): reap finds the env-cleared daemon
    by the identity the registry recorded (or by its cell), not by a marker it no longer has."""
    rh = RemoteHost(state_dir)
    try:
        pidfile = tmp_path / "daemon"
        rh.call("run", "sneaky", sneaky_daemon(pidfile), shell=True)
        daemon = daemon_pid(pidfile)
        entry = state_dir / "hosts" / rh.host_id
        wait_until(lambda: any(m.pid == daemon for m in recorded(state_dir, rh.host_id, "sneaky")),
                   what="its identity in the registry")
        os.kill(rh.pid, signal.SIGSTOP)  # frozen: the owner cannot replace its watchdog
        os.kill(rh.watchdog, signal.SIGKILL)
        wait_until(lambda: not alive(rh.watchdog), what="the watchdog gone")
        rh.kill()
        assert alive(daemon) and entry.exists(), "nothing has stopped it yet, and its record is kept"
        report = hostconsole.reap(state_dir=state_dir)
        assert "sneaky" in [r["name"] for r in report]
        wait_until(lambda: not alive(daemon), timeout=10, what="reap to stop the unmarked daemon")
        assert rh.host_id in report.removed and not entry.exists()
    finally:
        if rh.proc.is_alive():
            rh.kill()


def test_a_registry_entry_is_kept_while_a_recorded_member_lives(state_dir, tmp_path):
    """A dead host's entry is the only record of what it left: reap never removes it while a
    recorded member is alive (here: one it may not stop, as another user would be)."""
    keeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        ident = _proc.identity(keeper.pid)
        dead = _proc.identity(os.getpid())
        dead = _proc.ProcId(dead.pid, dead.start - 1)  # an owner that is gone
        d = state_dir / "hosts" / "cafe0001"
        d.mkdir(parents=True, mode=0o700)
        registry.write_atomic(d / "host.json", {
            "version": 2, "host": "cafe0001", "owner": {"pid": dead.pid, "start": dead.start},
            "providers": {"p": {"state": "running", "main": {"pid": ident.pid, "start": ident.start},
                                "members": [[ident.pid, ident.start]]}}})
        report = hostconsole.reap(dry_run=True, state_dir=state_dir)
        assert [r["name"] for r in report] == ["p"] and report.found == 1
        assert "cafe0001" not in report.removed and d.exists() and keeper.poll() is None
    finally:
        keeper.kill()
        keeper.wait()


# --- forks faster than the stop ----------------------------------------------------------------

# Forks as fast as it can, and ignores the stop signal: only SIGKILL ends it.
FORK_BOMB = [PY, "-c", "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n"
                       "    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.001)\n"]


@pytest.mark.skipif(not pids_cgroup_usable(),
                    reason="needs a writable cgroup v1 pids controller (root) to bound the fork bomb")
def test_a_fork_bomb_is_stopped_and_the_report_never_hides_a_survivor(fence, state_dir):
    """Regression: a provider forking as fast as it could outlived purge (~25 s, hundreds
    alive) and the report said 'killed, survivors: []'.  Bounded here by a pids cgroup."""
    rh = None
    with PidsCgroup() as cg:
        try:
            rh = RemoteHost(state_dir)
            cg.join(rh.pid, rh.watchdog)
            cg.limit(cg.current() + 400)
            rh.call("run", "bomb", FORK_BOMB, stop_timeout=0.5)
            wait_until(lambda: cg.current() > 300, timeout=20, what="the bomb to fill its room")
            t0 = time.monotonic()
            report = rh.call("purge", timeout=60)
            took = time.monotonic() - t0
            bomb = [r for r in report if r["name"] == "bomb"][0]
            left = [i for i, m in marked(rh.host_id).items() if m.get("HOSTCONSOLE_PROVIDER") == "bomb"]
            print(f"\nfork bomb ({fence}): purge {took:.2f} s, outcome {bomb['outcome']}, survivors {bomb['survivors']}, "
                  f"marked left {len(left)}")
            assert bomb["outcome"] in ("killed", "survived"), bomb
            assert bomb["outcome"] == "killed" or bomb["survivors"], "never 'killed' with survivors unnamed"
            assert bomb["outcome"] == "killed" and not left  # (its time is a figure, printed above)
            rh.close()
            rh = None
        finally:
            if rh is not None:
                rh.kill()


# --- a hostile state directory -----------------------------------------------------------------


def test_a_registry_entry_that_is_a_fifo_hangs_nothing(state_dir):
    d = state_dir / "hosts" / "f1f0f1f0"
    d.mkdir(parents=True, mode=0o700)
    os.mkfifo(d / "host.json")
    script = shutil.which("hostconsole", path=os.path.dirname(PY))
    env = {**os.environ, "HOSTCONSOLE_STATE_DIR": str(state_dir)}
    for argv in ([script, "ps", "--json"], [script, "reap"]):
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "not a regular file" in r.stderr
    with pytest.warns(RuntimeWarning, match="not a regular file"):
        with hostconsole.Host(state_dir) as h:
            assert h.started
    assert d.exists()  # never deleted on a guess


def test_a_deeply_nested_registry_entry_is_skipped_with_a_warning(state_dir):
    d = state_dir / "hosts" / "deadc0de"
    d.mkdir(parents=True, mode=0o700)
    (d / "host.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.warns(RuntimeWarning, match="nested too deeply"):
        assert hostconsole.reap(state_dir=state_dir).found == 0


@pytest.mark.parametrize("bad", ["../etc", "x/y", "", "-rf", "a" * 65])
def test_hostconsole_stop_refuses_a_malformed_host_id(state_dir, bad):
    script = shutil.which("hostconsole", path=os.path.dirname(PY))
    r = subprocess.run([script, "stop", bad], capture_output=True, text=True,
                       env={**os.environ, "HOSTCONSOLE_STATE_DIR": str(state_dir)}, timeout=30)
    assert r.returncode != 0 and r.stderr.count("\n") == 1
    assert "host id" in r.stderr or (bad.startswith("-") and "unrecognized" in r.stderr)


def test_reap_checks_the_state_dir_as_start_does(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(hostconsole.HostError, match="writable by others"):
        hostconsole.reap(state_dir=open_dir)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(hostconsole.HostError, match="symbolic link"):
        hostconsole.reap(state_dir=link)
    with pytest.raises(hostconsole.HostError, match="NUL"):
        hostconsole.reap(state_dir="a\0b")


# --- logs outlive the host ---------------------------------------------------------------------


def test_the_previous_hosts_logs_are_kept_and_readable(state_dir):
    with hostconsole.Host(state_dir) as h:
        h.log_key = "kernel-test"  # (the IPython layer sets it to the kernel's id)
    h = hostconsole.Host(state_dir)
    h.log_key = "kernel-test"
    with h:
        h.run("db", "echo 'checkpoint complete'; echo 'database system is shut down'", shell=True, oneshot=True)
    again = hostconsole.Host(state_dir)
    again.log_key = "kernel-test"
    with again:
        assert "database system is shut down" in again.logs("db", previous=True)
        with pytest.raises(hostconsole.UnknownProvider, match="no previous logs of 'web'"):
            again.logs("web", previous=True)
    other = hostconsole.Host(state_dir)  # another owner has no such previous logs
    with pytest.raises(hostconsole.UnknownProvider):
        other.logs("db", previous=True)
    script = shutil.which("hostconsole", path=os.path.dirname(PY))
    r = subprocess.run([script, "logs", "db", "--previous", "--key", "kernel-test"], capture_output=True, text=True,
                       env={**os.environ, "HOSTCONSOLE_STATE_DIR": str(state_dir)}, timeout=30)
    assert r.returncode == 0 and "database system is shut down" in r.stdout


def test_status_says_which_mechanism_is_in_force(fhost, fence):
    status = fhost.status()
    assert status["fence"] == fence
    rec = json.loads((fhost.host_dir / "host.json").read_text())
    assert rec["fence"] == fence
