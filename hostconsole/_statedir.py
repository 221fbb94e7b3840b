"""Where hosts keep their registry, logs and watchdog reports.

The directory is private to its user (0700); a directory others can write to is refused,
since whoever can plant files there could steer which processes a reap signals.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Optional, Union

from .errors import HostError


def default_state_dir() -> Path:
    env = os.environ.get("HOSTCONSOLE_STATE_DIR")
    if env:
        return Path(env).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "hostconsole"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "hostconsole"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hostconsole"


def private_dir(path: Union[str, Path], what: str = "state directory") -> Path:
    """Create ``path`` (mode 0700) if needed and check it is ours alone; return it."""
    path = Path(path).expanduser().absolute()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise HostError(f"{what} {path} exists and is not a directory") from None
    except OSError as e:
        raise HostError(f"cannot create {what} {path}: {e.strerror}") from None
    try:
        st = os.lstat(path)
    except OSError as e:
        raise HostError(f"cannot use {what} {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise HostError(f"{what} {path} is not a directory")
    if st.st_uid != os.getuid():
        raise HostError(f"{what} {path} belongs to uid {st.st_uid}, not to you; refusing to use it")
    if st.st_mode & 0o022:
        raise HostError(
            f"{what} {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"refusing to use it (chmod 700 it, or choose another HOSTCONSOLE_STATE_DIR)"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    if not os.access(path, os.W_OK | os.X_OK):
        raise HostError(f"{what} {path} is not writable")
    return path


def size(path) -> int:
    try:
        return os.stat(path).st_size
    except (OSError, TypeError):
        return 0


def tail(path: Union[str, Path], n: int, end: Optional[int] = None) -> str:
    """The last ``n`` lines of a log (up to byte ``end``), read from its end (cheap for
    large logs); lines from the rotated ``.1`` file make up for a log just rotated."""
    out = _tail(path, n, end)
    have = out.count("\n")
    if have < n:
        out = _tail(f"{path}.1", n - have) + out
    return out


def _tail(path: Union[str, Path], n: int, end: Optional[int] = None) -> str:
    if n <= 0:
        return ""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return ""
    with f:
        f.seek(0, os.SEEK_END)
        pos = f.tell() if end is None else min(end, f.tell())
        chunk = 8192
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
            chunk *= 2
    lines = data.splitlines()[-n:]
    return b"\n".join(lines).decode("utf-8", errors="replace") + ("\n" if lines else "")


def log_name(provider: str) -> str:
    # Provider names are validated against [A-Za-z0-9][A-Za-z0-9._-]*; this is belt and braces.
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in provider)
    return f"{safe}.log"


def remove_tree(path: Optional[Path]) -> None:
    import shutil

    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
