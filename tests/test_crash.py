"""Crash safety: the watchdog, the registry, and reaping leftovers of dead hosts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostconsole
from hostconsole import _fence, _proc, registry

from helpers import Owner, alive, marked, popen_marked, read_pids, wait_until

OWNER = str(Path(__file__).with_name("owner.py"))


def start_owner(state_dir, tmp_path, count=1):
    out = tmp_path / "owner.json"
    proc = subprocess.Popen([sys.executable, OWNER, str(state_dir), str(out), str(count)])
    wait_until(lambda: out.exists() or proc.poll() is not None, timeout=60, what="owner to start its providers")
    assert proc.poll() is None, "owner script failed"
    info = json.loads(out.read_text())
    info["proc"] = proc
    gcs = {}
    for i in range(count):
        for kind in ("plain", "escape"):
            gcs[f"{kind}{i}"] = read_pids(tmp_path / f"{kind}{i}.gc")[0]
    info["grandchildren"] = gcs
    return info


def tree_pids(info):
    return set(info["providers"].values()) | set(info["grandchildren"].values())


def test_sigkill_of_the_owner_stops_every_tree_gracefully_first(state_dir, tmp_path):
    info = start_owner(state_dir, tmp_path)
    host_id = info["host"]
    before = marked(host_id)
    assert {i.pid for i in before} >= tree_pids(info)
    t0 = time.monotonic()
    info["proc"].kill()
    info["proc"].wait()
    wait_until(lambda: not marked(host_id), timeout=1 + 4, interval=0.005, what="every provider process to be gone")
    delay = time.monotonic() - t0
    print(f"\nowner SIGKILLed: last process gone after {delay * 1000:.0f} ms (stop_timeout of the stubborn one: 1 s)")
    # The graceful ones got SIGTERM first, escaped grandchild included.
    assert (tmp_path / "plain0.term").read_text().strip() == "TERM"
    assert (tmp_path / "escape0.term").read_text().strip() == "TERM"
    report = json.loads((state_dir / "hosts" / host_id / "watchdog-report.json").read_text())
    assert report["reason"] == "owner closed the channel" or report["reason"] == "owner process exited"
    outcomes = {o["name"]: o["outcome"] for o in report["outcomes"]}
    assert outcomes["stubborn0"] == "killed" and outcomes["plain0"] == "exited"


def test_graceful_trees_are_gone_promptly_after_the_owner_is_killed(state_dir, tmp_path):
    """Without a TERM-ignoring provider, nothing should wait for a timeout."""
    owner = Owner(state_dir, tmp_path, """
        for i in range(5):
            h.run(f'p{i}', 'sleep 300 & setsid sleep 300 & wait', shell=True)
    """)
    wait_until(lambda: len(marked(owner.host_id)) == 1 + 5 * 3, what="15 provider processes and the watchdog")
    t0 = time.monotonic()
    owner.kill()
    wait_until(lambda: not marked(owner.host_id), timeout=5, interval=0.005, what="all gone")
    delay = time.monotonic() - t0
    print(f"\nowner SIGKILLed, 5 graceful trees (15 processes): gone after {delay * 1000:.0f} ms")
    assert delay < 2.5  # far below the 5 s stop timeout: nobody waited for a timeout


def test_watchdog_survives_reporting_an_exit_to_its_dead_owner(state_dir, tmp_path):
    """Regression: the watchdog died of SIGPIPE when, stopping the trees of a killed owner,
    it reported the first exit over the broken socket -- leaving the slower trees alive."""
    owner = Owner(state_dir, tmp_path, """
        h.run('quick', ['sleep', '300'])
        h.run('slow', "trap '' TERM; sleep 300 & wait", shell=True, stop_timeout=1)
    """)
    wait_until(lambda: len(marked(owner.host_id)) == 4, what="providers and watchdog up")
    owner.kill()
    wait_until(lambda: not marked(owner.host_id), timeout=5, what="the slow tree to be killed too")
    report = json.loads((state_dir / "hosts" / owner.host_id / "watchdog-report.json").read_text())
    assert {o["name"]: o["outcome"] for o in report["outcomes"]} == {"quick": "exited", "slow": "killed"}


def test_watchdog_killed_while_host_lives_is_replaced(host, tmp_path):
    p = host.run("survivor", "sleep 300 & setsid sleep 300 & wait", shell=True)
    old = host.status()["watchdog_pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: host.status()["watchdog_alive"] and host.status()["watchdog_pid"] != old,
               what="a new watchdog")
    assert alive(p.main) and host.ps()["survivor"]["state"] == "running"  # not killed with it
    assert host.ps()["survivor"]["nprocs"] == 3 and not host.ps().notes
    wait_until(lambda: registry.read(host.host_dir).watchdog.pid == host.status()["watchdog_pid"],
               what="the registry to name the new watchdog")
    assert host.run("new", ["sleep", "300"]).state == "running"  # usable again
    report = host.purge()
    assert report["survivor"]["outcome"] == "exited" and report["new"]["outcome"] == "exited"
    assert not alive(p.main)


def test_a_replacement_watchdog_keeps_the_crash_promise(state_dir, tmp_path):
    """Kill the watchdog, let the host replace it, then SIGKILL the owner: the new
    watchdog stops the adopted trees (escapees included) just as the first would have."""
    from remote_host import RemoteHost

    rh = RemoteHost(state_dir)
    rh.call("run", "tree", "sleep 300 & setsid sleep 300 & wait", shell=True)
    rh.call("run", "plain", ["sleep", "300"])
    wait_until(lambda: len([m for m in marked(rh.host_id).values() if m.get("HOSTCONSOLE_PROVIDER")]) == 4,
               what="4 provider processes")
    os.kill(rh.watchdog, signal.SIGKILL)
    wait_until(lambda: rh.call("status")["watchdog_alive"] and rh.call("status")["watchdog_pid"] != rh.watchdog,
               what="a new watchdog")
    pids_before = {r["name"]: r["pid"] for r in rh.call("ps")}
    assert all(pids_before.values())
    rh.kill()
    wait_until(lambda: not marked(rh.host_id), timeout=5, interval=0.01, what="every adopted process to be gone")


def test_watchdog_replacements_are_limited(host, capsys):
    """A watchdog that keeps dying is not replaced for ever: the host says so in ps."""
    p = host.run("survivor", ["sleep", "300"])
    from hostconsole._session import REARM_LIMIT

    for _ in range(REARM_LIMIT):
        old = host.status()["watchdog_pid"]
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: host.status()["watchdog_alive"] and host.status()["watchdog_pid"] != old,
                   what="a new watchdog")
    os.kill(host.status()["watchdog_pid"], signal.SIGKILL)  # one too many
    said: list = []  # the host says (on stderr) when it decides not to replace it: wait for the decision, not a time
    wait_until(lambda: said.append(capsys.readouterr().err) or "not restarting it again" in "".join(said),
               what="the host to give up on it")
    assert not host.status()["watchdog_alive"]
    assert any("watchdog died" in n for n in host.ps().notes)
    with pytest.raises(hostconsole.HostError, match="watchdog is gone"):
        host.run("new", ["sleep", "300"])
    assert host.purge()["survivor"]["outcome"] == "exited"  # its own stop path still works
    assert not alive(p.main)
    fence, host_id = host.status()["fence"], host.host_id
    host.shutdown()
    assert not _fence.cells_of(fence, host_id)  # no watchdog removed its cells: the host did


def test_double_fault_leftovers_are_reaped_by_the_next_start(state_dir, tmp_path):
    info = start_owner(state_dir, tmp_path)
    host_id = info["host"]
    os.kill(info["proc"].pid, signal.SIGSTOP)  # a double fault: frozen, the owner cannot replace its watchdog
    os.kill(info["watchdog"], signal.SIGKILL)
    wait_until(lambda: not alive(info["watchdog"]), what="watchdog dead")
    info["proc"].kill()
    info["proc"].wait()
    time.sleep(0.3)  # give a (wrongly) surviving watchdog the chance to act: there is none
    survivors = marked(host_id)
    assert {i.pid for i in survivors} >= tree_pids(info), "nothing should have stopped them yet"

    dry = hostconsole.reap(dry_run=True, state_dir=state_dir)
    assert dry.dry_run and dry.found == len(survivors)
    assert {r["host"] for r in dry} == {host_id}
    assert all(alive(i) for i in survivors), "a dry run touches nothing"

    with _no_warning():  # a reap of a dead host's leftovers is no cause for a warning
        h = hostconsole.Host(state_dir).start()
    try:
        assert h.last_reap.found == len(survivors)
        assert {r["name"] for r in h.last_reap} == {"plain0", "escape0", "stubborn0"}
        assert not marked(host_id)
        assert (tmp_path / "plain0.term").exists(), repr(h.last_reap.records)
        assert (tmp_path / "plain0.term").read_text().strip() == "TERM"  # gracefully first
        assert host_id in h.last_reap.removed
        assert not (state_dir / "hosts" / host_id).exists()
        assert h.status()["reaped_at_start"] == len(survivors)
    finally:
        h.shutdown()


class _no_warning:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _dead_identity():
    p = subprocess.Popen(["true"])
    ident = _proc.identity(p.pid)
    p.wait()
    return ident


def test_reap_never_touches_the_innocent(state_dir, tmp_path):
    dead = _dead_identity()
    innocents = []
    try:
        # 1. no marker at all
        innocents.append(subprocess.Popen(["sleep", "300"], start_new_session=True))
        # 2. a registry entry of a dead host naming the pid of an unmarked process that is not
        #    the one it recorded (a recycled pid: same pid, another start time), as its main
        #    process and as a member, and a cell outside that host's fence
        victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
        innocents.append(victim)
        vid = _proc.identity(victim.pid)
        hdir = state_dir / "hosts" / "deadbeef"
        hdir.mkdir(parents=True, mode=0o700)
        registry.write_atomic(hdir / "host.json", {
            "version": 2, "host": "deadbeef", "owner": {"pid": dead.pid, "start": dead.start}, "fence": "cgroup1",
            "providers": {"web": {"main": {"pid": vid.pid, "start": vid.start - 1}, "state": "running",
                                  "members": [[vid.pid, vid.start - 7]], "cell": "/sys/fs/cgroup/freezer"}}})
        # 3. a marked process of a dead host, but of another state directory
        other = {"HOSTCONSOLE_HOST": "0ther", "HOSTCONSOLE_PROVIDER": "x",
                 "HOSTCONSOLE_OWNER": f"{dead.pid}:{dead.start}", "HOSTCONSOLE_STATE_DIR": str(tmp_path / "elsewhere")}
        innocents.append(popen_marked(["sleep", "300"], other))
        # 5. another user's process with a dead host's marker (only root can make one)
        if os.getuid() == 0:
            foreign = {"HOSTCONSOLE_HOST": "f0reign", "HOSTCONSOLE_PROVIDER": "x",
                       "HOSTCONSOLE_OWNER": f"{dead.pid}:{dead.start}", "HOSTCONSOLE_STATE_DIR": str(state_dir)}
            innocents.append(popen_marked(["sleep", "300"], foreign, user="nobody"))
        # 6. a live host's provider, its registry entry corrupted
        with hostconsole.Host(state_dir) as live:
            lp = live.run("live", ["sleep", "300"])
            # Its start() already reaped: the stale entry went, nothing innocent was touched.
            assert "deadbeef" in live.last_reap.removed and live.last_reap.found == 0
            assert not hdir.exists()
            (live.host_dir / "host.json").write_text("{not json")
            with pytest.warns(RuntimeWarning, match="unreadable registry entry"):
                report = hostconsole.reap(state_dir=state_dir)
            assert report.found == 0, report
            assert alive(lp.main)
        assert all(p.poll() is None for p in innocents)
    finally:
        for p in innocents:
            p.kill()
            p.wait()


@pytest.mark.parametrize("content,words", [
    ('{"version": 1, "host": "trunc', "unreadable"),
    ("not json at all", "unreadable"),
    ('["a list"]', "malformed"),
    ('{"version": 99, "host": "future"}', "newer hostconsole"),
])
def test_broken_registry_entries_are_skipped_with_a_warning(state_dir, content, words):
    d = state_dir / "hosts" / "broken"
    d.mkdir(parents=True, mode=0o700)
    (d / "host.json").write_text(content)
    with pytest.warns(RuntimeWarning, match=words):
        assert registry.read_all(state_dir) == []
    with pytest.warns(RuntimeWarning):
        assert hostconsole.reap(state_dir=state_dir).found == 0
    assert d.exists()  # never deleted on a guess


def test_registry_entry_describes_the_live_host(host):
    host.run("db", ["sleep", "300"], stop_timeout=2)
    host.run("api", ["sleep", "300"], requires="db")
    path = host.host_dir / "host.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    wait_until(lambda: "api" in registry.read(host.host_dir).providers, what="the entry to list api")
    rec = registry.read(host.host_dir)
    assert rec.alive and rec.host_id == host.host_id
    assert rec.watchdog.pid == host.status()["watchdog_pid"]
    db = rec.providers["db"]
    assert db.main.pid == host.provider("db").pid and db.spec.stop_timeout == 2
    assert db.spec == host.provider("db").spec  # the whole spec, in its one wire form
    assert rec.providers["api"].requires == ("db",)
    assert _proc.identity(db.main.pid) == db.main
    host.stop("db")
    t0 = time.monotonic()
    wait_until(lambda: registry.read(host.host_dir).providers["db"].state == "stopped", timeout=5,
               what="the registry to show the stop")
    assert time.monotonic() - t0 < 1.0  # rewritten off the stop's path, but promptly


def test_reap_stops_an_unregistered_leftover_gracefully(state_dir, tmp_path):
    """Regression: a leftover missing from its dead host's registry entry (written a moment
    after each start) was signalled member by member; its shell saw its child die first and
    ended before running its TERM trap.  Its process group now gets the signal at once."""
    done = tmp_path / "trap-ran"
    owner = Owner(state_dir, tmp_path, f"""
        h.run('svc', "trap 'echo TERM > {done}; exit 0' TERM; echo ready; sleep 300 & wait", shell=True)
        while 'ready' not in h.logs('svc'):
            time.sleep(0.01)
    """)
    os.kill(owner.proc.pid, signal.SIGSTOP)  # a double fault: frozen, the owner cannot replace its watchdog
    os.kill(owner.watchdog, signal.SIGKILL)
    wait_until(lambda: not alive(owner.watchdog), what="watchdog dead")
    owner.kill()
    entry = state_dir / "hosts" / owner.host_id / "host.json"
    data = json.loads(entry.read_text())
    data["providers"] = {}  # as if the host died before writing it
    registry.write_atomic(entry, data)
    report = hostconsole.reap(state_dir=state_dir)
    assert [r["name"] for r in report] == ["svc"] and report["svc"]["outcome"] == "exited"
    assert done.read_text().strip() == "TERM"
    assert not marked(owner.host_id)


def test_a_marked_leftover_of_an_unknown_host_is_reaped(state_dir):
    """A marked process of this user and this state dir whose host nothing shows alive (no
    owner named anywhere, no registry entry, no live watchdog) is a leftover: reaped."""
    vague = {"HOSTCONSOLE_HOST": "vague", "HOSTCONSOLE_PROVIDER": "x", "HOSTCONSOLE_STATE_DIR": str(state_dir)}
    p = popen_marked(["sleep", "300"], vague)
    try:
        dry = hostconsole.reap(dry_run=True, state_dir=state_dir)
        assert [(r["host"], r["name"]) for r in dry] == [("vague", "x")] and p.poll() is None
        report = hostconsole.reap(state_dir=state_dir)
        assert report.found == 1 and report["x"]["outcome"] == "exited"
        assert p.wait(5) == -signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_marked_process_of_a_host_with_an_unreadable_entry_is_left_alone(state_dir):
    """...but a host whose registry entry exists and cannot be read is never judged dead on
    a guess: its processes may be a live host's."""
    d = state_dir / "hosts" / "murky"
    d.mkdir(parents=True, mode=0o700)
    (d / "host.json").write_text("{not json")
    murky = {"HOSTCONSOLE_HOST": "murky", "HOSTCONSOLE_PROVIDER": "x", "HOSTCONSOLE_STATE_DIR": str(state_dir)}
    p = popen_marked(["sleep", "300"], murky)
    try:
        with pytest.warns(RuntimeWarning):
            assert hostconsole.reap(state_dir=state_dir).found == 0
        assert p.poll() is None and d.exists()
    finally:
        p.kill()
        p.wait()
