"""Providers' log files: their format, their rotation, and reading them back.

A provider's stdout and stderr go, unbuffered by us, to ``logs/NAME.log`` (the watchdog
opens it with O_APPEND for each spawn).  Every spawn after the first in a log starts with
a header line, so one run's output is never mistaken for another's::

    --- hostconsole: 'web' run 2 started 2026-11-30 17:05:52 UTC ---

Rotation (the watchdog's ``LogGuard`` thread) keeps each log under its cap the way
logrotate's copytruncate does: past the cap, the last ``cap`` bytes become ``NAME.log.1``
and ``NAME.log`` is truncated; providers write with O_APPEND, so they carry on at the new
end.  What a provider writes between the read and the truncate is lost (two system calls).

Threads: ``LogGuard`` runs in the watchdog; ``tail``/``follow`` run in whoever reads.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Generator, Optional, Union

HEADER_PREFIX = b"--- hostconsole: "
CHECK_INTERVAL = 0.1

PathLike = Union[str, "os.PathLike[str]"]


def log_name(provider: str) -> str:
    # Provider names are validated against [A-Za-z0-9][A-Za-z0-9._-]*; this is belt and braces.
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in provider)
    return f"{safe}.log"


def header(name: str, run: int, when: Optional[float] = None) -> bytes:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() if when is None else when))
    return HEADER_PREFIX + f"{name!r} run {run} started {stamp} ---\n".encode()


def open_for_run(path: str, name: str, run: int) -> "tuple[int, int]":
    """Open ``path`` for a new run's output (O_APPEND); write the run header if earlier
    output is there.  Returns (fd, offset where this run's output begins)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size > 0:
            data = header(name, run)
            if size and not _ends_with_newline(path, size):
                data = b"\n" + data  # a previous run that died mid-line
            os.write(fd, data)
            size += len(data)
        return fd, size
    except BaseException:
        os.close(fd)
        raise


def _ends_with_newline(path: str, size: int) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) == b"\n"
    except OSError:
        return True


def rotate(path: str, cap: int) -> None:
    """Keep the last ``cap`` bytes (from a whole line on) as ``path.1``; empty ``path``."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        start = max(0, f.tell() - cap)
        f.seek(max(0, start - 1))  # one byte more: is the cut at the start of a line?
        data = f.read(cap + (1 if start else 0))
    # Truncate at once: what a provider writes between our read and the truncate is lost
    # (copytruncate's price), so keep that window to two system calls.
    os.truncate(path, 0)
    if start:
        before, data = data[:1], data[1:]
        if before != b"\n":  # the cut falls inside a line: keep from the next whole one
            nl = data.find(b"\n")
            if 0 <= nl < len(data) - 1:
                data = data[nl + 1:]
    old = path + ".1"
    tmp = f"{old}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, old)


class LogGuard:
    """The watchdog's thread that keeps every registered log under its cap."""

    def __init__(self, finished: threading.Event):
        self._finished = finished
        self._lock = threading.Lock()
        self._caps: Dict[str, int] = {}

    def watch(self, path: str, cap: Optional[int]) -> None:
        if cap:
            with self._lock:
                self._caps[path] = int(cap)

    def run(self) -> None:
        pause = CHECK_INTERVAL
        while not self._finished.wait(pause):
            with self._lock:
                logs = list(self._caps.items())
            rotated = False
            for path, cap in logs:
                try:
                    if os.stat(path).st_size > cap:
                        rotate(path, cap)
                        rotated = True
                except OSError:
                    pass  # deleted under us, or the disk is full: nothing better to do here
            # A provider writing as fast as it can overshoots by what it writes in one
            # pause: look again soon while one is that busy.
            pause = CHECK_INTERVAL / 10 if rotated else CHECK_INTERVAL


# --- reading ------------------------------------------------------------------------------


def size(path: Optional[PathLike]) -> int:
    if path is None:
        return 0
    try:
        return os.stat(path).st_size
    except (OSError, TypeError):
        return 0


def tail(path: PathLike, n: int, end: Optional[int] = None, start: int = 0) -> str:
    """The last ``n`` lines of a log (up to byte ``end``, from byte ``start`` on), read
    from its end (cheap for large logs).  Lines from the rotated ``.1`` file make up for
    a log just rotated, unless ``start`` limits the read to one run's output."""
    if start and size(path) < start:
        start = 0  # rotated since that run began: what is left of it starts at the top
    out = _tail(path, n, end, start)
    have = out.count("\n")
    if have < n and not start:
        out = _tail(f"{os.fspath(path)}.1", n - have) + out
    return out


def _tail(path: PathLike, n: int, end: Optional[int] = None, start: int = 0) -> str:
    if n <= 0:
        return ""
    try:
        f = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError):
        return ""
    with f:
        f.seek(0, os.SEEK_END)
        pos = f.tell() if end is None else min(end, f.tell())
        chunk = 8192
        data = b""
        while pos > start and data.count(b"\n") <= n:
            step = min(chunk, pos - start)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
            chunk *= 2
    lines = data.splitlines()[-n:]
    return b"\n".join(lines).decode("utf-8", errors="replace") + ("\n" if lines else "")


def follow(path_of: Callable[[], Optional[Path]], n: int, poll: float = 0.1,
           sleep: Callable[[float], None] = time.sleep) -> Generator[str, None, None]:
    """The last ``n`` lines, then new output as it is written, for ever.  ``path_of`` is
    asked for the path each round (a provider run again writes to the same file; a log
    rotated or truncated is read again from its start)."""
    path = path_of()
    pos = size(path)  # before the tail is read: nothing written since is lost
    first = tail(path, n, end=pos) if path is not None else ""
    if first:
        yield first
    while True:
        path = path_of() or path
        now = size(path)
        if now < pos:  # rotated or truncated: start over at its beginning
            pos = 0
        if now > pos and path is not None:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read(now - pos)
            pos += len(data)
            yield data.decode("utf-8", errors="replace")
        else:
            sleep(poll)


# --- the previous host's logs -------------------------------------------------------------

PREVIOUS = "previous"
PREVIOUS_MAX_AGE = 7 * 24 * 3600.0


def previous_dir(state_dir: PathLike, key: str) -> str:
    return os.path.join(os.fspath(state_dir), PREVIOUS, key)


def keep_previous(host_dir: PathLike, state_dir: PathLike, key: str) -> None:
    """Keep a host's logs as the previous logs of ``key`` (its owner: a kernel's id
    survives its restarts): each provider's log replaces the one kept of that name before,
    the others stay; what is older than a week goes.  So after Restart Kernel, why
    postgres died can still be read -- even after a restart that ran no postgres."""
    import shutil

    logs = os.path.join(os.fspath(host_dir), "logs")
    base = os.path.join(os.fspath(state_dir), PREVIOUS)
    dest = os.path.join(base, key)
    try:
        names = [n for n in os.listdir(logs) if n.endswith(".log")]
    except OSError:
        return
    try:
        if names:
            os.makedirs(dest, mode=0o700, exist_ok=True)
        for n in names:
            for old in (os.path.join(dest, n), os.path.join(dest, n + ".1")):
                if os.path.lexists(old):
                    os.unlink(old)  # (the older run's rotated part must not pass for this one's)
            os.replace(os.path.join(logs, n), os.path.join(dest, n))
            if os.path.exists(os.path.join(logs, n + ".1")):
                os.replace(os.path.join(logs, n + ".1"), os.path.join(dest, n + ".1"))
        now = time.time()
        for other in os.listdir(base):
            d = os.path.join(base, other)
            for f in os.listdir(d) if os.path.isdir(d) else []:
                if now - os.lstat(os.path.join(d, f)).st_mtime > PREVIOUS_MAX_AGE:
                    os.unlink(os.path.join(d, f))
            if not os.listdir(d):
                shutil.rmtree(d, ignore_errors=True)
    except OSError:
        pass  # (keeping them is a courtesy: never a reason for a shutdown to fail)


def find_previous(state_dir: PathLike, key: str, name: str, exclude: Optional[str] = None) -> Optional[str]:
    """The log of provider ``name`` of ``key``'s previous host: of a host of that key that
    is no longer alive but whose entry is still there (its watchdog may still be stopping
    what it left), the newest; else the logs kept at its shutdown."""
    from . import registry

    newest: Optional[str] = None
    newest_started = -1.0
    for rec in registry.read_all(Path(state_dir)):
        if rec.host_id == exclude or rec.log_key != key or rec.alive:
            continue
        path = os.path.join(os.fspath(rec.dir), "logs", log_name(name))
        if os.path.exists(path) and (rec.started or 0.0) > newest_started:
            newest, newest_started = path, rec.started or 0.0
    if newest is not None:
        return newest
    path = os.path.join(previous_dir(state_dir, key), log_name(name))
    return path if os.path.exists(path) else None
