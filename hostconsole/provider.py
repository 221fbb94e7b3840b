"""A provider (one ``run`` of a ``ProviderSpec``) and the table of a host's providers.

``ProviderTable`` holds the host's one lock.  Every provider's state, incarnation, main
process and stop operation are read and changed only under ``table.lock``; every change
ends with ``table.notify()``, which wakes waiters (``table.changed``) and marks the registry
entry for rewriting.  ``Provider._life`` serialises a launch (spawn) against a stop of the
same provider and is always taken *before* ``table.lock``, never while holding it.

A ``Provider`` is also the handle ``Host.run`` returns: its attributes read live state.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from . import _ready
from ._proc import ProcId
from .errors import InvalidSpec, UnknownProvider, shown
from .registry import ProviderRecord
from .spec import ProviderSpec
from .state import ACTIVE, State, check_move

if TYPE_CHECKING:
    from ._table import StopReport
    from ._ops import StopOp
    from .host import Host


class Provider:
    """A provider of a host, and the handle ``Host.run`` returns."""

    def __init__(self, host: "Host", spec: ProviderSpec, restarts: int = 0):
        self._host = host
        self.spec = spec
        self.state = State.STARTING
        self.incarnation = 0  # bumped by every spawn; stale monitors and timers check it
        self.monitored = 0  # the incarnation whose readiness is being watched
        self.main: Optional[ProcId] = None
        self.started_at: Optional[float] = None  # monotonic
        self.started_wall: Optional[float] = None
        self.ready_at: Optional[float] = None  # monotonic: when it first became ready
        self.next_restart: Optional[float] = None  # wall clock: when a restart is due (while RESTARTING)
        self.restarts = restarts
        self.exit_code: Optional[int] = None
        self.signal: Optional[str] = None
        self.error: Optional[str] = None  # why it failed, when the host knows more than an exit code
        self.fail_reason: Optional[str] = None  # set while its tree is stopped because it failed
        self.log_path: Optional[Path] = None
        self.log_offset = 0  # where this incarnation's output starts in the log
        self.restart_times: List[float] = []
        self.members: Tuple[ProcId, ...] = ()  # last seen members of its tree
        self.cell: Optional[str] = None  # its fence (a cgroup's path), where it has one
        self._life = threading.RLock()
        self._stopping: Optional["StopOp"] = None

    def move(self, to: State) -> None:
        """The one way to change state (hold the table's lock)."""
        check_move(self.spec.name, self.state, to)
        self.state = to
        if self.ready and self.ready_at is None:
            self.ready_at = time.monotonic()

    # --- the spec, as attributes ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def argv(self) -> List[str]:
        return list(self.spec.argv)

    @property
    def shell(self) -> bool:
        return self.spec.shell

    @property
    def env(self) -> Dict[str, str]:
        return self.spec.env_dict

    @property
    def cwd(self) -> str:
        return self.spec.cwd

    @property
    def requires(self) -> Tuple[str, ...]:
        return self.spec.requires

    @property
    def oneshot(self) -> bool:
        return self.spec.oneshot

    @property
    def ready_spec(self) -> _ready.ReadySpec:
        return self.spec.ready

    @property
    def ready_timeout(self) -> float:
        return self.spec.ready_timeout

    @property
    def stop_signal(self) -> int:
        return self.spec.stop_signal

    @property
    def stop_timeout(self) -> float:
        return self.spec.stop_timeout

    @property
    def restart_policy(self) -> str:
        return self.spec.restart

    # --- live state ------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        # Not while restarting: the last process is gone, the next not yet there.
        live = (State.STARTING, State.RUNNING, State.STOPPING)
        return self.main.pid if self.main is not None and self.state in live else None

    @property
    def uptime(self) -> Optional[float]:
        if self.pid is None or self.started_at is None:
            return None
        return time.monotonic() - self.started_at

    @property
    def ready(self) -> bool:
        return (self.state == State.RUNNING and not self.oneshot) or (self.oneshot and self.state == State.EXITED)

    @property
    def active(self) -> bool:
        """Starting, running, restarting or stopping: the name is taken."""
        return self.state in ACTIVE or self._stopping is not None

    def record(self) -> ProviderRecord:
        """What the registry and ``ps`` say of it (hold the table's lock)."""
        return ProviderRecord(
            name=self.name, spec=self.spec, state=self.state, main=self.main, restarts=self.restarts,
            exit_code=self.exit_code, signal=self.signal, started=self.started_wall, error=self.error,
            members=self.members, log=str(self.log_path) if self.log_path is not None else None, cell=self.cell,
            next_restart=self.next_restart if self.state == State.RESTARTING else None,
        )

    # --- the handle -----------------------------------------------------------------------

    def stop(self) -> "StopReport":
        return self._host.stop(self.name)

    def restart(self) -> "Provider":
        return self._host.restart(self.name)

    def logs(self, n: int = 100) -> str:
        return self._host.logs(self.name, n)

    def wait(self, timeout: Optional[float] = None) -> Optional[str]:
        """Wait until the provider is no longer starting, running or stopping; its state
        (None if the timeout passed first)."""
        table = self._host._table
        if table.wait(lambda: not self.active, timeout):
            return self.state.value
        return None

    def _repr_html_(self) -> Optional[str]:
        """A one-row ``ps`` table: the same shape as ``%host ps``."""
        if self._host._providers.get(self.name) is not self:
            return None  # (a handle of an earlier run: the text will do)
        table = self._host.ps(all=True, names=[self.name])
        return table._repr_html_() if table.records else None

    def __repr__(self) -> str:
        parts = [self.state.value]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
            parts.append(f"up {self.uptime or 0.0:.1f}s")
        if self.state in (State.EXITED, State.FAILED, State.STOPPED) and (self.exit_code is not None or self.signal):
            parts.append(f"exit {self.signal or self.exit_code}")
        return f"<{self.kind.capitalize()} {shown(self.name)}: {', '.join(parts)}>"


class ProviderTable:
    """A host's providers by name, and the lock that guards them."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.providers: Dict[str, Provider] = {}
        self.on_change: Callable[[], None] = lambda: None

    def notify(self) -> None:
        """Wake every waiter and have the registry rewritten (hold the lock)."""
        self.changed.notify_all()
        self.on_change()

    def get(self, name: str) -> Provider:
        if not isinstance(name, str):
            raise InvalidSpec(f"a provider name is a string, not {shown(name)}")
        prov = self.providers.get(name)
        if prov is None:
            raise UnknownProvider(f"no provider named {shown(name)}")
        return prov

    def requires_map(self) -> Dict[str, Tuple[str, ...]]:
        return {n: p.requires for n, p in self.providers.items()}

    def dependents_closure(self, names: Iterable[str]) -> List[str]:
        """``names`` and everything that requires them, directly or not."""
        out = list(dict.fromkeys(names))
        i = 0
        while i < len(out):
            for n, p in self.providers.items():
                if out[i] in p.requires and n not in out:
                    out.append(n)
            i += 1
        return out

    def wait(self, predicate: Callable[[], Any], timeout: Optional[float], interval: float = 0.5) -> bool:
        """Wait (woken by every change) until ``predicate()``; False if ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.changed.wait(interval if left is None else min(left, interval))
            return True
