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

import bisect
import os
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Generator, List, Mapping, Optional, Tuple, Union

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
    """Open ``path`` for a new run's output (O_APPEND); write the run header if this is
    not the first run, or earlier output is there.  Returns (fd, offset where this run's
    output begins)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size > 0 or run > 1:
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
    """The watchdog's thread that keeps every registered log under its cap, and its time
    index: each time a log has grown, a line ``SIZE TIME`` goes to ``NAME.log.idx``, so a
    line's time is known within a check (0.1 s) -- without the watchdog reading any output
    (a pipe through it would make a chatty provider die with it)."""

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
        seen: Dict[str, int] = {}
        while not self._finished.wait(pause):
            with self._lock:
                logs = list(self._caps.items())
            rotated = False
            now = time.time()
            for path, cap in logs:
                try:
                    size = os.stat(path).st_size
                    if size > cap:
                        rotate(path, cap)
                        _truncate_index(path)
                        seen[path] = 0
                        rotated = True
                    elif size != seen.get(path, -1):
                        if size < seen.get(path, 0):
                            _truncate_index(path)  # truncated by someone else
                        _index(path, size, now)
                        seen[path] = size
                except OSError:
                    pass  # deleted under us, or the disk is full: nothing better to do here
            # A provider writing as fast as it can overshoots by what it writes in one
            # pause: look again soon while one is that busy.
            pause = CHECK_INTERVAL / 10 if rotated else CHECK_INTERVAL


def _index(path: str, size: int, when: float) -> None:
    fd = os.open(path + ".idx", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{size} {when:.3f}\n".encode())
    finally:
        os.close(fd)


def _truncate_index(path: str) -> None:
    try:
        os.truncate(path + ".idx", 0)
    except OSError:
        pass


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
            for suffix in ("", ".1", ".idx"):
                old = os.path.join(dest, n + suffix)
                if os.path.lexists(old):
                    os.unlink(old)  # (the older run's rotated part must not pass for this one's)
                if os.path.exists(os.path.join(logs, n + suffix)):
                    os.replace(os.path.join(logs, n + suffix), old)
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


# --- several logs at once: lines with their times -----------------------------------------

INDEX_READ_MAX = 1 << 20


def _read_index(path: PathLike) -> List[Tuple[int, float]]:
    """(size, time) of a log's index, in order: the log had reached SIZE bytes at TIME."""
    try:
        with open(os.fspath(path) + ".idx", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - INDEX_READ_MAX))
            data = f.read()
    except OSError:
        return []
    out = []
    for line in data.split(b"\n")[1 if len(data) >= INDEX_READ_MAX else 0:]:
        parts = line.split()
        if len(parts) == 2:
            try:
                out.append((int(parts[0]), float(parts[1])))
            except ValueError:
                continue
    return out


def timed_tail(path: PathLike, n: int) -> List[Tuple[Optional[float], str]]:
    """The last ``n`` lines of a log, each with the time it was written by (within a check
    of the watchdog; None where unknown: before the index began, or rotated away)."""
    if n <= 0:
        return []
    try:
        f = open(path, "rb")
    except OSError:
        return []
    with f:
        f.seek(0, os.SEEK_END)
        pos = end = f.tell()
        chunk, data = 8192, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
            chunk *= 2
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    index = _read_index(path)
    sizes = [s for s, _ in index]
    try:
        last_write: Optional[float] = os.stat(path).st_mtime  # (for what came after the last index entry)
    except OSError:
        last_write = None
    out: List[Tuple[Optional[float], str]] = []
    offset = end - len(data)
    for raw in lines:
        offset += len(raw) + 1
        k = bisect.bisect_left(sizes, min(offset, end))
        out.append((index[k][1] if k < len(index) else last_write, raw.decode("utf-8", errors="replace")))
    return out[-n:]


def merged_tail(logs: Mapping[str, PathLike], n: int) -> List[Tuple[Optional[float], str, str]]:
    """The last ``n`` lines of each log, interleaved by time: (time, name, line)."""
    rows: List[Tuple[float, int, int, Optional[float], str, str]] = []
    for k, (name, path) in enumerate(logs.items()):
        last = 0.0
        for i, (t, line) in enumerate(timed_tail(path, n)):
            last = t if t is not None else last  # an unknown time sorts with the line before
            rows.append((last, k, i, t, name, line))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [(t, name, line) for _, _, _, t, name, line in rows]


def follow_all(paths_of: Callable[[], Mapping[str, Optional[Path]]], n: int, poll: float = 0.1,
               sleep: Callable[[float], None] = time.sleep, idle: bool = False,
               from_start: bool = False) -> Generator[Tuple[Optional[str], str], None, None]:
    """The last ``n`` lines of every log (interleaved by time), then each new line of any
    of them as it comes: (name, line), for ever.  New providers are picked up as they
    appear; a log rotated or truncated is read again from its start.  With ``idle``, a
    round with nothing new yields ``(None, "")`` (a caller's chance to look elsewhere).
    With ``from_start``, every log is read from its beginning instead of its last lines."""
    start = {name: 0 if from_start else size(p) for name, p in paths_of().items() if p is not None}
    if not from_start:
        for _, name, line in merged_tail({k: v for k, v in paths_of().items() if v is not None}, n):
            yield name, line
    pos = dict(start)
    partial: Dict[str, bytes] = {}
    while True:
        got = False
        for name, path in paths_of().items():
            if path is None:
                continue
            now = size(path)
            at = pos.setdefault(name, 0)
            if now < at:
                at = pos[name] = 0
            if now > at:
                with open(path, "rb") as f:
                    f.seek(at)
                    data = partial.pop(name, b"") + f.read(now - at)
                pos[name] = now
                *complete, rest = data.split(b"\n")
                if rest:
                    partial[name] = rest
                for raw in complete:
                    got = True
                    yield name, raw.decode("utf-8", errors="replace")
        if not got:
            sleep(poll)
            if idle:
                yield None, ""


_PALETTE = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")


def colour_of(name: str) -> str:
    """A stable ANSI colour for a provider's name (the same in every run and process)."""
    import zlib

    return _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]


def prefixed(name: str, line: str, width: int, colour: bool, when: Optional[float] = None) -> str:
    """``name | line`` (``HH:MM:SS name | line`` with a time), the name coloured if asked."""
    label = name.ljust(width)
    if colour:
        label = f"\x1b[{colour_of(name)}m{label}\x1b[0m"
    stamp = time.strftime("%H:%M:%S ", time.localtime(when)) if when is not None else ""
    return f"{stamp}{label} | {line}"
