"""Real servers under the host: PostgreSQL across a Restart Kernel, redis and another
user's process through the double fault.

Real servers break what toy providers never do: postgres and redis rewrite their process
title (which blanks the environment marker in /proc/PID/environ), postgres children leave
the provider's session, and a server run under another uid (``setpriv``) is another user's
process.  The programs come from tests/install-system-packages; without them these tests
skip with one loud line (under CI=true they fail).  postgres runs as the ``postgres`` user,
so these tests need root (as CI has).
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import hostconsole
from hostconsole import _proc

from helpers import alive, free_port, read_pids, wait_until
from remote_host import RemoteHost
from test_kernel import Kernel, bindable

AS_POSTGRES = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def needs_root(what):
    if os.getuid() != 0:
        line = f"MISSING root: {what} runs a server as another user, which needs root"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(line, pytrace=False)
        pytest.skip(line)


def identity(pid):
    st = _proc.stat(pid)
    assert st is not None and not st.dead, f"pid {pid} is not running"
    return st.ident


def kill_if_alive(ident):
    """Last-resort cleanup of a process this test started: by identity, never by name."""
    if alive(ident):
        _proc.send(ident, signal.SIGKILL)
        wait_until(lambda: not alive(ident), timeout=10, what=f"pid {ident.pid} to die")
        return True
    return False


# --- PostgreSQL across a Restart Kernel ------------------------------------------------------


@pytest.fixture
def pg_cluster(postgres_bin):
    """A fresh cluster owned by the postgres user: (bindir, data dir, socket dir).

    It lives in its own temp dir, not in tmp_path: pytest keeps its base dir 0700 to root,
    and postgres must reach its data dir."""
    needs_root("postgres")
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("the postgresql package is installed but there is no postgres user", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="hostconsole-pg-"))
    try:
        os.chown(base, pw.pw_uid, pw.pw_gid)
        data = base / "data"
        r = subprocess.run(AS_POSTGRES + [f"{postgres_bin}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres",
                                          "--no-sync"], cwd=base, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"initdb failed:\n{r.stdout}\n{r.stderr}"
        yield postgres_bin, data, base
        # The test stopped every postgres it started; one still holding the data dir is a
        # leak (the test fails), killed here by its identity.
        pidfile = data / "postmaster.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().split()[0])
            st = _proc.stat(pid)
            if st is not None and not st.dead and str(data) in " ".join(_proc_cmdline(pid)):
                kill_if_alive(st.ident)
                pytest.fail(f"postgres (pid {pid}) still ran on {data} after the test")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _proc_cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def psql(bindir, port, sql):
    r = subprocess.run([f"{bindir}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres",
                        "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
    assert r.returncode == 0, f"psql failed: {r.stderr}"
    return r.stdout


def diagnose(state_dir):
    """What the host left in its state dir: for a failure message."""
    out = []
    for pattern in ("hosts/*/host.json", "hosts/*/watchdog.log", "hosts/*/watchdog-report.json",
                    "hosts/*/logs/*", "previous/*/*"):
        for path in sorted(glob.glob(f"{state_dir}/{pattern}")):
            try:
                out.append(f"--- {path}\n{Path(path).read_text(errors='replace')[-3000:]}")
            except OSError:
                pass
    return "\n".join(out) or f"(nothing under {state_dir})"


def restart_with_postgres_stopping(tmp_path, kernels_dir, pg_cluster, shutdown, stop_timeout):
    """postgres in a real kernel, made to need ``shutdown`` seconds to shut down, then
    Restart Kernel, then postgres again on the same data dir and port in the new kernel."""
    bindir, data, base = pg_cluster
    port = free_port()
    pg = (" ".join(AS_POSTGRES) + f" {bindir}/postgres -D {data} -p {port} -k {base}"
          " -c listen_addresses=127.0.0.1")
    # The shutdown is made slow, and exactly as slow as asked, by the archiver: postgres
    # shuts down only once the archiving under way has finished, and the archive command
    # takes ``shutdown`` seconds (ignoring the stop signal) once, for the segment switched
    # just before the restart, when the file `slow` exists.
    archive = base / "archive.sh"
    archive.write_text("#!/bin/sh\ntrap '' INT\n"
                       f"if [ -e {base}/slow ]; then rm -f {base}/slow; sleep {shutdown}; fi\nexit 0\n")
    archive.chmod(0o755)
    slow = pg + f" -c archive_mode=on -c archive_command={archive}"
    run = f"%host run pg --ready port:{port} --stop-signal INT --stop-timeout {stop_timeout} --cwd {base} -- "
    k = Kernel(tmp_path / "kernel", kernels_dir)
    old_pm = new_pm = None
    try:
        k.run("%load_ext hostconsole")
        k.run(run + slow)
        old_pm = identity(k.eval("_hc.get_host().ps().records[0]['pid']"))
        assert str(data) in _proc_cmdline(old_pm.pid), "the provider's main pid is the postmaster"
        # Something to checkpoint; then every segment archived (quickly) so far, and one
        # more switched to be archived slowly.
        psql(bindir, port, "create table t as select g, md5(g::text) as m from generate_series(1, 20000) g;"
                           " update t set m = upper(m);")
        wait_until(lambda: not glob.glob(f"{data}/pg_wal/archive_status/*.ready"), timeout=30,
                   what="the archiver to catch up")
        (base / "slow").touch()
        psql(bindir, port, "select pg_switch_wal();")
        wait_until(lambda: not (base / "slow").exists(), timeout=30, what="the slow archiving to start")
        old_kernel = k.proc
        t0 = time.monotonic()
        k.km.restart_kernel()  # what JupyterLab's Restart calls
        took = time.monotonic() - t0
        assert old_kernel.wait(timeout=5) == 0, "the old kernel exits cleanly, inside the manager's patience"
        # The premise: postgres was still shutting down when the kernel had gone.
        assert alive(old_pm), "postgres finished before the kernel exited: this test no longer tests the handover"
        k.proc = k.km.provisioner.process
        k.kc.wait_for_ready(timeout=60)

        # At once, in the restarted kernel: the same port, the same data dir.  This run
        # waits for the previous host's postgres to finish stopping.
        k.run("%load_ext hostconsole")
        _, shown = k.run(run + pg, timeout=stop_timeout + 60)
        ready = time.monotonic() - t0
        assert not alive(old_pm), "the new run returned while the old postgres still ran"
        new_pm = identity(k.eval("_hc.get_host().ps().records[0]['pid']"))
        print(f"\nrestart_kernel() {took:.2f} s; the new postgres ready {ready:.2f} s after the request")

        # The old postgres's log, as a user reads it after a restart.
        _, old_log = k.run("%host logs pg --previous -n 1000")
        assert f"[{old_pm.pid}] LOG:  received fast shutdown request" in old_log, (
            "`%host logs pg --previous` does not show the old postgres's log\n" + diagnose(k.state_dir))
        assert f"[{old_pm.pid}] LOG:  database system is shut down" in old_log, (
            f"the old postgres did not finish its shutdown\nthe new kernel's run showed: {shown}\n"
            + diagnose(k.state_dir))
        new_log = k.eval("_hc.get_host().logs('pg', n=200)")
        assert "database system is ready to accept connections" in new_log
        for bad in ("not properly shut down", "automatic recovery", "was interrupted"):
            assert bad not in new_log, f"the new postgres found an unclean data dir:\n{new_log}"
        assert "database system was shut down at" in new_log
        assert psql(bindir, port, "select count(*) from t").strip() == "20000", "the data survived the restart"

        outcome = k.eval("[r['outcome'] for r in _hc.get_host().stop('pg').records]")
        assert outcome == ["exited"], "a fast shutdown on SIGINT, well inside its stop timeout"
        assert not alive(new_pm)
        assert bindable(port)
    finally:
        k.close()
        for ident in (old_pm, new_pm):
            if ident is not None:
                kill_if_alive(ident)


def test_restart_kernel_lets_postgres_shut_down_cleanly(tmp_path, kernels_dir, pg_cluster):
    # 4 s: longer than the kernel waits (~1.5 s), well inside the stop timeout.
    restart_with_postgres_stopping(tmp_path, kernels_dir, pg_cluster, shutdown=4, stop_timeout=10)


def test_restart_kernel_lets_a_long_postgres_shutdown_finish_within_its_stop_timeout(
        tmp_path, kernels_dir, pg_cluster):
    # 12 s: longer than the kernel waits, and longer than a reap's own 5 s, inside the 20 s.
    restart_with_postgres_stopping(tmp_path, kernels_dir, pg_cluster, shutdown=12, stop_timeout=20)


# --- redis and another user's process through the double fault ------------------------------


def recorded(entry):
    """(provider, pid) of every member the registry entry ``entry`` (host.json) records."""
    try:
        providers = json.loads(Path(entry).read_text()).get("providers") or {}
    except (OSError, ValueError):
        return set()
    return {(name, m[0]) for name, p in providers.items() for m in p.get("members") or []}


@pytest.mark.parametrize("via", ["cli", "python"])
def test_a_double_fault_with_redis_and_another_users_process_leaves_nothing_after_reap(state_dir, redis_server, via):
    needs_root("the `other` provider")
    port = free_port()
    rh = RemoteHost(state_dir)
    started = []
    try:
        rh.call("run", "redis", [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], ready=f"port:{port}")
        rh.call("run", "other", AS_NOBODY + ["sleep", "300"])
        records = {r["name"]: r for r in rh.call("ps")}
        assert {n: r["state"] for n, r in records.items()} == {"redis": "running", "other": "running"}
        redis, other = identity(records["redis"]["pid"]), identity(records["other"]["pid"])
        started += [redis, other]
        # The premises: redis's new title blanked the marker in its environment, and
        # `other` is another user's process.  Neither can be found by marker.
        # (Polled: until redis has set its title, and setpriv has changed its uid and exec'd.)
        wait_until(lambda: not _proc.markers(redis.pid).get("HOSTCONSOLE_HOST"),
                   what="redis to rewrite its title over its environment")
        wait_until(lambda: _proc.owner_uid(other.pid) == pwd.getpwnam("nobody").pw_uid,
                   what="the other process to run as nobody")

        # The double fault: the owner frozen (it cannot replace its watchdog), the watchdog
        # SIGKILLed, then the owner.  Nobody is left to stop redis and `other`.
        entry = Path(state_dir) / "hosts" / rh.host_id / "host.json"
        wait_until(lambda: recorded(entry) >= {("redis", redis.pid), ("other", other.pid)}, timeout=10,
                   what="the registry entry to record both members")
        watchdog = identity(rh.call("status")["watchdog_pid"])
        os.kill(rh.pid, signal.SIGSTOP)
        _proc.send(watchdog, signal.SIGKILL)
        wait_until(lambda: not alive(watchdog), timeout=10, what="the watchdog to die")
        rh.kill()
        assert alive(redis) and alive(other), "the survivors of the double fault"
        assert entry.exists(), "the dead host's entry is the record of what it left running"

        if via == "cli":
            r = subprocess.run([sys.executable, "-m", "hostconsole", "reap"], capture_output=True, text=True,
                               timeout=90, env=dict(os.environ, HOSTCONSOLE_STATE_DIR=str(state_dir)))
            assert r.returncode == 0, r.stdout + r.stderr
            report = r.stdout
        else:
            result = hostconsole.reap(state_dir=state_dir)
            assert rh.host_id in result.removed
            report = str(result) + "\n" + "\n".join(f"{x['name']} {x['pids']}" for x in result.records)
        assert not alive(redis), f"redis survived the reap:\n{report}\n{diagnose(state_dir)}"
        assert not alive(other), f"another user's provider survived the reap:\n{report}\n{diagnose(state_dir)}"
        assert bindable(port)
        assert "redis" in report and "other" in report, report
        assert not entry.parent.exists(), "the entry goes once nothing it recorded runs"
    finally:
        if rh.proc.is_alive():  # the test failed before the double fault
            os.kill(rh.pid, signal.SIGCONT)
            try:
                rh.close()
            except Exception:  # noqa: BLE001 -- cleanup; the test has already failed
                rh.kill()
        leaked = [i.pid for i in started if kill_if_alive(i)]
        assert not leaked, f"killed leftover pids {leaked}"


def reap_via(via, state_dir):
    """Run the reap from a shell (`hostconsole reap`) or from Python; its report as text."""
    if via == "cli":
        r = subprocess.run([sys.executable, "-m", "hostconsole", "reap"], capture_output=True, text=True,
                           timeout=90, env=dict(os.environ, HOSTCONSOLE_STATE_DIR=str(state_dir)))
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout
    result = hostconsole.reap(state_dir=state_dir)
    return (str(result) + "\n" + "\n".join(f"{x['name']} {x['pids']}" for x in result.records)
            + f"\nremoved: {result.removed}")


def test_a_double_fault_right_after_run_returns_leaves_nothing_after_reap(state_dir, tmp_path, redis_server):
    """The owner freezes itself the moment `run` has returned (its registry writer with it:
    SIGSTOP stops every thread), then the double fault.  What `run` reported running must
    be found by the reap all the same."""
    needs_root("the `other` provider")
    port = free_port()
    info, redis_pid = tmp_path / "info.json", tmp_path / "redis.pid"
    script = (
        "import hostconsole, json, os, signal\n"
        f"h = hostconsole.Host({str(state_dir)!r}).start()\n"
        f"json.dump({{'host': h.host_id, 'watchdog': h.status()['watchdog_pid']}}, open({str(info)!r}, 'w'))\n"
        f"h.run('redis', [{redis_server!r}, '--port', '{port}', '--bind', '127.0.0.1', '--save', '',"
        f" '--appendonly', 'no', '--pidfile', {str(redis_pid)!r}], ready='port:{port}')\n"
        f"h.run('other', {AS_NOBODY!r} + ['sleep', '300'])\n"
        "os.kill(os.getpid(), signal.SIGSTOP)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script])
    started, meta = [], None
    try:
        def frozen():
            st = _proc.stat(owner.pid)
            return owner.poll() is not None or (st is not None and st.state == "T")
        wait_until(frozen, timeout=60, what="the owner to run both and freeze")
        assert owner.poll() is None, "the owner script failed"
        meta = json.loads(info.read_text())
        redis = identity(read_pids(redis_pid)[0])
        # `other` (a sleep: it keeps its environment) is found by its marker, which we as
        # root may read although it is another user's process.
        others = [pid for pid in _proc.all_pids() if _proc.markers(pid).get("HOSTCONSOLE_HOST") == meta["host"]
                  and _proc.markers(pid).get("HOSTCONSOLE_PROVIDER") == "other"]
        assert len(others) == 1, others
        other = identity(others[0])
        started += [redis, other]
        entry = Path(state_dir) / "hosts" / meta["host"] / "host.json"
        watchdog = identity(meta["watchdog"])
        _proc.send(watchdog, signal.SIGKILL)
        wait_until(lambda: not alive(watchdog), timeout=10, what="the watchdog to die")
        owner.kill()
        owner.wait(10)
        assert alive(redis) and alive(other) and entry.exists()
        report = reap_via("python", state_dir)
        assert not alive(redis), f"redis survived the reap:\n{report}\n{diagnose(state_dir)}"
        assert not alive(other), f"another user's provider survived the reap:\n{report}\n{diagnose(state_dir)}"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        leaked = [i.pid for i in started if kill_if_alive(i)]
        if meta:
            remove_empty_cells(meta["host"])
        assert not leaked, f"killed leftover pids {leaked}"


def remove_empty_cells(host_id):
    """The cgroup cells a reap left behind (it removed the entry while they held processes,
    which this test then killed): rmdir, which refuses a cgroup that is not empty."""
    for host_dir in glob.glob(f"/sys/fs/cgroup/*/hostconsole/{host_id}") + glob.glob(
            f"/sys/fs/cgroup/hostconsole/{host_id}"):
        for cell in glob.glob(f"{host_dir}/*/"):
            try:
                wait_until(lambda: not Path(cell, "cgroup.procs").read_text().strip(), timeout=5,
                           what=f"{cell} to empty")
                os.rmdir(cell)
            except (OSError, AssertionError):
                pass
        try:
            os.rmdir(host_dir)
        except OSError:
            pass
