"""Where hosts keep their registry, logs and watchdog reports.

The directory is private to its user (0700); a directory others can write to is refused,
since whoever can plant files there could steer which processes a reap signals.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Optional

from .errors import HostError, plain, shown


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


def _as_path(path: object, what: str) -> Path:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path or "\0" in path:
        raise HostError(f"{what} must be a path (a non-empty string without NUL bytes), not {shown(path)}")
    return Path(path).expanduser().absolute()


def resolve(state_dir: object = None) -> Path:
    """The state directory to look at (the default if None), checked as ``private_dir``
    checks it if it exists -- but never created: looking creates nothing."""
    path = _as_path(state_dir if state_dir is not None else default_state_dir(), "state directory")
    if os.path.lexists(path):
        _check(path, "state directory")
    return path


def private_dir(path: object, what: str = "state directory") -> Path:
    """Create ``path`` (mode 0700) if needed and check it is ours alone; return it."""
    path = _as_path(path, what)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise HostError(f"{what} {plain(path)} exists and is not a directory") from None
    except OSError as e:
        raise HostError(f"cannot create {what} {plain(path)}: {e.strerror}") from None
    _check(path, what)
    if stat.S_IMODE(os.lstat(path).st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def _check(path: Path, what: str) -> None:
    """A directory of ours alone (not a symlink, owned by us, not writable by others)."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise HostError(f"cannot use {what} {plain(path)}: {e.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise HostError(f"{what} {plain(path)} is a symbolic link; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise HostError(f"{what} {plain(path)} is not a directory")
    if st.st_uid != os.getuid():
        raise HostError(f"{what} {plain(path)} belongs to uid {st.st_uid}, not to you; refusing to use it")
    if st.st_mode & 0o022:
        raise HostError(
            f"{what} {plain(path)} is writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"refusing to use it (chmod 700 it, or choose another HOSTCONSOLE_STATE_DIR)"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise HostError(f"{what} {plain(path)} is not writable")


def read_text(path: "os.PathLike[str] | str", limit: int, encoding: str = "utf-8") -> str:
    """A user's text file (an env file, a stack file), read as ``read_regular`` reads.
    Raises ValueError with what is wrong, said to follow the file's name: "does not exist",
    "is not UTF-8 text (...)", "cannot be read (...)"."""
    try:
        return read_regular(path, limit).decode(encoding)
    except FileNotFoundError:
        raise ValueError("does not exist") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise ValueError(f"cannot be read ({e})") from None


def read_regular(path: "os.PathLike[str] | str", limit: int, follow: bool = True) -> bytes:
    """The bytes of a regular file (a FIFO, a device, a directory is refused at once: none
    may block a reader or feed it for ever; with ``follow=False``, a symbolic link too).
    Raises OSError; ValueError for what is not a regular file or is larger than ``limit``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ValueError("a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ValueError(f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_tree(path: Optional[Path]) -> None:
    import shutil

    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
