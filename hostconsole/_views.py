"""What a host shows: ``ps``, logs (one provider's, several interleaved by time, the
previous host's), ``status``.  A mixin of ``Host``: it reads the provider table under the
host's lock, and the session; it changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Generator, List, Optional, Sequence

from . import _logfiles, _observe, _statedir
from ._table import PsTable
from .errors import InvalidSpec, UnknownProvider, shown
from .spec import check_name, check_names, check_poll
from .state import State

if TYPE_CHECKING:
    from ._session import Session
    from .provider import Provider, ProviderTable


class HostViews:
    # (Host's, read here)
    _table: "ProviderTable"
    _session: Optional["Session"]
    _state_dir_arg: Any
    log_key: str
    last_reap: Any

    @property
    def _providers(self) -> Dict[str, "Provider"]:
        return self._table.providers

    @property
    def host_id(self) -> Optional[str]:
        s = self._session
        return s.host_id if s is not None else None

    @property
    def state_dir(self) -> Optional[Path]:
        s = self._session
        return s.state_dir if s is not None else None

    def ps(self, all: bool = False, names: Optional[Sequence[str]] = None) -> PsTable:
        """A table of providers (or of ``names``) with live figures for each whole tree.

        Without ``all``, providers stopped by the user or a purge are left out.
        """
        names = None if names is None else check_names(names)
        with self._table.lock:
            records = [p.record() for p in self._providers.values() if (all or p.state != State.STOPPED)
                       and (names is None or p.name in names)]
            session = self._session
        return _observe.host_ps(session, self._table, records)

    def logs(self, name: str, n: int = 100, previous: bool = False) -> str:
        """The last ``n`` lines of a provider's stdout and stderr; with ``previous``, of the
        provider of that name of this owner's previous host (before Restart Kernel)."""
        check_lines(n)
        if previous:
            check_name(name)
            found = _logfiles.find_previous(self.state_dir or _statedir.resolve(self._state_dir_arg), self.log_key,
                                            name, exclude=self.host_id)
            if found is None:
                raise UnknownProvider(f"no previous logs of {shown(name)} (for {self.log_key}) in this state directory")
            return _logfiles.tail(found, n)
        with self._table.lock:
            path = self._table.get(name).log_path
        return _logfiles.tail(path, n) if path is not None else ""

    def follow(self, name: str, n: int = 10, poll: float = 0.1) -> Generator[str, None, None]:
        """Yield the last ``n`` lines of a provider's output, then new output as it comes.

        Never ends by itself: stop iterating (or interrupt) to stop following.  Follows
        the provider across restarts and log rotation."""
        with self._table.lock:
            self._table.get(name)
        check_lines(n)
        poll = check_poll(poll)

        def path_of() -> Optional[Path]:
            with self._table.lock:
                p = self._providers.get(name)
                return p.log_path if p is not None else None

        return _logfiles.follow(path_of, n, poll)

    def logs_all(self, names: Sequence[str] = (), n: int = 10) -> List[Any]:
        """The last ``n`` lines of several providers (all, if none named), interleaved by
        the time they were written: ``[(time or None, name, line), ...]``."""
        names = check_names(names)
        check_lines(n)
        return _logfiles.merged_tail({k: v for k, v in self._log_paths(names).items() if v is not None}, n)

    def follow_all(self, names: Sequence[str] = (), n: int = 10) -> Generator[Any, None, None]:
        """``logs_all``, then every new line of any of them as it comes: ``(name, line)``,
        for ever (stop iterating, or interrupt, to stop).  With no names, providers started
        later are followed too."""
        names = check_names(names)
        check_lines(n)
        self._log_paths(names)  # (unknown names fail here, not at the first iteration)
        return _logfiles.follow_all(lambda: self._log_paths(names), n)

    def _log_paths(self, names: Sequence[str]) -> Dict[str, Optional[Path]]:
        """Each provider's log (of ``names``, checked by the caller; all if none): called at
        every look of a follow."""
        with self._table.lock:
            if names:
                return {n: self._table.get(n).log_path for n in names}
            return {n: p.log_path for n, p in self._providers.items()}

    def status(self) -> Dict[str, Any]:
        with self._table.lock:
            counts: Dict[str, int] = {}
            for p in self._providers.values():
                counts[p.state.value] = counts.get(p.state.value, 0) + 1
            s = self._session
            fence = s.watchdog.fence if s else None
            return {
                "host": s.host_id if s else None,
                "pid": os.getpid(),
                "watchdog_pid": s.watchdog.pid if s else None,
                "watchdog_alive": s is not None and not s.watchdog_lost and not s.watchdog.lost,
                "fence": fence,
                "membership": _observe.MECHANISMS.get(fence or "", "-"),
                "state_dir": str(s.state_dir) if s else None,
                "providers": counts,
                "reaped_at_start": self.last_reap.found if self.last_reap is not None else 0,
                "inspect": [_observe.inspect(p, fence) for p in self._providers.values()],
            }


def check_lines(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidSpec(f"number of lines must be a non-negative integer, not {shown(n)}")
