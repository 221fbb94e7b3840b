"""Fences: a cgroup per provider run, where the system lets us make one.

A fence is membership that a process cannot leave by clearing its environment, changing
its session or double-forking: the kernel's, not ours.  Where one is in force, a
provider's members are exactly the processes of its *cell* (its cgroup), a stop can
freeze the cell before killing it (a forking tree cannot refill), and reap finds a dead
host's processes by its cells, whatever they did to their markers.

Mechanisms, in the order ``detect`` tries them (``HOSTCONSOLE_FENCE`` = ``cgroup1``,
``cgroup2`` or ``none`` forces one):

* ``cgroup1``: the v1 ``freezer`` hierarchy (root on cgroup v1 and hybrid systems).  A
  spawn enters the cell by moving the spawning *thread* in for the spawn and back after
  (``0`` written to ``tasks``: the writer itself, which the kernel moves without its
  global threadgroup lock -- ~15 µs a move; a tid there costs an RCU grace period, ~10 ms,
  at the first move of a burst) -- the child is born inside, before it can run a single
  instruction.
* ``cgroup2``: the unified hierarchy, in a subtree this user may manage (root; or the
  watchdog's own cgroup when it is delegated, as ``systemd-run --user --scope -p
  Delegate=yes`` makes one).  v2 moves whole processes, so the watchdog moves itself in for
  the spawn and back (~0.1 ms a move).  Freeze is ``cgroup.freeze``, kill ``cgroup.kill``.
* ``none``: markers, ancestry under the watchdog (a child subreaper), identities recorded
  as members are seen, and the log file a process still writes to.  What escapes ``stop
  NAME`` without a fence: a process that clears its environment, leaves its session and
  orphans itself (or closes its output) before the watchdog's tracker has seen it.  Purge,
  shutdown and the watchdog still stop it (everything under the watchdog is the host's).

Cells live at ``ROOT/hostconsole/HOST_ID/NAME.RUN``.  Threads: the watchdog's main thread
(spawns) and its stop threads; every operation that would freeze or kill a cell holds the
watchdog's ``spawn_lock``, so a cell is never frozen while the watchdog sits in it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from . import _proc

SUBTREE = "hostconsole"
FREEZE_TIMEOUT = 2.0


def _mounts() -> List[Tuple[str, str, str]]:
    """(mount point, fs type, super options) of every cgroup mount."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fields, tail = pre.split(), post.split()
                if len(fields) > 4 and tail and tail[0] in ("cgroup", "cgroup2"):
                    out.append((fields[4].replace("\\040", " "), tail[0], tail[2] if len(tail) > 2 else ""))
    except OSError:
        pass
    return out


def _own_cgroup(v2: bool, controller: str = "") -> Optional[str]:
    """This process's cgroup path in the unified hierarchy, or in v1 ``controller``'s."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                hid, ctrls, path = line.rstrip("\n").split(":", 2)
                if v2 and hid == "0" and ctrls == "":
                    return path
                if not v2 and controller in ctrls.split(","):
                    return path
    except OSError:
        pass
    return None


class Cell:
    """One provider run's cgroup."""

    def __init__(self, fence: "Fence", path: Path):
        self.fence = fence
        self.path = path
        self._procs = str(path / "cgroup.procs")

    def __repr__(self) -> str:
        return f"<cell {self.path}>"

    def pids(self) -> List[int]:
        try:
            fd = os.open(self._procs, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return []
        try:
            data = b""
            while True:  # (a fork bomb's cell can hold more than one read)
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
            return [int(x) for x in data.split()]
        except (OSError, ValueError):
            return []
        finally:
            os.close(fd)

    def freeze(self) -> bool:
        """Freeze every member (a forking tree stops growing); True once all are frozen."""
        return self.fence._freeze(self, True)

    def thaw(self) -> None:
        self.fence._freeze(self, False)

    def kill(self) -> None:
        """SIGKILL every member: frozen first, so none can fork while it happens."""
        self.fence._kill(self)

    def remove(self) -> bool:
        """Remove the cell if it is empty (a cgroup with members cannot be removed)."""
        try:
            os.rmdir(self.path)
            return True
        except OSError:
            return False


class Fence:
    """A cgroup hierarchy we may make cells in (``kind``), or none (``NoFence``)."""

    kind = "none"

    def __init__(self, root: Optional[Path] = None, home: Optional[Path] = None):
        self.root = root  # where this host's cells go: ROOT/hostconsole/HOST_ID
        self.home = home  # the cgroup the watchdog lives in (v2) or its threads (v1)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return {"cgroup1": "a cgroup per provider (v1 freezer)", "cgroup2": "a cgroup per provider (v2)",
                "none": "markers, ancestry and recorded identities (no cgroup)"}[self.kind]

    def for_host(self, host_id: str) -> "Fence":
        if self.root is None:
            return self
        return type(self)(self.root / host_id, self.home)

    def cell(self, name: str, run: int) -> Optional[Cell]:
        if self.root is None:
            return None
        path = self.root / f"{name}.{run}"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return Cell(self, path)

    def cell_at(self, path: str) -> Optional[Cell]:
        """The cell a record names, if it is one of this host's cells and still there (a
        record cannot point reap at any other cgroup)."""
        p = Path(path)
        if self.root is None or p.parent != self.root or not p.is_dir():
            return None
        return Cell(self, p)

    def enter(self, cell: Cell) -> None:
        """Put the spawning thread (v1) or process (v2) into ``cell`` for a spawn."""
        self._enter(cell)

    def leave(self) -> None:
        """Back home after the spawn."""
        self._leave()

    def _enter(self, cell: Cell) -> None:
        pass

    def _leave(self) -> None:
        pass

    def remove_host(self) -> None:
        """Remove this host's (empty) cells and its directory."""
        if self.root is None:
            return
        try:
            names = os.listdir(self.root)
        except OSError:
            return
        for n in names:
            p = self.root / n
            if p.is_dir():
                try:
                    os.rmdir(p)
                except OSError:
                    pass
        try:
            os.rmdir(self.root)
        except OSError:
            pass

    def _freeze(self, cell: Cell, on: bool) -> bool:
        return False

    def _kill(self, cell: Cell) -> None:
        for pid in cell.pids():
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)  # (cgroup membership is the identity here)
                except OSError:
                    pass


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _set_and_wait(path: Path, value: Optional[str], done: Optional[Callable[[str], bool]]) -> bool:
    """Write ``value`` to ``path`` (if any), then poll ``path`` until ``done`` says so (a
    freeze: the kernel stops the tasks one by one), at most FREEZE_TIMEOUT."""
    try:
        if value is not None:
            _write(path, value)
        if done is None:
            return True
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while not done(path.read_text()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)  # (a poll of a state the kernel is reaching; bounded above)
        return True
    except OSError:
        return False


class CgroupV1(Fence):
    kind = "cgroup1"

    def _enter(self, cell: Cell) -> None:
        _write(cell.path / "tasks", "0")

    def _leave(self) -> None:
        if self.home is not None:
            _write(self.home / "tasks", "0")

    def _freeze(self, cell: Cell, on: bool) -> bool:
        return _set_and_wait(cell.path / "freezer.state", "FROZEN" if on else "THAWED",
                             (lambda text: text.strip() == "FROZEN") if on else None)

    def _kill(self, cell: Cell) -> None:
        frozen = cell.freeze()
        super()._kill(cell)
        if frozen:
            cell.thaw()  # SIGKILL acts as they thaw: none runs another instruction


class CgroupV2(Fence):
    kind = "cgroup2"

    def _enter(self, cell: Cell) -> None:
        _write(cell.path / "cgroup.procs", str(os.getpid()))

    def _leave(self) -> None:
        if self.home is not None:
            _write(self.home / "cgroup.procs", str(os.getpid()))

    def _freeze(self, cell: Cell, on: bool) -> bool:
        if not _set_and_wait(cell.path / "cgroup.freeze", "1" if on else "0", None):
            return False
        return not on or _set_and_wait(cell.path / "cgroup.events", None, lambda text: "frozen 1" in text)

    def _kill(self, cell: Cell) -> None:
        try:
            _write(cell.path / "cgroup.kill", "1")
        except OSError:  # no cgroup.kill (kernel < 5.14): freeze, kill each, thaw
            frozen = cell.freeze()
            super()._kill(cell)
            if frozen:
                cell.thaw()


def for_record(kind: Optional[str], host_id: str) -> Optional[Fence]:
    """The fence a (dead) host's registry entry says it used, to find its cells by."""
    if not kind or kind == "none":
        return None
    fence = detect(kind)
    return fence.for_host(host_id) if fence.kind == kind else None


def cells_of(kind: Optional[str], host_id: str) -> List[Cell]:
    """Every cell a (dead) host has left, whatever its entry recorded (any kind, if it
    recorded none: it may have died before it said)."""
    out: List[Cell] = []
    for k in ([kind] if kind and kind != "none" else ["cgroup1", "cgroup2"]):
        fence = for_record(k, host_id)
        if fence is None or fence.root is None:
            continue
        try:
            names = sorted(os.listdir(fence.root))
        except OSError:
            continue
        out.extend(Cell(fence, fence.root / n) for n in names if (fence.root / n).is_dir())
    return out


def remove_host_cells(kind: Optional[str], host_id: str) -> None:
    fence = for_record(kind, host_id)
    if fence is not None:
        fence.remove_host()


def _usable(path: Path) -> bool:
    """Can we make (and remove) a cgroup below ``path``, and move ourselves about in it?"""
    probe = path / f".hostconsole-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    try:
        return os.access(probe / "cgroup.procs", os.W_OK)
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass


def detect(prefer: Optional[str] = None) -> Fence:
    """The strongest fence this process may use (see the module's docstring)."""
    if not _proc.LINUX:
        return Fence()
    want = prefer or os.environ.get("HOSTCONSOLE_FENCE", "auto")
    if want == "none":
        return Fence()
    mounts = _mounts()
    if want in ("auto", "cgroup1"):
        for point, fstype, opts in mounts:
            if fstype == "cgroup" and "freezer" in opts.split(","):
                own = _own_cgroup(False, "freezer")
                home = Path(point + (own if own and own != "/" else ""))
                base = Path(point) / SUBTREE
                if os.access(point, os.W_OK) and (base.is_dir() or _usable(Path(point))):
                    base.mkdir(exist_ok=True)
                    return CgroupV1(base, home)
    if want in ("auto", "cgroup2"):
        for point, fstype, _ in mounts:
            if fstype == "cgroup2":
                own = _own_cgroup(True)
                if own is None:
                    continue
                home = Path(point + (own if own != "/" else ""))
                # Root makes its subtree at the top; anyone else in a delegated cgroup of
                # their own (the watchdog stays in it: no controllers are enabled there).
                for parent in ([Path(point)] if os.geteuid() == 0 else []) + [home]:
                    base = parent / SUBTREE
                    if base.is_dir() or (os.access(parent, os.W_OK) and _usable(parent)):
                        try:
                            base.mkdir(exist_ok=True)
                        except OSError:
                            continue
                        return CgroupV2(base, home)
    return Fence()
