"""The registry: what every host on this machine has started, kept under the state dir.

Layout (directories 0700, files 0600)::

    STATE_DIR/hosts/HOST_ID/host.json             this file's record, rewritten atomically
    STATE_DIR/hosts/HOST_ID/logs/NAME.log         providers' output
    STATE_DIR/hosts/HOST_ID/watchdog.log          the watchdog's own output
    STATE_DIR/hosts/HOST_ID/watchdog-report.json  what the watchdog did when its owner died

The registry is the contract between a host, its watchdog, ``reap`` and the CLI.  It is a
*hint*, never an authority: whether a host is alive is decided by its owner process's
identity, and a process is only ever signalled by ``reap`` if it carries the dead host's
marker in its own environment.  A corrupt, truncated or foreign entry is skipped with a
warning.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from . import _proc
from ._proc import ProcId

VERSION = 1
HOST_FILE = "host.json"
_seq = itertools.count()


def write_atomic(path: Path, obj) -> None:
    # A temp name of its own per write: two writers (threads of one process) sharing one
    # would write into the same inode, and a reader could find the entry torn.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_seq)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _ident(d) -> Optional[ProcId]:
    if isinstance(d, dict) and isinstance(d.get("pid"), int) and isinstance(d.get("start"), int):
        return ProcId(d["pid"], d["start"])
    return None


@dataclass
class HostRecord:
    host_id: str
    dir: Path
    data: dict

    @property
    def owner(self) -> Optional[ProcId]:
        return _ident(self.data.get("owner"))

    @property
    def watchdog(self) -> Optional[ProcId]:
        return _ident(self.data.get("watchdog"))

    @property
    def alive(self) -> bool:
        owner = self.owner
        return owner is not None and _proc.alive(owner)

    @property
    def providers(self) -> dict:
        p = self.data.get("providers")
        return p if isinstance(p, dict) else {}


def read(host_dir: Path) -> Optional[HostRecord]:
    """One host's record, or None (with a warning) if it is unreadable or not ours."""
    path = host_dir / HOST_FILE
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        warnings.warn(f"hostconsole: skipping unreadable registry entry {path}: {e}", RuntimeWarning, stacklevel=2)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("host"), str):
        warnings.warn(f"hostconsole: skipping malformed registry entry {path}", RuntimeWarning, stacklevel=2)
        return None
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        warnings.warn(
            f"hostconsole: skipping registry entry {path} written by a newer hostconsole (format {version!r})",
            RuntimeWarning, stacklevel=2,
        )
        return None
    return HostRecord(data["host"], host_dir, data)


def read_all(state_dir: Path) -> List[HostRecord]:
    hosts = Path(state_dir) / "hosts"
    try:
        names = sorted(os.listdir(hosts))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        if name.startswith("."):
            continue
        rec = read(hosts / name)
        if rec is not None:
            out.append(rec)
    return out
