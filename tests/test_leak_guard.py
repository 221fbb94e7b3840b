"""The suite's own leak guard (conftest.py), checked on a run of its own: a test that
leaves a process behind fails the run, even a process with no marker at all."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import alive, read_pids, wait_until

from hostconsole import _proc

HERE = Path(__file__).resolve().parent

LEAKY = """
import subprocess

def test_leaves_an_env_cleared_double_forked_daemon(tmp_path):
    subprocess.run(["bash", "-c", "(env -i setsid bash -c 'echo $$ > {pidfile}; exec sleep 1000' &)"], check=True)
"""


def test_the_leak_guard_fails_a_run_that_leaves_an_unmarked_daemon(tmp_path):
    """Regression: the guard looked only for processes carrying a HOSTCONSOLE_HOST marker,
    so a daemon that cleared its environment (what the ownership tests start on purpose)
    outlived a failing test unnoticed."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("conftest.py", "helpers.py"):
        shutil.copy(HERE / name, run / name)
    pidfile = tmp_path / "daemon"
    (run / "test_leaky.py").write_text(LEAKY.format(pidfile=pidfile))
    env = dict(os.environ, HOSTCONSOLE_TEST_LEAK_WAIT="0.5")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(run / "test_leaky.py")],
                         cwd=run, env=env, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    (daemon,) = read_pids(pidfile)
    if "no cgroup v1 hierarchy to follow" in text:
        ident = _proc.identity(daemon)  # (ours: it wrote its pid to our file; without a cgroup, nothing else can tell)
        if ident is not None:
            _proc.send(ident, signal.SIGKILL)
        pytest.skip("no cgroup v1 hierarchy to follow processes in (needs root on cgroup v1 or hybrid)")
    assert out.returncode == 1, text
    assert "1 passed" in text and f"pid {daemon} (unmarked)" in text and "outlived the suite: FAILED" in text, text
    wait_until(lambda: not alive(daemon), timeout=5, what="the guard to have killed the daemon")
