"""Bringing a stack up (and down) on a host: docker compose's convergence, for providers.

``up`` compares every provider of the stack (or of the names asked for, with what they
require) with what runs:

* the same spec, starting or running: left alone (``unchanged``);
* a different spec: stopped, with everything that depends on it, then started again
  (``restarted``; a dependent outside the stack comes back with its own spec);
* not there, or stopped, exited or failed: started (``started``).

Every provider to start is reserved in dependency order and started without waiting
(``run_spec(..., wait=False)``): each one's start pipeline waits for its own requirements,
so independent providers start concurrently and the whole takes the critical path, not
the sum.  Then ``up`` waits until every one is ready, or one fails: it raises naming the
first that failed (in dependency order: the cause, not its dependents) and why; what is
ready stays up.

Locks: only the host's, through its API, and for reading states.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from ._table import StopReport, Table, fmt_seconds
from .errors import ProviderFailed
from .stack import Stack
from .state import State

if TYPE_CHECKING:
    from .host import Host
    from .provider import Provider

PROGRESS_INTERVAL = 0.25
StackProgress = Optional[Callable[[str, float, str], None]]  # (name, seconds waited, waiting for what)


class UpReport(Table):
    """What ``up`` did, per provider."""

    empty = "(nothing to do)"
    state_key = "state"
    columns = (
        ("name", "NAME", str),
        ("action", "ACTION", str),
        ("state", "STATE", str),
        ("pid", "PID", lambda v: "-" if v is None else str(v)),
        ("seconds", "READY AFTER", fmt_seconds),
    )


def up(host: "Host", stack: Stack, names: Sequence[str] = (), *, wait: bool = True,
       progress: StackProgress = None) -> UpReport:
    chosen = stack.select(names)
    with host._lock:
        current = {n: host._providers.get(n) for n in chosen}
    actions: Dict[str, str] = {}
    changed: List[str] = []
    for n in chosen:
        old = current[n]
        done = old is not None and old.oneshot and old.state == State.EXITED and old._stopping is None
        if old is not None and (done or old.active and old.state != State.STOPPING and old._stopping is None):
            if old.spec == stack.specs[n]:
                actions[n] = "unchanged"  # (a oneshot that has done its work, too: it is not run again)
            elif done:
                actions[n] = "started"
            else:
                actions[n] = "restarted"
                changed.append(n)
        else:
            actions[n] = "started"
    # What depends on a changed provider is stopped first and comes back after it.
    outside: Dict[str, "Provider"] = {}
    if changed:
        with host._lock:
            closure = host._table.dependents_closure(changed)
            provs = [host._providers[n] for n in closure]
            for p in provs:
                if p.name not in stack.specs and p.active:
                    outside[p.name] = p
                elif p.name in actions and actions[p.name] == "unchanged":
                    actions[p.name] = "restarted"
        host._stop(provs)
    t0 = time.monotonic()
    started: Dict[str, "Provider"] = {}
    order = [n for level in stack.levels([n for n in chosen if actions[n] != "unchanged"]) for n in level]
    for n in order:
        started[n] = host.run_spec(stack.specs[n], wait=False, replace=True)
    for p in _in_dependency_order(outside):
        started[p.name] = host.run_spec(p.spec, wait=False, restarts=p.restarts)
        actions[p.name] = "restarted"
    if wait and started:
        _await(host, started, progress)
    with host._lock:
        rows = []
        for n in list(chosen) + [n for n in outside if n not in chosen]:
            now = host._providers.get(n)
            ready_at = now.ready_at if now is not None else None
            rows.append({"name": n, "action": actions.get(n, "unchanged"), "state": now.state.value if now else "-",
                         "pid": now.pid if now else None,
                         "seconds": (ready_at - t0) if ready_at is not None and n in started else None})
    return UpReport(rows, notes=list(stack.warnings))


def down(host: "Host", stack: Stack, names: Sequence[str] = ()) -> StopReport:
    """Stop the stack's providers (or ``names`` of it), dependents first."""
    wanted = list(names) if names else list(stack.specs)
    stack.select(wanted)  # raises naming the stack's providers, for a name not in it
    with host._lock:
        present = [n for n in wanted if n in host._providers]
    return host.stop(*present) if present else StopReport([])


def _in_dependency_order(provs: Dict[str, "Provider"]) -> List["Provider"]:
    out: List["Provider"] = []
    left = dict(provs)
    while left:
        ready = [p for p in left.values() if not any(r in left for r in p.requires)] or list(left.values())
        for p in ready:
            out.append(p)
            del left[p.name]
    return out


def _await(host: "Host", started: Dict[str, "Provider"], progress: StackProgress) -> None:
    """Until every started provider is ready (or one is not going to be)."""
    t0 = time.monotonic()
    limit = max(p.spec.ready_timeout * (1 + len(p.requires)) + p.spec.stop_timeout for p in started.values()) + 5.0
    order = list(started)
    while True:
        with host._lock:
            failed = [n for n in order if not started[n].ready and not started[n].active]
            waiting = [n for n in order if not started[n].ready and started[n].active]
            if failed or not waiting or time.monotonic() - t0 > limit:
                break
            host._table.changed.wait(PROGRESS_INTERVAL)
        if progress is not None:
            elapsed = time.monotonic() - t0
            for n in waiting:
                progress(n, elapsed, _waiting_for(host, started[n]))
    if failed:
        raise ProviderFailed(host._launcher.failure(started[failed[0]]))
    if waiting:
        raise ProviderFailed(f"providers {', '.join(waiting)} not ready after {limit:.0f}s")


def _waiting_for(host: "Host", p: "Provider") -> str:
    with host._lock:
        deps = [r for r in p.requires if r in host._providers and not host._providers[r].ready]
    if deps:
        return f"dependencies {', '.join(deps)}"
    return "exit 0" if p.oneshot else p.spec.ready.describe()
