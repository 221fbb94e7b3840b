"""Suite-wide fixtures.

The leak guard is the suite's promise in miniature: after the whole run, no process the
run started may be left.  The run joins a cgroup of its own at the start (``FollowingCgroup``:
a v1 hierarchy nothing here moves processes in), so whatever it starts stays countable,
even a daemon that cleared its environment and double-forked; and no process of this user
may carry a HOSTCONSOLE_HOST marker of this run's state dirs.  Any such process is killed
by pid (identity-checked) and the run fails.  Without a cgroup to join (not root, pure
cgroup v2) only the markers are checked, and the run says so in one line.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import FollowingCgroup, marked, wait_until  # noqa: E402

from hostconsole import _proc  # noqa: E402

# An illegal state move is a bug: fail loudly, here and in every kernel and owner process
# the tests start (they inherit the environment).
os.environ["HOSTCONSOLE_STRICT_STATES"] = "1"

_LEAKS = []
_NOTES = []


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _end_own_helpers():
    """The run's own helpers outlive its last test by design and end with it: end them now.
    multiprocessing's resource tracker (RemoteHost's spawn context starts one) is one."""
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        stop()  # (closes its pipe: it exits, and is waited for)


def _ours(m, base):
    return m.get("HOSTCONSOLE_STATE_DIR", "").startswith(base)


@pytest.fixture(scope="session", autouse=True)
def leak_guard(tmp_path_factory):
    # Every host this session makes keeps its state under the session's base temp dir: a
    # host given no state dir lands in the default below.  That is how the guard tells
    # this run's processes from those of anyone else on the machine (another test run,
    # a developer's kernel), which it must never kill.
    base = str(tmp_path_factory.getbasetemp())
    os.environ["HOSTCONSOLE_STATE_DIR"] = os.path.join(base, "default-state")
    following = FollowingCgroup.open()
    if following is None:
        _NOTES.append("hostconsole leak guard: no cgroup v1 hierarchy to follow this run's processes in "
                      "(needs root on cgroup v1 or hybrid): only marked leftovers were looked for")
    yield
    _end_own_helpers()
    def leftovers():
        return {i: m for i, m in marked().items() if _ours(m, base)}
    def unmarked():
        return following.others() if following is not None else []
    try:
        wait_until(lambda: not leftovers() and not unmarked(), what="the run's processes to end",
                   timeout=float(os.environ.get("HOSTCONSOLE_TEST_LEAK_WAIT", 15)))
    except AssertionError:
        pass
    leaks = leftovers()
    for ident, m in leaks.items():
        _proc.send(ident, signal.SIGKILL)
        _LEAKS.append(f"pid {ident.pid} host={m.get('HOSTCONSOLE_HOST')} provider={m.get('HOSTCONSOLE_PROVIDER')}")
    for pid in unmarked():
        ident = _proc.identity(pid)
        if ident is not None and ident not in leaks:
            cmd = _cmdline(pid)
            _proc.send(ident, signal.SIGKILL)
            _LEAKS.append(f"pid {pid} (unmarked) {cmd}"[:200])
    if following is not None:
        following.close()


def pytest_sessionfinish(session, exitstatus):
    if _LEAKS:
        print("\nLEAKED PROCESSES (killed):\n  " + "\n  ".join(_LEAKS), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    for note in _NOTES:
        terminalreporter.write_line(note, yellow=True, bold=True)
    if _LEAKS:
        terminalreporter.write_line(
            f"hostconsole leak guard: {len(_LEAKS)} process(es) outlived the suite: FAILED", red=True
        )


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    d = tmp_path / "state"
    monkeypatch.setenv("HOSTCONSOLE_STATE_DIR", str(d))
    return d


@pytest.fixture
def host(state_dir):
    """A started host; after the test it is shut down and none of its processes may remain."""
    from hostconsole import Host

    h = Host(state_dir).start()
    host_id = h.host_id
    yield h
    h.shutdown()
    wait_until(lambda: not marked(host_id), timeout=15, what=f"host {host_id}'s processes to end")


# --- real servers (see tests/install-system-packages) ---------------------------------------


@pytest.fixture(scope="session")
def redis_server():
    """Path of redis-server; skips (fails under CI=true) with one loud line when missing."""
    from helpers import require_binary, which

    return require_binary("redis-server", which("redis-server"), package="redis-server")


@pytest.fixture(scope="session")
def postgres_bin():
    """The directory holding postgres, initdb and psql; skips (fails under CI=true) with one
    loud line when missing."""
    from helpers import postgres_bindir, require_binary

    return require_binary("postgres/initdb", postgres_bindir, package="postgresql")


# --- shared by several files: a real IPython shell, kernel specs -----------------------------


@pytest.fixture(scope="session")
def shell(tmp_path_factory):
    """A real InteractiveShell, kept out of the user's ~/.ipython (profile, history database)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    c = Config()
    c.HistoryManager.hist_file = ":memory:"
    return InteractiveShell.instance(config=c, ipython_dir=str(tmp_path_factory.mktemp("ipython")))


@pytest.fixture
def ip(shell, state_dir):
    """The shell with the extension loaded; unloading it afterwards must leave nothing."""
    import hostconsole

    shell.run_line_magic("load_ext", "hostconsole")
    try:
        yield shell
    finally:
        host_id = hostconsole.get_host().host_id
        shell.run_line_magic("unload_ext", "hostconsole")
        if host_id:
            wait_until(lambda: not marked(host_id), timeout=15, what=f"host {host_id}'s processes to end")


@pytest.fixture(scope="session")
def kernels_dir(tmp_path_factory):
    """Kernel specs for jupyter_client: this interpreter's ipykernel, and the same with the
    extension loaded at startup (as an ipython_config.py would)."""
    d = tmp_path_factory.mktemp("kernels")
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    for name, extra in (("hostconsole-test", []), ("hostconsole-test-ext", ["--ext=hostconsole"])):
        (d / name).mkdir()
        (d / name / "kernel.json").write_text(json.dumps({
            "argv": argv + extra, "display_name": name, "language": "python",
        }))
    return d
