"""Publishing a host's registry entry: one writer per host session.

Every change of a provider calls ``dirty()`` (cheap, under the host's lock); the writer
thread coalesces a burst of changes into one write about ``COALESCE`` seconds later, off
the paths of start and stop (a synchronous write there cost ~1 ms a provider).  Readers
(``hostconsole ps``, reap) see a change well within a second.

Lock order: ``_write_lock`` comes before the host's lock.  ``snapshot()`` (the host's
function) takes the host's lock itself, inside ``_write_lock``, so snapshots are written in
the order they are taken and an older one can never land after a newer one; and nothing
here is ever called with the host's lock held except ``dirty``, which takes no lock.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable, Optional

from . import _statedir, registry
from ._watchdog_client import start_thread
from .errors import HostError

COALESCE = 0.05


class RegistryPublisher:
    def __init__(self, host_dir: Path, snapshot: Callable[[], Optional[registry.HostRecord]]):
        self.host_dir = host_dir
        self._snapshot = snapshot
        self._write_lock = threading.Lock()
        self._dirty = threading.Event()
        self._closed = threading.Event()
        self._warned = False
        self._thread_started = start_thread(self._run, name="hostconsole-registry")

    def dirty(self) -> None:
        """Note that the entry needs rewriting.  Safe under any lock, from any thread."""
        self._dirty.set()
        if not self._thread_started and not self._closed.is_set():
            self._thread_started = start_thread(self._run, name="hostconsole-registry")

    def write_now(self) -> None:
        """Write the entry at once.  Never call this with the host's lock held."""
        with self._write_lock:
            if self._closed.is_set():
                return
            record = self._snapshot()
            if record is None:
                return
            try:
                if not self.host_dir.is_dir():
                    # Someone deleted the state (a cleanup script, rm -rf): make it again.
                    _statedir.private_dir(self.host_dir, "host directory")
                registry.write_atomic(self.host_dir / registry.HOST_FILE, record.to_json())
            except (OSError, HostError) as e:
                if not self._warned:
                    self._warned = True
                    print(f"hostconsole: cannot write the registry entry of host {record.host_id}: {e}",
                          file=sys.stderr)

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            if self._closed.wait(COALESCE):  # one write for a burst of changes
                return
            self._dirty.clear()
            self.write_now()

    def close(self) -> None:
        """No more writes, from now on (the host is releasing its files)."""
        with self._write_lock:
            self._closed.set()
        self._dirty.set()  # wakes the writer, which sees it is closed and ends
