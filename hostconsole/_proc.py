"""Process identity, the process table, and verified signalling.

A pid alone names nothing: pids are recycled (``pid_max`` is 32768 on many machines).
A process here is named by its ``ProcId``: the pid plus the process's start time, which a
recycled pid cannot share.  Every signal hostconsole sends to a recorded process goes
through ``send`` or ``send_group`` below, which check that identity first; on Linux the
check and the signal are tied together by a pidfd, so there is no window in which the pid
could change hands.

Linux reads ``/proc`` directly (a stop path may scan hundreds of processes several times a
second; psutil objects are too slow for that).  Elsewhere psutil supplies the same facts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Callable, ContextManager, Dict, Iterable, List, NamedTuple, Optional

LINUX = sys.platform.startswith("linux")
MARKER_PREFIX = b"HOSTCONSOLE_"
_TICKS = os.sysconf("SC_CLK_TCK") if LINUX else 100


class ProcId(NamedTuple):
    """A process's identity: pid and start time (clock ticks since boot on Linux)."""

    pid: int
    start: int


class ProcStat(NamedTuple):
    pid: int
    ppid: int
    pgid: int
    sid: int
    start: int
    state: str  # one letter as in ps(1): R, S, D, Z, T, X ...
    cpu: float = 0.0  # CPU seconds used so far (user + system)

    @property
    def ident(self) -> ProcId:
        return ProcId(self.pid, self.start)

    @property
    def dead(self) -> bool:
        # A zombie has ended; only its exit status waits to be collected.
        return self.state in ("Z", "X")


if LINUX:

    def _read(path: str) -> Optional[bytes]:
        # os.open/os.read: about twice as fast as open() for these one-read files, and
        # the stop path and every walk of the process table read thousands of them.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return os.read(fd, 4096)
        except OSError:
            return None
        finally:
            os.close(fd)

    def stat(pid: int) -> Optional[ProcStat]:
        data = _read(f"/proc/{pid}/stat")
        if not data:
            return None
        # comm may contain spaces and parentheses: split at the *last* ')'.
        rest = data[data.rfind(b")") + 2 :].split()
        return ProcStat(pid, int(rest[1]), int(rest[2]), int(rest[3]), int(rest[19]), rest[0].decode(),
                        (int(rest[11]) + int(rest[12])) / _TICKS)

    def children(pid: int) -> List[int]:
        out: List[int] = []
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return out
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    out.extend(int(c) for c in f.read().split())
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
        return out

    def all_pids() -> List[int]:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]

    def markers(pid: int) -> Dict[str, str]:
        """The ``HOSTCONSOLE_*`` variables in a process's environment ({} if unreadable)."""
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                data = f.read()
        except OSError:
            return {}
        if MARKER_PREFIX not in data:
            return {}
        out = {}
        for item in data.split(b"\0"):
            if item.startswith(MARKER_PREFIX) and b"=" in item:
                k, _, v = item.partition(b"=")
                out[k.decode(errors="replace")] = v.decode(errors="replace")
        return out

    def owner_uid(pid: int) -> Optional[int]:
        try:
            return os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return None

    def output_of(pid: int) -> Optional[str]:
        """The file a process's stdout (else stderr) is, if it is one (a log, say)."""
        for fd in (1, 2):
            try:
                path = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if path.startswith("/"):
                return path
        return None

    def environ_readable(pid: int) -> bool:
        """False for a process whose environment is gone (in exit) or not ours to read."""
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return bool(f.read(1))
        except OSError:
            return False

else:  # macOS and other POSIX: psutil supplies what /proc would.
    import psutil

    _STATE = {"zombie": "Z", "dead": "X", "stopped": "T", "running": "R", "disk-sleep": "D"}

    def stat(pid: int) -> Optional[ProcStat]:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                ppid, created, status, times = p.ppid(), p.create_time(), p.status(), p.cpu_times()
            return ProcStat(pid, ppid, os.getpgid(pid), os.getsid(pid), int(created * 1e6), _STATE.get(status, "S"),
                            times.user + times.system)
        except (psutil.Error, OSError):
            return None

    def children(pid: int) -> List[int]:
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []

    def all_pids() -> List[int]:
        return list(psutil.pids())

    def markers(pid: int) -> Dict[str, str]:
        try:
            env = psutil.Process(pid).environ()
        except psutil.Error:
            return {}
        return {k: v for k, v in env.items() if k.startswith("HOSTCONSOLE_")}

    def owner_uid(pid: int) -> Optional[int]:
        try:
            return int(psutil.Process(pid).uids().real)
        except psutil.Error:
            return None

    def output_of(pid: int) -> Optional[str]:
        return None

    def environ_readable(pid: int) -> bool:
        try:
            return bool(psutil.Process(pid).environ())
        except psutil.Error:
            return False


if LINUX:

    _NS_PER_TICK = 10**9 // _TICKS

    def now_stamp() -> int:
        """Now, in the units of ``ProcId.start`` (clock ticks since boot), exactly as the
        kernel counts a process's start: whole ticks of CLOCK_BOOTTIME, rounded down."""
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // _NS_PER_TICK

    _pid_max: List[int] = []

    def last_pid() -> Optional[int]:
        """The pid our pid namespace gave out last (pids are given out in turn, wrapping at
        ``pid_max``): with it, of two processes started in the same clock tick, the one
        born before a moment is told from the one born after it."""
        try:
            with open("/proc/loadavg", "rb") as f:
                return int(f.read().split()[4])
        except (OSError, ValueError, IndexError):
            return None

    def born_by(pid: int, last: Optional[int]) -> bool:
        """Whether ``pid`` was given out no later than ``last`` (a ``last_pid()``)."""
        if last is None:
            return False
        if not _pid_max:
            try:
                with open("/proc/sys/kernel/pid_max", "rb") as f:
                    _pid_max.append(int(f.read()))
            except (OSError, ValueError):
                _pid_max.append(1 << 22)
        return (last - pid) % _pid_max[0] < _pid_max[0] // 2

else:

    def now_stamp() -> int:
        return int(time.time() * 1e6)

    def last_pid() -> Optional[int]:
        return None

    def born_by(pid: int, last: Optional[int]) -> bool:
        return False


def identity(pid: int) -> Optional[ProcId]:
    st = stat(pid)
    return None if st is None else st.ident


def spawned_identity(pid: int, before: int, after: int) -> Optional[ProcId]:
    """The identity of a child just spawned, given ``now_stamp()`` read right before and
    right after the spawn.  A process's start time is the tick in which it was cloned, so
    if both readings fall in one tick, that tick is its start time -- no need to read its
    /proc entry, which blocks until its exec has finished (~0.2 ms here).  Otherwise (a
    spawn that crossed a tick boundary), read it."""
    if LINUX and before == after:
        return ProcId(pid, before)
    return identity(pid)


def alive(ident: ProcId) -> bool:
    """True while the process ``ident`` exists and has not ended (zombies count as ended)."""
    st = stat(ident.pid)
    return st is not None and st.start == ident.start and not st.dead


def snapshot() -> Dict[int, ProcStat]:
    """Every process we can see, by pid."""
    out = {}
    for pid in all_pids():
        st = stat(pid)
        if st is not None:
            out[pid] = st
    return out


def descendants(roots: Iterable[int], table: Optional[Dict[int, ProcStat]] = None) -> Dict[int, ProcStat]:
    """Live descendants of ``roots`` (roots included), walking parent links.

    Without ``table`` it follows ``/proc/PID/task/*/children``, which costs only the size
    of the tree; with a full ``snapshot()`` it uses the parent pids in it.
    """
    found: Dict[int, ProcStat] = {}
    if table is not None:
        kids: Dict[int, List[int]] = {}
        for st in table.values():
            kids.setdefault(st.ppid, []).append(st.pid)
        todo = [r for r in roots if r in table]
        while todo:
            pid = todo.pop()
            if pid not in found:
                found[pid] = table[pid]
                todo.extend(kids.get(pid, ()))
        return found
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        seen = stat(pid)
        if seen is None:
            continue
        found[pid] = seen
        todo.extend(children(pid))
    return found


# --- verified signalling -------------------------------------------------------------

_HAVE_PIDFD = LINUX and hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


def send(ident: ProcId, sig: int) -> bool:
    """Send ``sig`` to the process ``ident`` if it is still that process.

    Returns True if the signal was delivered.  A recycled pid, a vanished process or a
    process we may not signal is simply not signalled (False), never an exception.
    """
    if _HAVE_PIDFD:
        try:
            fd = os.pidfd_open(ident.pid)
        except OSError:
            return False
        try:
            # The pidfd names whichever process held the pid when it was opened; if that
            # process still has ident's start time now, the pidfd is ident.
            st = stat(ident.pid)
            if st is None or st.start != ident.start:
                return False
            signal.pidfd_send_signal(fd, sig)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
    st = stat(ident.pid)
    if st is None or st.start != ident.start:
        return False
    try:
        os.kill(ident.pid, sig)
        return True
    except OSError:
        return False


def send_group(pgid: int, witness: ProcId, *sigs: int, own_child: bool = False) -> bool:
    """Signal process group ``pgid`` (with each of ``sigs``, in order) if ``witness``, a
    process we recorded, is still in it.

    A process group id stays allocated while any member exists, so a verified living
    member proves the group is still the one we created.  ``own_child``: the caller knows
    ``witness`` is its own child, leader of group ``pgid`` (a session leader cannot leave
    its group), not yet reaped and not reapable meanwhile (it holds what the reaper needs):
    its pid cannot have been recycled, so there is nothing to read to prove it.
    """
    if not own_child:
        st = stat(witness.pid)
        if st is None or st.start != witness.start or st.pgid != pgid:
            return False
    try:
        for sig in sigs:
            os.killpg(pgid, sig)
        return True
    except OSError:
        return False


def listening_sockets() -> Dict[int, int]:
    """socket inode -> port, for every listening TCP socket of the machine (any address).
    Costly (~4 ms here: the kernel walks its whole connection hash): read it once per look."""
    out: Dict[int, int] = {}
    if not LINUX:
        return out
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, "rb") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 9 and parts[3] == b"0A":  # TCP_LISTEN
                        out[int(parts[9])] = int(parts[1].rsplit(b":", 1)[1], 16)
        except (OSError, ValueError, IndexError):
            pass
    return out


def stamp_to_seconds(ticks: int) -> float:
    """A span in the units of ``ProcId.start`` (and ``now_stamp``), in seconds."""
    return ticks / _TICKS if LINUX else ticks / 1e6


def wait_gone(idents: Iterable[ProcId], timeout: float,
              trusted: Callable[[ProcId], bool] = lambda ident: False,
              opening: ContextManager[object] = contextlib.nullcontext()) -> None:
    """Return once every process of ``idents`` has ended (or ``timeout`` has passed).

    With pidfds the wait ends the moment the last one ends, not at the next poll tick:
    a stop of 50 processes is not a multiple of a sleep.  ``trusted(ident)``, asked while
    ``opening`` is held: the caller vouches that the pid is still that process (its own
    unreaped child, and ``opening`` holds off its reaping), so its pidfd needs no check
    against /proc -- a read that, while 50 processes exit on 2 cores, costs more than
    the rest of the wait."""
    if not _HAVE_PIDFD:
        time.sleep(max(0.0, timeout))
        return
    import select

    deadline = time.monotonic() + max(0.0, timeout)
    poller = select.poll()
    fds: Dict[int, int] = {}
    try:
        with opening:
            for ident in idents:
                try:
                    fd = os.pidfd_open(ident.pid)
                except OSError:
                    continue  # gone already
                fds[fd] = ident.pid
                if not trusted(ident):
                    st = stat(ident.pid)
                    if st is None or st.start != ident.start or st.dead:
                        del fds[fd]
                        os.close(fd)
                        continue
                poller.register(fd, select.POLLIN)
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
    finally:
        for fd in fds:
            os.close(fd)


def signal_name(sig: Optional[int]) -> Optional[str]:
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


class CpuSampler:
    """CPU % of processes over the interval since each was last sampled.

    The previous reading of each process is kept between calls; a process seen for the
    first time is judged over its life so far (its CPU time over its age), which is
    true, not 0.0, on the first look.  Readings closer together than ``MIN_INTERVAL``
    keep the earlier base, so a burst of calls does not measure noise."""

    MIN_INTERVAL = 0.2

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._base: Dict[ProcId, "tuple[float, float]"] = {}  # ident -> (when, cpu seconds)
        self._last: Dict[ProcId, float] = {}

    def percent(self, stats: Iterable[ProcStat]) -> Dict[ProcId, float]:
        now = self._clock()
        stamp = now_stamp()
        out: Dict[ProcId, float] = {}
        for st in stats:
            ident = st.ident
            base = self._base.get(ident)
            if base is None:
                age = stamp_to_seconds(stamp - st.start)
                pct = 100.0 * st.cpu / age if age > 0 else 0.0
                self._base[ident] = (now, st.cpu)
            elif now - base[0] >= self.MIN_INTERVAL:
                pct = 100.0 * max(0.0, st.cpu - base[1]) / (now - base[0])
                self._base[ident] = (now, st.cpu)
            else:
                pct = self._last.get(ident, 0.0)
            self._last[ident] = pct
            out[ident] = round(pct, 1)
        return out

    def forget_all_but(self, live: Iterable[ProcId]) -> None:
        keep = set(live)
        for d in (self._base, self._last):
            for k in [k for k in d if k not in keep]:
                del d[k]
