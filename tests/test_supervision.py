"""Supervision users expect: readiness, dependencies, restart policies, live ps, logs,
port diagnosis.  Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

import psutil
import pytest

import hostconsole
from hostconsole import _ready
from hostconsole.errors import InvalidSpec, PortInUse, ProviderFailed

from helpers import Owner, alive, marked, wait_until

PY = sys.executable


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web(port):
    return [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


@pytest.fixture
def fast_host(state_dir):
    """A host whose restart backoff and intensity window are short enough to test."""
    h = hostconsole.Host(state_dir, restart_backoff=0.05, restart_backoff_max=0.4, restart_limit=3,
                         restart_window=30, log_max_bytes=64 * 1024).start()
    host_id = h.host_id
    yield h
    h.shutdown()
    wait_until(lambda: not marked(host_id), timeout=15, what="no marked process left")


# --- readiness ----------------------------------------------------------------------------


def test_port_readiness_returns_only_once_the_port_accepts(host):
    port = free_port()
    # Delay the server so that returning early would be caught.
    p = host.run("web", ["bash", "-c", f"sleep 0.4; exec {PY} -m http.server {port} --bind 127.0.0.1"],
                 ready=f"port:{port}")
    assert p.state == "running"
    assert _ready.port_open(port)
    assert host.ps()["web"]["ports"] == [port]


def test_http_readiness_and_its_timeout(host):
    port = free_port()
    p = host.run("web", web(port), ready=f"http://127.0.0.1:{port}/")
    assert p.state == "running"
    port2 = free_port()
    t0 = time.monotonic()
    with pytest.raises(ProviderFailed) as info:
        host.run("web404", web(port2), ready=f"http://127.0.0.1:{port2}/missing", ready_timeout=1.5)
    msg = str(info.value)
    assert f"not ready after 1.5s: waited for http://127.0.0.1:{port2}/missing to answer 2xx/3xx" in msg
    assert "it was stopped" in msg and "last output" in msg and "404" in msg  # the server's own log line
    assert time.monotonic() - t0 < 10
    failed = host.provider("web404")
    assert failed.state == "failed" and not alive(failed.main)
    assert not _ready.port_open(port2)


def test_log_readiness_waits_for_the_line(host):
    t0 = time.monotonic()
    p = host.run("svc", "echo starting; sleep 0.4; echo 'listening on 1234'; sleep 300", shell=True,
                 ready=r"log:listening on \d+")
    assert p.state == "running" and time.monotonic() - t0 >= 0.35


def test_log_readiness_ignores_output_of_a_previous_incarnation(host):
    host.run("svc", "echo READY; sleep 300", shell=True, ready="log:READY")
    host.stop("svc")
    with pytest.raises(ProviderFailed, match="not ready after 1s"):
        host.run("svc", "echo nothing here; sleep 300", shell=True, ready="log:READY", ready_timeout=1)


def test_cmd_readiness(host, tmp_path):
    flag = tmp_path / "flag"
    p = host.run("svc", f"sleep 0.3; touch {flag}; sleep 300", shell=True, ready=f"cmd:test -f {flag}")
    assert p.state == "running" and flag.exists()


def test_readiness_timeout_stops_the_provider_and_shows_its_output(host, tmp_path):
    port = free_port()
    pidfile = tmp_path / "gc"
    with pytest.raises(ProviderFailed) as info:
        host.run("slow", f"echo warming up; sleep 300 & echo $! > {pidfile}; wait", shell=True,
                 ready=f"port:{port}", ready_timeout=0.5)
    msg = str(info.value)
    assert msg.startswith(f"provider 'slow' not ready after 0.5s: waited for port {port} to accept connections")
    assert "warming up" in msg
    gc = int(pidfile.read_text())
    wait_until(lambda: not alive(gc), timeout=5, what="the provider's tree to be stopped")
    assert host.provider("slow").state == "failed"


def test_a_provider_that_exits_while_awaited_fails_at_once(host):
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(ProviderFailed) as info:
        host.run("crash", "echo boom; exit 3", shell=True, ready=f"port:{port}", ready_timeout=30)
    assert time.monotonic() - t0 < 5  # not the 30 s timeout
    assert "exited (exit code 3) before it became ready" in str(info.value)
    assert "boom" in str(info.value)


@pytest.mark.parametrize("spec", ["port:abc", "port:0", "port:70000", "log:(", "log:", "cmd:", "cmd:  ",
                                  "http://", "tcp:80", "bogus", "https://x:notaport/"])
def test_malformed_ready_specs_are_refused_before_anything_starts(host, spec):
    keep = host.run("keep", ["sleep", "300"])
    with pytest.raises(InvalidSpec, match="malformed ready check"):
        host.run("new", ["sleep", "300"], ready=spec)
    assert "new" not in host and keep.state == "running"


def test_no_wait_returns_at_once_and_readiness_follows(host):
    p = host.run("svc", "sleep 0.5; echo ok; sleep 300", shell=True, ready="log:ok", wait=False)
    assert p.state == "starting" and not p.ready
    wait_until(lambda: p.state == "running", timeout=10, what="background readiness")


def test_progress_is_reported_while_waiting(host):
    seen = []
    host.run("svc", "sleep 0.8; echo ok; sleep 300", shell=True, ready="log:ok",
             progress=lambda elapsed, what: seen.append((elapsed, what)))
    assert seen and all("ok" in what for _, what in seen)
    assert seen[-1][0] > 0.4


# --- dependencies -------------------------------------------------------------------------


def test_a_dependent_starts_only_after_its_dependency_is_ready(host, tmp_path):
    stamps = tmp_path / "stamps"
    host.run("db", f"sleep 0.5; date +%s.%N > {stamps}.db; echo ready; sleep 300", shell=True,
             ready="log:ready", wait=False)
    host.run("api", f"date +%s.%N > {stamps}.api; sleep 300", shell=True, requires="db")
    wait_until(lambda: os.path.exists(f"{stamps}.api") and open(f"{stamps}.api").read().endswith("\n"),
               what="api stamp")
    assert float(open(f"{stamps}.api").read()) >= float(open(f"{stamps}.db").read())
    assert host.provider("db").state == "running"


def test_a_failed_dependency_keeps_dependents_from_starting(host):
    port = free_port()
    host.run("db", ["sleep", "300"], ready=f"port:{port}", ready_timeout=0.5, wait=False)
    with pytest.raises(ProviderFailed, match="dependency 'db' is failed"):
        host.run("api", ["sleep", "300"], requires="db")
    assert "api" not in host


def test_oneshot_then_service_then_worker(host, tmp_path):
    data = tmp_path / "data.txt"
    prep = host.run("prepare", f"echo 42 > {data}; echo prepared", shell=True, oneshot=True)
    assert prep.state == "exited" and prep.ready
    port = free_port()
    host.run("svc", [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
             requires="prepare", ready=f"http://127.0.0.1:{port}/data.txt")
    w = host.run("worker", [PY, "-c", f"import urllib.request;print(urllib.request.urlopen("
                                      f"'http://127.0.0.1:{port}/data.txt').read().decode().strip(), flush=True);"
                                      f"import time;time.sleep(300)"], requires="svc")
    wait_until(lambda: "42" in host.logs("worker"), what="worker output")
    report = host.stop("prepare")  # dependents first: worker, then svc, then prepare
    assert [r["name"] for r in report] == ["worker", "svc", "prepare"]
    assert w.state == "stopped" and host.provider("svc").state == "stopped"
    assert "prepared" in host.logs("prepare")  # a oneshot's output stays readable


# --- restart policies ---------------------------------------------------------------------


def test_on_failure_restarts_with_backoff_until_the_intensity_limit(fast_host, tmp_path):
    runs = tmp_path / "runs"
    p = fast_host.run("crasher", f"date +%s.%N >> {runs}; exit 1", shell=True, restart="on-failure")
    wait_until(lambda: p.state == "restarting", timeout=15, what="a restart pending")
    assert p.pid is None  # its last process is gone: no pid to show while it waits
    wait_until(lambda: p.state == "failed", timeout=15, what="crasher to give up")
    stamps = [float(x) for x in runs.read_text().split()]
    assert len(stamps) == 4  # the first run and restart_limit=3 restarts
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert gaps[0] >= 0.04 and gaps[2] > gaps[0]  # 0.05, 0.1, 0.2: it backs off
    rec = fast_host.ps()["crasher"]
    assert rec["restarts"] == 3 and rec["exit_code"] == 1 and rec["state"] == "failed"
    assert "giving up" in rec["error"]


def test_on_failure_does_not_restart_a_clean_exit_but_always_does(fast_host, tmp_path):
    clean = fast_host.run("clean", "exit 0", shell=True, restart="on-failure")
    assert clean.wait(10) == "exited" and clean.restarts == 0
    runs = tmp_path / "runs"
    again = fast_host.run("again", f"echo x >> {runs}; exit 0", shell=True, restart="always")
    wait_until(lambda: again.state == "failed", timeout=15, what="always to hit the limit")
    assert again.restarts == 3 and len(runs.read_text().split()) == 4


def test_a_crash_is_restarted_and_shows_its_last_exit(fast_host):
    p = fast_host.run("svc", ["sleep", "300"], restart="on-failure")
    first = p.main
    os.kill(first.pid, signal.SIGKILL)
    wait_until(lambda: p.state == "running" and p.main != first, timeout=10, what="restart")
    rec = fast_host.ps()["svc"]
    assert rec["restarts"] == 1 and rec["signal"] is None and rec["pid"] == p.pid
    assert p.restarts == 1


def test_a_user_stop_is_never_restarted(fast_host):
    p = fast_host.run("svc", ["sleep", "300"], restart="always")
    fast_host.stop("svc")
    assert p.state == "stopped"
    deadline = time.monotonic() + 0.6  # several backoff periods: a restart would show
    while time.monotonic() < deadline:
        assert p.state == "stopped" and not marked(fast_host.host_id).keys() - _watchdog_ident(fast_host)
        time.sleep(0.05)


def test_a_stop_during_the_backoff_cancels_the_restart(fast_host):
    h = fast_host
    h.restart_backoff = 0.5
    p = h.run("svc", "sleep 0.1; exit 1", shell=True, restart="on-failure")
    wait_until(lambda: p.state == "restarting", timeout=5, what="restarting")
    h.stop("svc")
    assert p.state == "stopped"
    time.sleep(0.8)  # past the backoff: the cancelled restart must not happen
    assert p.state == "stopped" and p.restarts == 1


def _watchdog_ident(h):
    from hostconsole import _proc

    return {_proc.identity(h.status()["watchdog_pid"])}


# --- ps -----------------------------------------------------------------------------------


def test_ps_figures_agree_with_psutil(host):
    port = free_port()
    p = host.run("tree", ["bash", "-c", f"sleep 300 & sleep 300 & exec {PY} -m http.server {port} --bind 127.0.0.1"],
                 ready=f"port:{port}")
    wait_until(lambda: host.ps()["tree"]["nprocs"] == 3, what="3 processes")
    rec = host.ps()["tree"]
    top = psutil.Process(p.pid)
    procs = [top] + top.children(recursive=True)
    assert rec["nprocs"] == len(procs) == 3
    expected_rss = sum(x.memory_info().rss for x in procs)
    assert abs(rec["rss"] - expected_rss) <= 0.2 * expected_rss
    assert rec["ports"] == [port]
    assert rec["pid"] == p.pid and rec["uptime"] > 0
    assert isinstance(rec["cpu_percent"], float)
    json.dumps(host.ps().records)  # records are plain JSON


def test_ps_of_100_providers_is_quick(host):
    for i in range(100):
        host.run(f"p{i}", ["sleep", "300"])
    host.ps()
    t0 = time.monotonic()
    table = host.ps()
    elapsed = time.monotonic() - t0
    print(f"\nps with 100 providers: {elapsed * 1000:.1f} ms")
    assert len(table) == 100 and all(r["nprocs"] == 1 for r in table)
    assert elapsed < 1.0


# --- logs ---------------------------------------------------------------------------------


def test_logs_are_capped_on_disk(fast_host):
    cap = fast_host.log_max_bytes
    fast_host.run("chatty", [PY, "-c", "import sys, time\nfor i in range(60000): print(f'line {i:06d} ' + 'x' * 60)\n"
                                       "sys.stdout.flush(); time.sleep(0.5); print('done', flush=True); time.sleep(300)"])
    log = fast_host.provider("chatty").log_path
    # (The last line of a burst can fall into a rotation's read-to-truncate window, as with
    # logrotate's copytruncate; a line written once the burst is over cannot.)
    wait_until(lambda: "done" in fast_host.logs("chatty", 1), timeout=30, what="all output written")

    def on_disk():
        return sum(os.path.getsize(x) for x in (log, f"{log}.1") if os.path.exists(x))

    wait_until(lambda: on_disk() <= 2 * cap, timeout=5, what="the log to be rotated under its cap")
    assert 60000 * 72 > 50 * cap  # it really wrote far more than the cap
    tail = fast_host.logs("chatty", 5).splitlines()
    assert tail[-1] == "done" and len(tail) == 5 and tail[0].startswith("line 05")


def test_follow_streams_new_output(host):
    host.run("ticker", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.1; done; sleep 300", shell=True)
    seen = ""
    for chunk in host.follow("ticker", n=1):
        seen += chunk
        if "tick 5" in seen:
            break
    assert "tick 4" in seen and "tick 5" in seen


# --- port diagnosis -----------------------------------------------------------------------


def test_a_taken_port_names_its_holder(host):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(PortInUse) as info:
            host.run("web", web(port), ready=f"port:{port}")
        assert time.monotonic() - t0 < 5
        msg = str(info.value)
        assert msg.startswith(f"port {port} is already taken by pid {os.getpid()} (") and "\n" not in msg
    assert "web" not in host


def test_a_port_held_by_a_provider_of_this_host(host):
    port = free_port()
    first = host.run("web", web(port), ready=f"port:{port}")
    with pytest.raises(PortInUse, match=f"port {port} is already taken by provider 'web' of this host, pid {first.pid}"):
        host.run("web2", web(port), ready=f"http://127.0.0.1:{port}/")
    assert first.state == "running"


def test_a_port_held_by_a_leftover_of_a_dead_host_suggests_reap(host, state_dir, tmp_path):
    port = free_port()
    owner = Owner(state_dir, tmp_path, f"h.run('web', {web(port)!r})")
    wait_until(lambda: _ready.port_open(port), what="the other host's server")
    os.kill(owner.proc.pid, signal.SIGSTOP)  # a double fault: frozen, the owner cannot replace its watchdog
    os.kill(owner.watchdog, signal.SIGKILL)  # double fault: nothing will stop it by itself
    wait_until(lambda: not alive(owner.watchdog), what="watchdog gone")
    owner.kill()
    with pytest.raises(PortInUse) as e:
        host.run("web", web(port), ready=f"port:{port}")
    msg = str(e.value)
    assert f"a leftover of dead host {owner.host_id} (provider 'web')" in msg and "reap" in msg
    report = hostconsole.reap(state_dir=state_dir)
    assert report.found >= 1 and not _ready.port_open(port)
    assert host.run("web", web(port), ready=f"port:{port}").state == "running"


def test_a_port_held_by_a_dying_leftover_is_waited_for(host, state_dir, tmp_path):
    """The restarted kernel's case: the old host's watchdog is still stopping its server."""
    port = free_port()
    slow_exit = [PY, "-c", (
        "import signal, socket, sys, time\n"
        f"s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port})); s.listen()\n"
        "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1.0), sys.exit(0)))\n"
        "while True: time.sleep(1)\n")]
    owner = Owner(state_dir, tmp_path, f"h.run('web', {slow_exit!r})")
    wait_until(lambda: _ready.port_open(port), what="the old server")
    owner.kill()  # the old host dies; its watchdog takes ~1 s to stop the server
    p = host.run("web", web(port), ready=f"port:{port}")
    assert p.state == "running"
    wait_until(lambda: not marked(owner.host_id), what="the old host's processes to be gone")


# --- regressions ----------------------------------------------------------------------------


def test_purge_timeout_bounds_the_whole_purge_not_each_level(host):
    """Regression: the timeout capped each level, so a chain of dependent providers that
    ignore SIGTERM could outlast the 2.5 s a kernel has to shut down."""
    stubborn = "trap '' TERM; echo ready; sleep 300 & wait"
    host.run("a", stubborn, shell=True)
    host.run("b", stubborn, shell=True, requires="a")
    host.run("c", stubborn, shell=True, requires="b")
    for n in "abc":  # (the trap is set once it says so)
        wait_until(lambda: "ready" in host.logs(n), what=f"{n}'s trap")
    t0 = time.monotonic()
    report = host.purge(timeout=1.0)
    elapsed = time.monotonic() - t0
    assert [r["name"] for r in report] == ["c", "b", "a"]
    assert {r["outcome"] for r in report} == {"killed"}
    assert elapsed < 2.5, elapsed  # one second in all, not three (nor fifteen)


def test_follow_loses_nothing_written_while_it_starts(host):
    """Regression: output written between reading the tail and measuring the log was lost."""
    host.run("counter", [PY, "-c", "import time\nfor i in range(100000):\n    print(i, flush=True)\n"
                                   "    time.sleep(0.0002)\ntime.sleep(300)"])
    wait_until(lambda: host.logs("counter", 1).strip(), what="output")
    numbers = []
    buffer = ""
    for chunk in host.follow("counter", n=3):
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        numbers.extend(int(x) for x in lines if x.strip())
        if len(numbers) > 2000:
            break
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no gap anywhere


# A simulated Ctrl-C lands wherever the main thread is, as a real one does: inside a gc
# callback (hypothesis installs one) Python can only print it as "unraisable"; that
# iteration is then simply not interrupted.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_during_a_start_never_leaves_a_provider_unrecorded(host):
    """Regression: an interrupt while waiting for the watchdog's spawn reply dropped the
    provider from the table although the watchdog went on to start it."""
    interrupted = 0
    for i in range(30):
        signal.setitimer(signal.ITIMER_REAL, 0.0005 + (i % 10) * 0.0004)
        old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            host.run(f"p{i}", ["sleep", "300"])
            signal.setitimer(signal.ITIMER_REAL, 0)
        except KeyboardInterrupt:
            interrupted += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

        def all_known():
            known = {p.main for p in host._providers.values() if p.main is not None}
            return {i for i, m in marked(host.host_id).items() if m.get("HOSTCONSOLE_PROVIDER")} <= known

        wait_until(all_known, timeout=5, what="every running provider process to be one the host knows")
    print(f"\n{interrupted} of 30 starts interrupted")


def test_progress_is_called_without_the_host_lock(host):
    """Regression: the callback ran with the host's lock held; a slow display stalled the
    watchdog's reader (and anything else needing the lock)."""
    answered = []

    def progress(elapsed, what):
        t = threading.Thread(target=lambda: answered.append(host.status()))
        t.start()
        t.join(2)

    host.run("svc", "sleep 0.8; echo ok; sleep 300", shell=True, ready="log:ok", progress=progress)
    assert answered  # another thread got the lock while progress ran
