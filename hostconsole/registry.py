"""The registry: what every host on this machine has started, kept under the state dir.

Layout (directories 0700, files 0600)::

    STATE_DIR/hosts/HOST_ID/host.json             the host's ``HostRecord``, rewritten atomically
    STATE_DIR/hosts/HOST_ID/logs/NAME.log         providers' output
    STATE_DIR/hosts/HOST_ID/watchdog.log          the watchdog's own output
    STATE_DIR/hosts/HOST_ID/watchdog-report.json  what the watchdog did when its owner died

The registry is the contract between a host, its watchdog, ``reap`` and the CLI; this
module alone reads and writes it, as typed records (``HostRecord``, ``ProviderRecord``).
It is a *hint*, never an authority: whether a host is alive is decided by its owner's and
watchdog's identities, and a process is only signalled by ``reap`` when it is shown to be
a dead host's (see ``reap.py``).  A corrupt, truncated, oversized, foreign or non-regular
entry (a FIFO, a symlink) is skipped with one warning; reading never blocks and never
raises.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from . import _proc
from ._statedir import read_regular
from ._proc import ProcId
from .errors import InvalidSpec
from .spec import DEFAULT_STOP_TIMEOUT, ProviderSpec
from .state import State

VERSION = 2
HOST_FILE = "host.json"
MAX_ENTRY_BYTES = 16 * 1024 * 1024
_seq = itertools.count()


def write_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` (0600) so that a reader sees the old or the new
    file, never a torn one."""
    # A temp name of its own per write: two writers (threads of one process) sharing one
    # would write into the same inode, and a reader could find the entry torn.
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_seq)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            # dumps, not dump: dump always runs the pure-Python encoder (~1.5 ms, holding
            # the GIL, for a host of 50 providers, against ~0.15 ms).
            f.write(json.dumps(obj, separators=(",", ":")))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: Path, limit: int = MAX_ENTRY_BYTES) -> Any:
    """Parse a JSON file that someone else may have planted: never follows a symlink,
    never blocks on a FIFO, refuses non-regular and oversized files.  Raises ``ValueError``
    (with the reason) for anything but a readable, well-formed file; ``FileNotFoundError``
    if there is none."""
    try:
        data = read_regular(path, limit, follow=False)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(e.strerror or str(e)) from None
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(str(e)) from None


def ident_of(d: object) -> Optional[ProcId]:
    """``{"pid": P, "start": S}`` -> ProcId, anything else -> None."""
    if isinstance(d, Mapping):
        pid, start = d.get("pid"), d.get("start")
        if type(pid) is int and type(start) is int and pid > 0:
            return ProcId(pid, start)
    return None


def _ident_json(ident: Optional[ProcId]) -> Optional[Dict[str, int]]:
    return None if ident is None else {"pid": ident.pid, "start": ident.start}


def _int(v: object) -> Optional[int]:
    return v if type(v) is int else None


def _str(v: object) -> Optional[str]:
    return v if isinstance(v, str) else None


def _log_key(v: object) -> str:
    # (A key names a directory: a hostile entry must not climb out of previous/.)
    return v if isinstance(v, str) and v and "/" not in v and not v.startswith(".") and len(v) < 200 else "default"


def _num(v: object) -> Optional[float]:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    try:
        return float(v)
    except OverflowError:  # an integer too large for a float: not a time
        return None


@dataclass(frozen=True)
class ProviderRecord:
    """One provider as its host publishes it: its spec and where it stands."""

    name: str
    spec: Optional[ProviderSpec]  # None: written by an older hostconsole, or no longer parses
    state: State
    main: Optional[ProcId] = None
    restarts: int = 0
    exit_code: Optional[int] = None
    signal: Optional[str] = None
    started: Optional[float] = None  # wall-clock time its current process started
    error: Optional[str] = None  # why it failed, in a few words
    members: Tuple[ProcId, ...] = ()  # identities seen in its tree (its fence's, where it has one)
    log: Optional[str] = None
    cell: Optional[str] = None  # its cgroup, where a fence is in force
    next_restart: Optional[float] = None  # wall-clock time of its next restart, while it backs off

    @property
    def kind(self) -> str:
        return self.spec.kind if self.spec is not None else "provider"

    @property
    def requires(self) -> Tuple[str, ...]:
        return self.spec.requires if self.spec is not None else ()

    @property
    def stop_signal(self) -> int:
        import signal

        return self.spec.stop_signal if self.spec is not None else int(signal.SIGTERM)

    @property
    def stop_timeout(self) -> float:
        return self.spec.stop_timeout if self.spec is not None else DEFAULT_STOP_TIMEOUT

    def to_json(self) -> Dict[str, Any]:
        return {
            "spec": self.spec.to_wire() if self.spec is not None else None,
            "state": self.state.value,
            "main": _ident_json(self.main),
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "started": self.started,
            "error": self.error,
            "members": [[m.pid, m.start] for m in self.members],
            "log": self.log,
            "cell": self.cell,
            "next_restart": self.next_restart,
        }

    @classmethod
    def from_json(cls, name: str, d: Mapping[str, Any]) -> "ProviderRecord":
        spec = None
        if d.get("spec") is not None:
            try:
                spec = ProviderSpec.from_wire(d["spec"])
            except InvalidSpec:
                spec = None
        try:
            state = State(d.get("state"))
        except ValueError:
            state = State.STOPPED
        main = ident_of(d.get("main")) or ident_of(d)  # version 1 kept pid/start at the top
        members = []
        raw = d.get("members")
        for m in raw if isinstance(raw, list) else ():
            if isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) and m[0] > 0:
                members.append(ProcId(m[0], m[1]))
        return cls(
            name=name, spec=spec, state=state, main=main, restarts=_int(d.get("restarts")) or 0,
            exit_code=_int(d.get("exit_code")), signal=_str(d.get("signal")), started=_num(d.get("started")),
            error=_str(d.get("error")), members=tuple(members), log=_str(d.get("log")), cell=_str(d.get("cell")),
            next_restart=_num(d.get("next_restart")),
        )


@dataclass(frozen=True)
class HostRecord:
    """One host's entry."""

    host_id: str
    dir: Path
    owner: Optional[ProcId]
    watchdog: Optional[ProcId] = None
    watchdog_alive: bool = False  # as its host last knew it
    state_dir: Optional[str] = None
    kind: Optional[str] = None  # "kernel" or "script"
    owner_argv: Tuple[str, ...] = ()
    started: Optional[float] = None
    fence: Optional[str] = None  # the membership mechanism in force for its providers
    log_key: str = "default"  # whose logs these are: a kernel's id survives its restarts
    providers: Dict[str, ProviderRecord] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        """Its owner process is still running."""
        return self.owner is not None and _proc.alive(self.owner)

    def to_json(self) -> Dict[str, Any]:
        return {
            "version": VERSION,
            "host": self.host_id,
            "owner": _ident_json(self.owner),
            "owner_argv": list(self.owner_argv),
            "kind": self.kind,
            "started": self.started,
            "state_dir": self.state_dir,
            "watchdog": _ident_json(self.watchdog),
            "watchdog_alive": self.watchdog_alive,
            "fence": self.fence,
            "log_key": self.log_key,
            "providers": {n: p.to_json() for n, p in self.providers.items()},
        }

    @classmethod
    def from_json(cls, host_dir: Path, data: Mapping[str, Any]) -> "HostRecord":
        provs = {}
        raw = data.get("providers")
        for name, p in (raw.items() if isinstance(raw, Mapping) else ()):
            if isinstance(name, str) and isinstance(p, Mapping):
                provs[name] = ProviderRecord.from_json(name, p)
        argv = data.get("owner_argv")
        return cls(
            host_id=data["host"], dir=host_dir, owner=ident_of(data.get("owner")),
            watchdog=ident_of(data.get("watchdog")), watchdog_alive=data.get("watchdog_alive") is True,
            state_dir=_str(data.get("state_dir")), kind=_str(data.get("kind")),
            owner_argv=tuple(a for a in argv if isinstance(a, str)) if isinstance(argv, list) else (),
            started=_num(data.get("started")), fence=_str(data.get("fence")),
            log_key=_log_key(data.get("log_key")), providers=provs,
        )


def read(host_dir: Path) -> Optional[HostRecord]:
    """One host's record, or None (with a warning) if it is unreadable or not ours."""
    path = Path(host_dir) / HOST_FILE
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None
    except ValueError as e:
        warnings.warn(f"hostconsole: skipping unreadable registry entry {path}: {e}", RuntimeWarning, stacklevel=2)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("host"), str):
        warnings.warn(f"hostconsole: skipping malformed registry entry {path}", RuntimeWarning, stacklevel=2)
        return None
    version = data.get("version")
    if type(version) is not int or version > VERSION:
        warnings.warn(
            f"hostconsole: skipping registry entry {path} written by a newer hostconsole (format {version!r})",
            RuntimeWarning, stacklevel=2,
        )
        return None
    try:
        return HostRecord.from_json(Path(host_dir), data)
    except Exception as e:  # whatever a planted file holds, a reader never breaks on it
        warnings.warn(f"hostconsole: skipping malformed registry entry {path}: {e!r}", RuntimeWarning, stacklevel=2)
        return None


def host_dirs(state_dir: Path) -> List[Path]:
    """Every host directory under ``state_dir`` (real directories only, no symlinks)."""
    hosts = Path(state_dir) / "hosts"
    try:
        names = sorted(os.listdir(hosts))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    out = []
    for name in names:
        if name.startswith("."):
            continue
        try:
            if stat.S_ISDIR(os.lstat(hosts / name).st_mode):
                out.append(hosts / name)
        except OSError:
            pass
    return out


def read_all(state_dir: Path) -> List[HostRecord]:
    out = []
    for d in host_dirs(state_dir):
        rec = read(d)
        if rec is not None:
            out.append(rec)
    return out
