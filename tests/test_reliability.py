"""Load, hostile input and faults of the OS: the promise must hold off the happy path too."""

from __future__ import annotations

import os
import shutil
import sys
import time

import pytest

import hostconsole
from hostconsole.errors import HostError, InvalidSpec, ProviderFailed

from helpers import PidsCgroup, alive, marked, pids_cgroup_usable, wait_until

PY = sys.executable


# --- load ---------------------------------------------------------------------------------


def test_200_providers_stay_responsive_and_purge_in_one_timeout(host):
    for i in range(190):
        host.run(f"small{i}", ["sleep", "300"])
    for i in range(10):
        host.run(f"stubborn{i}", "trap '' TERM; sleep 300 & wait", shell=True, stop_timeout=1)
    host.ps()
    t0 = time.monotonic()
    table = host.ps()
    ps_time = time.monotonic() - t0
    assert len(table) == 200 and all(r["state"] == "running" for r in table)
    t0 = time.monotonic()
    report = host.purge()
    purge_time = time.monotonic() - t0
    print(f"\n200 providers: ps {ps_time * 1000:.0f} ms, purge {purge_time:.2f} s")
    assert ps_time < 1.0
    assert purge_time < 4.0  # about the longest stop timeout (1 s), not the sum (10 s)
    assert sum(r["outcome"] == "killed" for r in report) == 10
    assert sum(r["outcome"] == "exited" for r in report) == 190


def test_a_provider_writing_as_fast_as_it_can(state_dir):
    cap = 1024 * 1024
    with hostconsole.Host(state_dir, log_max_bytes=cap) as h:
        p = h.run("firehose", ["yes", "all work and no play"])
        log = p.log_path
        peak, slowest = 0, 0.0
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            peak = max(peak, sum(os.path.getsize(x) for x in (log, f"{log}.1") if os.path.exists(x)))
            t0 = time.monotonic()
            h.ps()
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.005)
        print(f"\nfirehose: peak on disk {peak / 2**20:.0f} MiB with a 1 MiB cap; slowest ps {slowest * 1000:.0f} ms")
        assert slowest < 0.5  # the host (the kernel) is not slowed
        assert peak < 512 * 2**20  # bounded: the disk cannot fill (see the note on copytruncate)
        assert "all work and no play\n" in h.logs("firehose", 3)  # (the last line may be half written)
    # after it stopped, what stays on disk is within the cap
    assert not log.exists() or os.path.getsize(log) <= 2 * cap


# --- hostile and broken input -------------------------------------------------------------


@pytest.mark.parametrize("name", ["a b", "a/b", "../up", "x;rm -rf y", "$(touch pwned)", "`id`", "ünï", "a\nb",
                                  "", ".hidden", "-rf", "a" * 65])
def test_hostile_names_are_refused(host, name, tmp_path, monkeypatch):
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(InvalidSpec, match="invalid provider name"):
        host.run(name, ["sleep", "300"])
    assert list(here.iterdir()) == []  # nothing ran, nothing was created
    assert not list((host.host_dir / "logs").iterdir())  # no log file under a strange name


def test_arguments_never_reach_a_shell_unless_asked(host, tmp_path, monkeypatch):
    tmp_path = tmp_path / "cwd"
    tmp_path.mkdir()
    monkeypatch.chdir(tmp_path)
    host.run("literal", ["echo", "$(touch pwned)", "; touch pwned2", "`touch pwned3`"])
    wait_until(lambda: "pwned" in host.logs("literal"), what="output")
    assert host.logs("literal").strip() == "$(touch pwned) ; touch pwned2 `touch pwned3`"
    assert not any(p.name.startswith("pwned") for p in tmp_path.iterdir())


def test_huge_environment_values(host):
    big = "x" * 100_000
    host.run("big", "printf %s \"$BIG\" | wc -c; sleep 300", shell=True, env={"BIG": big})
    wait_until(lambda: host.logs("big").strip(), what="output")
    assert host.logs("big").strip() == "100000"
    too_big = "x" * 300_000  # past the kernel's limit for one environment string
    with pytest.raises(ProviderFailed, match="cannot start 'huge': .*(too long|E2BIG)"):
        host.run("huge", ["sleep", "300"], env={"HUGE": too_big})
    assert "huge" not in host and host.provider("big").state == "running"


def test_state_dir_that_is_a_file_or_beneath_one(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    for path, words in ((f, "is not a directory"), (f / "state", "cannot create state directory")):
        h = hostconsole.Host(path)
        with pytest.raises(HostError, match=words):
            h.start()
        assert not h.started and h.status()["watchdog_pid"] is None


def test_state_dir_others_can_write_to_is_refused(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(HostError, match="writable by others .*refusing"):
        hostconsole.Host(d).start()
    d.chmod(0o750)  # readable by the group: ours to fix
    with hostconsole.Host(d) as h:
        assert h.started
    assert oct(d.stat().st_mode & 0o777) == "0o700"


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a directory to another user")
def test_state_dir_of_another_user_is_refused(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    shutil.chown(d, "nobody")
    with pytest.raises(HostError, match="belongs to uid .* not to you"):
        hostconsole.Host(d).start()


def test_state_deleted_while_providers_run(host):
    old = host.run("old", "echo before; sleep 300", shell=True)
    wait_until(lambda: "before" in host.logs("old"), what="output")
    shutil.rmtree(host.host_dir)
    host.run("new", "echo after; sleep 300", shell=True)
    wait_until(lambda: "after" in host.logs("new"), what="output")
    assert old.state == "running" and alive(old.main)
    wait_until(lambda: (host.host_dir / "host.json").exists(), what="the registry entry to be rewritten")
    assert "new" in host.ps()["new"]["name"]
    report = host.purge()
    assert {r["outcome"] for r in report} == {"exited"}


# --- faults of the OS ---------------------------------------------------------------------


def test_a_provider_that_closes_its_output(host):
    p = host.run("mute", "exec >&- 2>&-; sleep 300", shell=True)
    time.sleep(0.1)
    assert p.state == "running"
    assert host.stop("mute")["mute"]["outcome"] == "exited"


def test_a_provider_that_forks_50_children(host):
    host.run("forky", "for i in $(seq 50); do sleep 300 & done; echo forked; wait", shell=True)
    wait_until(lambda: "forked" in host.logs("forky") and host.ps()["forky"]["nprocs"] == 51, what="51 processes")
    def forky():
        return [i for i, m in marked(host.host_id).items() if m.get("HOSTCONSOLE_PROVIDER") == "forky"]

    # (Polled: a child's environment reads as empty for a moment while it execs.)
    kids = wait_until(lambda: forky() if len(forky()) == 51 else None, what="51 marked processes")
    report = host.stop("forky")
    assert report["forky"]["outcome"] == "exited"
    assert not any(alive(k) for k in kids)


@pytest.mark.skipif(not pids_cgroup_usable(),
                    reason="needs a writable cgroup v1 pids controller (root) to make fork fail")
def test_fork_failure_is_a_clean_error(state_dir, tmp_path):
    """With its process budget exhausted (pids.max), a start fails with one clear error,
    nothing is half started, and the host carries on once there is room again."""
    from remote_host import RemoteError, RemoteHost

    rh = None
    with PidsCgroup() as cg:
        try:
            rh = RemoteHost(state_dir)
            # Owner and watchdog (with their threads) go into the cgroup; then the budget is
            # what they use now plus room for two providers.
            cg.join(rh.pid, rh.watchdog)
            used = cg.current()
            cg.limit(used + 3)
            started, error = [], None
            for i in range(10):  # until the budget runs out (threads come and go: not exactly 3)
                try:
                    rh.call("run", f"p{i}", ["sleep", "300"])
                    started.append(f"p{i}")
                except RemoteError as e:
                    error = e
                    break
            assert error is not None, "the process limit never bit"
            assert error.kind == "ProviderFailed" and f"cannot start 'p{len(started)}'" in str(error)
            assert "temporarily unavailable" in str(error) or "Resource" in str(error), error
            names = [r["name"] for r in rh.call("ps", all=True)]
            assert names == started  # nothing half started
            if started:
                rh.call("stop", started[0])  # a stop works without a spare thread
                wait_until(lambda: cg.current() < used + 3, what="room again")
                assert rh.call("run", "again", ["sleep", "300"])["state"] == "running"
            host_id = rh.host_id
            rh.close()
            rh = None
            wait_until(lambda: not marked(host_id), what="everything gone")
        finally:
            if rh is not None:
                rh.kill()
