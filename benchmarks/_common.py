"""Shared plumbing: process identity from /proc, environment scans, bounded waits, and
cleanup by pid.  Standard library only (the owner and memory scripts import it too)."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

TAG_VAR = "HCBENCH_TAG"  # every process of a run carries HCBENCH_TAG=<run token>
CRASH_VAR = "HCBENCH_CRASH"  # the trees of one crash repetition (baseline and peers)

# The crash scenario's provider: a background grandchild in the group and an escapee in
# its own session (setsid: not a group leader, so it does not fork again).
CRASH_TREE = "sleep 300 & setsid sleep 300 & wait"
# A process that ignores SIGTERM (SIG_IGN survives exec).
TERM_IGNORER = ["/bin/sh", "-c", "trap '' TERM; exec sleep 300"]
SLEEPER = ["sleep", "300"]


class Ident(NamedTuple):
    pid: int
    start: int  # clock ticks since boot: a recycled pid cannot share it


def stat(pid: int) -> Optional[Tuple[str, int, int, int]]:
    """(state, ppid, pgid, start) of a process, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    return rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[19])


def cpu_ns(pid: int) -> int:
    """CPU time a process has used, in ns (its threads' scheduler statistics; 0 if gone)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def ident(pid: int) -> Optional[Ident]:
    st = stat(pid)
    return None if st is None else Ident(pid, st[3])


def alive(i: Ident) -> bool:
    """True while ``i`` exists and has not ended (a zombie has ended)."""
    st = stat(i.pid)
    return st is not None and st[3] == i.start and st[0] not in ("Z", "X")


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def env_value(pid: int, key: str) -> Optional[str]:
    data = b"\0" + environ(pid)
    k = b"\0" + key.encode() + b"="
    i = data.find(k)
    if i < 0:
        return None
    j = data.find(b"\0", i + len(k))
    return data[i + len(k): j if j >= 0 else None].decode(errors="replace")


def scan(key: str, value: Optional[str] = None, also: Optional[str] = None) -> List[Ident]:
    """Live processes whose environment has ``key`` (``=value`` if given; and the variable
    ``also`` if given), except this process."""
    me = os.getpid()
    needle = (b"\0" + key.encode() + b"=" + (value.encode() + b"\0" if value is not None else b""))
    also_needle = b"\0" + also.encode() + b"=" if also else None
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me:
            continue
        data = b"\0" + environ(pid) + b"\0"
        if needle not in data or (also_needle is not None and also_needle not in data):
            continue
        i = ident(pid)
        if i is not None and alive(i):
            out.append(i)
    return out


def send(i: Ident, sig: int) -> bool:
    """Signal ``i`` only if the pid still names that process (a pidfd ties check and signal)."""
    try:
        fd = os.pidfd_open(i.pid)
    except OSError:
        return False
    try:
        st = stat(i.pid)
        if st is None or st[3] != i.start:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def wait_gone(idents: Iterable[Ident], timeout: float, interval: float = 0.001) -> Tuple[Optional[float], List[Ident]]:
    """Poll until every process in ``idents`` has ended, at most ``timeout`` seconds.

    Returns (seconds it took, or None on timeout; the survivors)."""
    left = [i for i in idents]
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while True:
        left = [i for i in left if alive(i)]
        now = time.perf_counter()
        if not left:
            return now - t0, []
        if now >= deadline:
            return None, left
        time.sleep(interval)


def kill_all(idents: Iterable[Ident], timeout: float = 10.0) -> List[Ident]:
    """SIGKILL each process (by verified pid) and wait for it to end; the ones that did not."""
    idents = list(idents)
    for i in idents:
        send(i, signal.SIGKILL)
    _, left = wait_gone(idents, timeout, 0.005)
    return left


def wait_until(pred, timeout: float, interval: float = 0.005, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def stop_child(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop a direct child (its pid cannot be recycled before we reap it) and reap it."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except OSError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)


def sweep(token: str, timeout: float = 10.0) -> List[Ident]:
    """Kill (by verified pid) every live process of this run; returns what was found."""
    found = scan(TAG_VAR, token)
    if found:
        left = kill_all(found, timeout)
        if left:
            raise RuntimeError(f"processes {[i.pid for i in left]} of this run would not die")
    return found


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_of(pid: int) -> Optional[int]:
    """Resident set size in bytes (from /proc/PID/statm)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def count_crash_tree(key: str, value: str, also: Optional[str] = None) -> Dict[str, int]:
    """How many processes of a crash run exist, and how many of them are ``sleep``s."""
    procs = scan(key, value, also)
    return {"all": len(procs), "sleep": sum(comm(i.pid) == "sleep" for i in procs)}


FILE_CREATE: dict = {}  # directory -> microseconds to create a file there, measured at the start


def file_create_cost(directory: str, n: int = 100) -> float:
    """Median microseconds to create (and close) an empty file in ``directory``: each
    provider's log is one, so a slow file system shows in every start figure."""
    import statistics
    import tempfile as _tempfile

    d = _tempfile.mkdtemp(prefix="create-cost-", dir=directory)
    try:
        costs = []
        for i in range(n):
            t0 = time.perf_counter()
            fd = os.open(os.path.join(d, f"f{i}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
            costs.append((time.perf_counter() - t0) * 1e6)
        return statistics.median(costs)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def warm_bytecode() -> None:
    """Compile, once and untimed, what the interpreters we start will import."""
    subprocess.run([sys.executable, "-c", "import hostconsole, hostconsole._watchdog, hostconsole.ipython, "
                    "IPython, psutil, json, argparse, ctypes"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
