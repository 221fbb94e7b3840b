"""The hostconsole command line, run as a real console script against real hosts."""

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

from helpers import Owner, alive, marked, popen_marked, wait_until

SCRIPT = shutil.which("hostconsole", path=os.path.dirname(sys.executable)) or "hostconsole"


def cli(*args, state_dir=None, timeout=60):
    env = dict(os.environ)
    if state_dir is not None:
        env["HOSTCONSOLE_STATE_DIR"] = str(state_dir)
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def ps_json(state_dir):
    r = cli("ps", "--json", state_dir=state_dir)
    assert r.returncode == 0, r.stderr
    return {h["host"]: h for h in json.loads(r.stdout)}


def test_ps_json_shows_live_hosts_and_reflects_changes_quickly(host, state_dir):
    host.run("web", [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"])
    host.run("worker", ["sleep", "300"], requires="web")
    wait_until(lambda: host.ps()["web"]["ports"], what="web listening")
    h = ps_json(state_dir)[host.host_id]
    assert h["alive"] is True and h["pid"] == os.getpid() and h["state_dir"] == str(state_dir)
    recs = {r["name"]: r for r in h["providers"]}
    assert recs["web"]["state"] == "running" and recs["web"]["pid"] == host.provider("web").pid
    assert recs["web"]["ports"] and recs["web"]["nprocs"] == 1 and recs["web"]["rss"] > 0
    for key in ("name", "kind", "state", "pid", "uptime", "restarts", "exit_code", "signal",
                "cpu_percent", "rss", "nprocs", "ports"):
        assert key in recs["worker"]
    host.stop("worker")
    t0 = time.monotonic()
    wait_until(lambda: {r["name"]: r for r in ps_json(state_dir)[host.host_id]["providers"]}["worker"]["state"]
               == "stopped", timeout=5, what="ps to show the stop")
    assert time.monotonic() - t0 < 2.5  # within a second, plus the CLI's own start-up
    text = cli("ps", state_dir=state_dir).stdout
    assert f"host {host.host_id}  alive" in text and "web" in text


def test_stop_purges_a_live_host_which_stays_usable(host, state_dir):
    a = host.run("a", ["sleep", "300"])
    host.run("b", "trap '' TERM; sleep 300 & wait", shell=True, stop_timeout=0.5, requires="a")
    r = cli("stop", host.host_id, state_dir=state_dir)
    assert r.returncode == 0, r.stderr
    assert "purged" in r.stdout and "killed" in r.stdout and "exited" in r.stdout
    table = host.ps(all=True)
    assert table["a"]["state"] == "stopped" and table["b"]["state"] == "stopped"
    assert not alive(a.main)
    assert host.run("c", ["sleep", "300"]).state == "running"  # the host lives on


def test_stop_all_and_errors(state_dir, tmp_path):
    with hostconsole.Host(state_dir) as h1, hostconsole.Host(state_dir) as h2:
        h1.run("x", ["sleep", "300"])
        h2.run("y", ["sleep", "300"])
        r = cli("stop", "--all", state_dir=state_dir)
        assert r.returncode == 0, r.stderr
        assert h1.provider("x").state == "stopped" and h2.provider("y").state == "stopped"
    r = cli("stop", "deadbeef", state_dir=state_dir)
    assert r.returncode == 1 and r.stderr.strip() == f"hostconsole: no host 'deadbeef' in {state_dir}"
    r = cli("stop", state_dir=state_dir)
    assert r.returncode != 0 and r.stderr.count("\n") == 1


def test_dead_hosts_are_shown_as_dead_and_reaped(state_dir, tmp_path):
    owner = Owner(state_dir, tmp_path, "h.run('orphan', ['sleep', '300'])")
    host_id = owner.host_id
    from hostconsole import registry

    wait_until(lambda: "orphan" in registry.read(state_dir / "hosts" / host_id).providers, what="registry entry")
    os.kill(owner.proc.pid, signal.SIGSTOP)  # a double fault: frozen, the owner cannot replace its watchdog
    os.kill(owner.watchdog, signal.SIGKILL)  # double fault: nobody stops the orphan
    owner.kill()
    h = ps_json(state_dir)[host_id]
    # The host's own liveness is "alive"; a provider's state stays one of the SPEC's: the
    # leftover still runs, and ps says so.
    assert h["alive"] is False and h["providers"][0]["state"] == "running"
    assert h["providers"][0]["nprocs"] == 1
    r = cli("stop", host_id, state_dir=state_dir)
    assert r.returncode == 1 and "not alive" in r.stderr and "reap" in r.stderr
    r = cli("reap", "--dry-run", state_dir=state_dir)
    assert r.returncode == 0 and "would stop 1 leftover" in r.stdout
    assert marked(host_id)
    r = cli("reap", state_dir=state_dir)
    assert r.returncode == 0 and "stopped 1 leftover" in r.stdout, r.stdout
    assert not marked(host_id)
    assert host_id not in ps_json(state_dir)


def test_ps_shows_running_providers_the_registry_does_not_know(state_dir, tmp_path):
    """A host that dies within moments of a start may not have written it to its registry
    entry: the processes, marked, are the truth."""
    owner = Owner(state_dir, tmp_path, "h.run('known', ['sleep', '300'])")
    from hostconsole import registry

    wait_until(lambda: "known" in registry.read(state_dir / "hosts" / owner.host_id).providers, what="entry")
    marker = {"HOSTCONSOLE_HOST": owner.host_id, "HOSTCONSOLE_PROVIDER": "late",
              "HOSTCONSOLE_OWNER": _proc_owner(owner.proc.pid), "HOSTCONSOLE_STATE_DIR": str(state_dir)}
    late = popen_marked(["sleep", "300"], marker)
    try:
        recs = {r["name"]: r for r in ps_json(state_dir)[owner.host_id]["providers"]}
        assert recs["late"]["state"] == "running" and recs["late"]["registered"] is False
        assert recs["late"]["nprocs"] == 1
    finally:
        late.kill()
        late.wait()
        owner.kill()
        hostconsole.reap(state_dir=state_dir)


def _proc_owner(pid):
    from hostconsole import _proc

    ident = _proc.identity(pid)
    return f"{ident.pid}:{ident.start}"


@pytest.mark.parametrize("sub", ["ps", "stop", "reap", "console", "demo"])
def test_every_subcommand_has_help(sub):
    r = cli(sub, "--help")
    assert r.returncode == 0 and "usage" in r.stdout.lower()


def test_no_command_and_unknown_command():
    assert cli().returncode == 2
    r = cli("bogus")
    assert r.returncode == 2 and "invalid choice" in r.stderr
