"""Small helpers the tests share: polling waits and looking at real processes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from hostconsole import _proc


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def popen_marked(argv, markers, **kwargs):
    """``subprocess.Popen`` of ``argv`` with ``markers`` added to the environment, returned
    once the markers can be read: Popen returns when the exec has begun, and the kernel
    shows the new program's environment a moment later (a scan in between sees none)."""
    import subprocess

    p = subprocess.Popen(argv, env={**os.environ, **markers}, start_new_session=True, **kwargs)
    try:
        wait_until(lambda: _proc.markers(p.pid).get("HOSTCONSOLE_HOST") == markers["HOSTCONSOLE_HOST"],
                   what=f"the markers of pid {p.pid} to be readable")
    except BaseException:
        p.kill()
        p.wait()
        raise
    return p


def marked(host_id=None):
    """Processes of this user carrying HOSTCONSOLE_HOST (of ``host_id``, if given)."""
    uid = os.getuid()
    out = {}
    for pid in _proc.all_pids():
        if pid == os.getpid() or _proc.owner_uid(pid) != uid:
            continue
        m = _proc.markers(pid)
        hid = m.get("HOSTCONSOLE_HOST")
        if hid and (host_id is None or hid == host_id):
            st = _proc.stat(pid)
            if st is not None and not st.dead:
                out[st.ident] = m
    return out


def alive(pid_or_ident):
    if isinstance(pid_or_ident, _proc.ProcId):
        return _proc.alive(pid_or_ident)
    st = _proc.stat(pid_or_ident)
    return st is not None and not st.dead


def read_pids(path, count=1, timeout=10.0):
    """Wait for ``path`` to hold ``count`` pids (one per line) and return them."""
    p = Path(path)

    def ready():
        try:
            lines = [l for l in p.read_text().split() if l.strip()]
        except FileNotFoundError:
            return None
        return [int(x) for x in lines] if len(lines) >= count else None

    return wait_until(ready, timeout, what=f"{count} pid(s) in {path}")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Owner:
    """A separate process that owns a host, for tests that kill the owner.

    ``body`` is Python run with ``h`` bound to a started ``hostconsole.Host(state_dir)``;
    once it has run, the owner reports the host id and watchdog pid and waits to be killed.
    """

    def __init__(self, state_dir, tmp_path, body: str):
        import json
        import subprocess
        import sys
        import textwrap

        out = Path(tmp_path) / f"owner-{time.monotonic_ns()}.json"
        script = (
            "import hostconsole, json, os, sys, time\n"
            f"h = hostconsole.Host({str(state_dir)!r}).start()\n"
            + textwrap.dedent(body) + "\n"
            f"json.dump({{'host': h.host_id, 'watchdog': h.status()['watchdog_pid']}}, open({str(out)!r} + '.tmp', 'w'))\n"
            f"os.rename({str(out)!r} + '.tmp', {str(out)!r})\n"
            "time.sleep(600)\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", script])
        wait_until(lambda: out.exists() or self.proc.poll() is not None, timeout=60, what="the owner to start")
        assert self.proc.poll() is None, "the owner script failed"
        info = json.loads(out.read_text())
        self.host_id, self.watchdog = info["host"], info["watchdog"]

    def kill(self):
        self.proc.kill()
        self.proc.wait()


# --- system programs some tests need (installed by tests/install-system-packages) -----------


def which(name):
    """A finder for ``require_binary``: ``name`` on PATH, or None."""
    import shutil

    return lambda: shutil.which(name)


def postgres_bindir():
    """The directory holding ``postgres`` and ``initdb`` (Debian: /usr/lib/postgresql/N/bin,
    the newest N; else wherever PATH's ``postgres`` really lives), or None."""
    import glob
    import shutil

    def ok(d):
        return all(os.access(os.path.join(d, b), os.X_OK) for b in ("postgres", "initdb"))

    def version(d):
        v = Path(d).parent.name
        return int(v) if v.isdigit() else -1

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if ok(d):
            return d
    found = shutil.which("postgres")
    if found:
        d = os.path.dirname(os.path.realpath(found))
        if ok(d):
            return d
    return None


def require_binary(name, finder, package=None):
    """What ``finder()`` finds (a path), or one loud line: the test is skipped -- or, under
    ``CI=true``, fails, since CI installs every package the suite uses.

    ``finder`` is a callable returning a path or None (``which("chromedriver")``,
    ``postgres_bindir``); ``package`` is the Debian package that provides ``name``.
    """
    import pytest

    found = finder()
    if found:
        return found
    line = (f"MISSING {name}: apt-get install {package or name} "
            f"(tests/install-system-packages does it as root); the tests that need it cannot run")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(line + " -- and CI=true, so this fails the run", pytrace=False)
    pytest.skip(line)


def magic(shell, line):
    return shell.run_line_magic("host", line)


def sigint_after(seconds):
    """Ctrl-C, as the terminal or the notebook's interrupt button delivers it to this process."""
    import threading

    t = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    return t


PIDS_CGROUP = "/sys/fs/cgroup/pids"


def pids_cgroup_usable() -> bool:
    """A cgroup v1 pids controller this process may make cgroups in (root on v1/hybrid)."""
    return os.access(os.path.join(PIDS_CGROUP, "cgroup.procs"), os.W_OK) and os.access(PIDS_CGROUP, os.W_OK)


class PidsCgroup:
    """A pids cgroup of the test's own, to bound (or exhaust) how many tasks some processes
    may have; on leaving, its tasks go back to the root and it is removed."""

    def __init__(self):
        import pathlib

        self.root = pathlib.Path(PIDS_CGROUP)
        self.path = self.root / f"hostconsole-test-{os.getpid()}-{time.monotonic_ns()}"

    def __enter__(self):
        self.path.mkdir()
        return self

    def join(self, *pids):
        """Move every thread of ``pids`` in (what they fork afterwards is born inside)."""
        for pid in pids:
            for tid in os.listdir(f"/proc/{pid}/task"):
                (self.path / "tasks").write_text(tid)

    def current(self) -> int:
        return int((self.path / "pids.current").read_text())

    def limit(self, n) -> None:
        (self.path / "pids.max").write_text(str(n))

    def __exit__(self, *exc):
        self.limit("max")
        for tid in (self.path / "tasks").read_text().split():
            try:
                (self.root / "tasks").write_text(tid)
            except OSError:
                pass  # (gone meanwhile)
        wait_until(lambda: not (self.path / "tasks").read_text().split(), timeout=30,
                   what="the test's pids cgroup to empty")
        self.path.rmdir()


# Hierarchies no one in this suite moves processes in (hostconsole fences with freezer or
# the unified hierarchy, the fork-bomb tests bound with pids, and a sandbox may account
# memory by cgroup): in these, a process stays in the cgroup it was born in.
FOLLOW_CONTROLLERS = ("cpuacct", "blkio", "devices", "cpu", "perf_event", "net_cls", "name=systemd")
_MOVED_ELSEWHERE = {"freezer", "pids", "memory"}


class FollowingCgroup:
    """A cgroup v1 this process joins, so that everything it starts from then on, and
    everything that starts, is born in it and stays in it: cleared environment, new session
    and double fork included.  What is left in it besides us is what the run left behind.
    ``open()`` returns None where no such hierarchy may be written (not root, pure cgroup v2):
    the caller then says so."""

    def __init__(self, path: Path, home: Path):
        self.path = path
        self.home = home

    @classmethod
    def open(cls) -> "FollowingCgroup | None":
        from hostconsole import _fence

        for want in FOLLOW_CONTROLLERS:
            for point, fstype, opts in _fence._mounts():
                names = set(opts.split(","))
                if fstype != "cgroup" or want not in names or names & _MOVED_ELSEWHERE:
                    continue
                own = _fence._own_cgroup(False, want)
                if own is None:
                    continue
                home = Path(point + (own if own != "/" else ""))
                path = home / f"hostconsole-tests-{os.getpid()}"
                try:
                    path.mkdir()
                except OSError:
                    continue
                try:
                    (path / "cgroup.procs").write_text(str(os.getpid()))
                    return cls(path, home)
                except OSError:
                    path.rmdir()
        return None

    def others(self) -> "list[int]":
        """Every process in it but us, in cgroups below it too (a nested run's own)."""
        pids = []
        for d, _, _ in os.walk(self.path):
            try:
                pids.extend(int(x) for x in Path(d, "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return [p for p in pids if p != os.getpid()]

    def close(self) -> None:
        try:
            (self.home / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            pass
        try:
            wait_until(lambda: not self.others(), timeout=5, what="the run's cgroup to empty")
            self.path.rmdir()
        except (AssertionError, OSError) as e:
            print(f"\nhostconsole leak guard: cannot remove {self.path}: {e}", file=sys.stderr)
