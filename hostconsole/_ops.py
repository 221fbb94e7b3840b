"""Operations many callers wait for while one worker carries them out.

``Future`` is the shape: a result (or an error) that threads, or a signal handler, wait
for; one worker makes it, on a thread of its own (not a daemon: interpreter exit waits for
a stop in progress) or right where it is asked.  ``StopOp`` is one stop in progress (which
providers, whether to sweep, and a ``Deadline`` that later, tighter requests tighten here
and in the watchdog carrying it out); ``Purge`` is a purge in progress, which callers join.

No locks of their own: the host creates and joins them under its lock.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from ._stop import Deadline
from ._watchdog_client import start_thread

if TYPE_CHECKING:
    from .provider import Provider

_stop_ids = itertools.count(1)


class Future:
    """A result many threads (or a signal handler) can wait for while one worker makes it."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: Any = None
        self._error: Optional[BaseException] = None

    def run(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._result = fn(*args)
        except BaseException as e:  # delivered to every waiter
            self._error = e
        finally:
            self._done.set()

    def run_in_thread(self, fn: Callable[..., Any], *args: Any, name: str, daemon: bool = False) -> None:
        # Not a daemon (unless asked): interpreter exit waits for a stop in progress to
        # finish.  Without a thread to spare, do it here and now (an interrupt could then
        # cut it short).
        if not start_thread(self.run, fn, *args, name=name, daemon=daemon):
            self.run(fn, *args)

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: Optional[float] = None) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError("timed out waiting for hostconsole")
        if self._error is not None:
            raise self._error
        return self._result


class StopOp(Future):
    """One stop in progress: which providers, how (sweep), and by when (a deadline that a
    later, tighter request tightens -- here and in the watchdog carrying it out)."""

    def __init__(self, provs: List[Provider], deadline: Deadline, sweep: bool):
        super().__init__()
        self.id = next(_stop_ids)
        self.provs = provs
        self.deadline = deadline
        self.sweep = sweep
        self.carrier: Any = None  # the watchdog client carrying it out, once sent

    def tighten(self, within: Optional[float]) -> None:
        self.deadline.tighten(within)
        carrier, left = self.carrier, self.deadline.remaining()
        if carrier is not None and left is not None:
            carrier.send_quietly({"op": "tighten", "stop": self.id, "within": left})


class Purge(Future):
    """A purge in progress: its deadline, and (once made) the stop operation carrying it."""

    def __init__(self, within: Optional[float]):
        super().__init__()
        self.deadline = Deadline(within)
        self.op: Optional[StopOp] = None

    def tighten(self, within: Optional[float]) -> None:
        self.deadline.tighten(within)
        if self.op is not None:
            self.op.tighten(None)
