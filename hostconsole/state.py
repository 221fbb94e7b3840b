"""A provider's states and the moves between them: the one table of what may happen.

Every change of a provider's state goes through ``check_move`` (``Provider.move`` calls it
under the host's lock).  A move that is not in ``MOVES`` is a bug in hostconsole, never a
user error: it raises ``IllegalMove`` when ``HOSTCONSOLE_STRICT_STATES`` is set (the test
suite sets it, for itself and every kernel it starts), and otherwise warns and is applied,
so that a bug in bookkeeping can never stop a provider from being stopped.

::

    STARTING ──ready──▶ RUNNING ──exit, policy says restart──▶ RESTARTING ──backoff──▶ STARTING
       │  ╲                 │                                       │
       │   ╲ exit 0 (oneshot)                                       └──stop──▶ STOPPED
       │    ▶ EXITED ◀──exit 0──┘
       ├──stop before it was spawned──▶ STOPPED
       ├──stop──▶ STOPPING ──▶ STOPPED, or FAILED (readiness failed, its tree is gone)
       └──exit≠0, not ready in time, a dependency failed──▶ FAILED

A provider object lives for one ``run``: running a name again makes a new one, so the
terminal states (``STOPPED``, ``EXITED``, ``FAILED``) have no way out.
"""

from __future__ import annotations

import enum
import os
import warnings
from typing import Dict, FrozenSet


class State(str, enum.Enum):
    """The SPEC's states.  A ``str``: records compare and serialise as the plain words."""

    STARTING = "starting"  # waiting for its requirements or its readiness
    RUNNING = "running"
    RESTARTING = "restarting"  # ended; a restart is scheduled (backing off)
    STOPPING = "stopping"
    STOPPED = "stopped"  # by the user or a purge
    EXITED = "exited"  # ended by itself with status 0 (a finished oneshot)
    FAILED = "failed"  # non-zero exit, a signal it was not sent, or readiness failed

    def __str__(self) -> str:
        return self.value


ACTIVE: FrozenSet[State] = frozenset({State.STARTING, State.RUNNING, State.RESTARTING, State.STOPPING})
TERMINAL: FrozenSet[State] = frozenset({State.STOPPED, State.EXITED, State.FAILED})

MOVES: Dict[State, FrozenSet[State]] = {
    State.STARTING: frozenset({State.RUNNING, State.EXITED, State.FAILED, State.RESTARTING,
                               State.STOPPING, State.STOPPED}),
    State.RUNNING: frozenset({State.RESTARTING, State.EXITED, State.FAILED, State.STOPPING}),
    State.RESTARTING: frozenset({State.STARTING, State.FAILED, State.STOPPED, State.STOPPING}),
    State.STOPPING: frozenset({State.STOPPED, State.FAILED}),
    State.STOPPED: frozenset(),
    State.EXITED: frozenset(),
    State.FAILED: frozenset(),
}


class IllegalMove(AssertionError):
    """A state change the table does not allow: a bug in hostconsole."""


def strict() -> bool:
    return os.environ.get("HOSTCONSOLE_STRICT_STATES", "") not in ("", "0")


def check_move(name: str, frm: State, to: State) -> None:
    """Raise (strict) or warn if ``frm -> to`` is not an allowed move."""
    if to in MOVES[frm]:
        return
    message = f"hostconsole bug: provider {name!r} cannot move from {frm.value} to {to.value}"
    if strict():
        raise IllegalMove(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
