"""The host: supervises providers (OS process trees) on behalf of one process.

This module knows nothing of IPython.  ``Host`` keeps the public API, the lock, and the
orchestration of stops; the rest lives beside it:

=====================  ==================================================================
``spec.py``            ``ProviderSpec``: every provider setting, validated once
``state.py``           the states and the table of allowed moves
``provider.py``        ``Provider`` (one run of a spec; the handle) and ``ProviderTable``
``_session.py``        what a started host holds: ids, watchdog (and its replacement),
                       registry writer
``_launch.py``         requirements, spawn, readiness, restart policy, port diagnosis
``_views.py``          what it shows: ``ps``, logs, status (a mixin of ``Host``)
``_observe.py``        ``ps`` records and live figures
``_stop.py``           the one stop ladder (run inside the watchdog)
=====================  ==================================================================

Locks, in the order they may be taken: ``Provider._life`` (a launch against a stop), then
the table's lock (``self._lock``: every provider's state, the session pointer, the purge
and shutdown operations).  User code (progress callbacks) is never called under either.

Threads: callers of the API (any thread, or a signal handler), the watchdog channel's
reader, and one worker per stop operation (``StopOp``).  Stops run on that worker so that an
interrupted caller (Ctrl-C) abandons only its waiting, never the stop itself; a purge and a
shutdown run their stop on their own worker, so each operation costs one thread.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Union

from . import _proc, _statedir, registry
from ._launch import Launcher, Progress, RestartPolicy
from ._ops import Future, Purge, StopOp
from ._session import Session
from ._stop import Deadline, Finder, Target, order_for_stop, stop_levels, user_universe
from ._table import StopReport
from ._views import HostViews
from ._watchdog_client import WatchdogLost
from .errors import DuplicateProvider, HostError, InvalidSpec, PlatformNotSupported, UnknownDependency, shown
from .provider import Provider, ProviderTable
from .spec import (OPTION_KEYS, ProviderSpec, check_callback, check_flag, check_names, check_seconds,
                   check_timeout)
from .state import ACTIVE, State

if TYPE_CHECKING:
    from ._up import UpReport

_live_hosts: "weakref.WeakSet[Host]" = weakref.WeakSet()


class Host(HostViews):
    """Supervises providers on behalf of this process.

    ``Host()`` does nothing until ``start()`` (or the first ``run``); as a context manager
    it starts on entry and shuts down on exit.
    """

    def __init__(self, state_dir: Union[str, "os.PathLike[str]", None] = None, *, restart_backoff: float = 0.5,
                 restart_backoff_max: float = 30.0, restart_limit: int = 5, restart_window: float = 60.0,
                 log_max_bytes: int = 10 * 1024 * 1024):
        """``restart_*``: a provider with a restart policy is restarted after
        ``restart_backoff`` seconds, doubling each time up to ``restart_backoff_max``; more
        than ``restart_limit`` restarts within ``restart_window`` seconds and it is failed
        for good.  ``log_max_bytes``: each provider's log is rotated (one old file kept)
        past this size, so a chatty provider cannot fill the disk."""
        if state_dir is not None and not isinstance(state_dir, (str, os.PathLike)):
            raise InvalidSpec(f"state_dir must be a path, not {shown(state_dir)}")
        if isinstance(restart_limit, bool) or not isinstance(restart_limit, int) or restart_limit < 0:
            raise InvalidSpec(f"restart limit must be a non-negative integer, not {shown(restart_limit)}")
        if isinstance(log_max_bytes, bool) or not isinstance(log_max_bytes, int) or log_max_bytes < 1024:
            raise InvalidSpec(f"log_max_bytes must be an integer of at least 1024, not {shown(log_max_bytes)}")
        self._policy = RestartPolicy(check_seconds("restart backoff", restart_backoff),
                                     check_seconds("restart backoff max", restart_backoff_max), restart_limit,
                                     check_seconds("restart window", restart_window))
        self.log_max_bytes = log_max_bytes
        self._state_dir_arg = state_dir
        self._table = ProviderTable()
        self._session: Optional[Session] = None
        self._purge: Optional[Purge] = None
        self._shutdown_op: Optional[Future] = None
        self._launcher = Launcher(self._table, self._policy, self._current_session, self._stop)
        self.last_reap: Any = None  # what start() reaped
        # Whose logs these are, kept as "previous" at shutdown: the IPython layer makes it the
        # kernel's id, which survives Restart Kernel.
        self.log_key = "default"

    # The restart policy, adjustable on a live host.
    restart_backoff = property(lambda self: self._policy.backoff, lambda self, v: setattr(self._policy, "backoff", v))
    restart_backoff_max = property(lambda self: self._policy.backoff_max,
                                   lambda self, v: setattr(self._policy, "backoff_max", v))
    restart_limit = property(lambda self: self._policy.limit, lambda self, v: setattr(self._policy, "limit", v))
    restart_window = property(lambda self: self._policy.window, lambda self, v: setattr(self._policy, "window", v))

    @property
    def _lock(self) -> threading.RLock:
        return self._table.lock

    @property
    def started(self) -> bool:
        return self._session is not None

    @property
    def host_dir(self) -> Optional[Path]:
        s = self._session
        return s.host_dir if s is not None else None

    def _current_session(self) -> Session:
        s = self._session
        if s is None:
            raise HostError("the host is not started (or was shut down)")
        return s

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, state_dir: Union[str, "os.PathLike[str]", None] = None) -> "Host":
        """Start the host (idempotent): reap leftovers of dead hosts, start the watchdog."""
        with self._lock:
            if self._shutdown_op is not None and not self._shutdown_op.done():
                raise HostError("the host is shutting down")
            if self._session is not None:
                return self
            if not (_proc.LINUX or sys.platform == "darwin"):
                raise PlatformNotSupported(
                    f"hostconsole supports Linux and macOS, not {sys.platform}: it cannot keep "
                    f"its promise that no provider outlives the kernel here")
            root = _statedir.private_dir(state_dir or self._state_dir_arg or _statedir.default_state_dir())
            # Leftovers of dead hosts first: their ports and memory are what we'd trip on.
            from .reap import reap

            self.last_reap = reap(state_dir=root)
            if self.last_reap.records:
                print(f"hostconsole: {self.last_reap.summary()}", file=sys.stderr)
            self._session = Session(root, self._table, log_max_bytes=self.log_max_bytes, log_key=self.log_key,
                                    on_exit=self._launcher.on_exit, on_stopped=self._on_stopped,
                                    on_control=self._on_control,
                                    snapshot=self._snapshot)
            self._table.on_change = self._session.publisher.dirty
            _live_hosts.add(self)
            publisher = self._session.publisher
        publisher.write_now()  # at once: from now on the host is findable
        return self

    def __enter__(self) -> "Host":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # --- running -------------------------------------------------------------------------

    def run(self, name: str, command: Any = None, *, wait: bool = True, replace: bool = False,
            progress: Progress = None, **options: Any) -> Provider:
        """Start provider ``name`` and return its handle.

        ``command`` is an argv list, or a string: split like a shell line, or with
        ``shell=True`` run by bash.  ``options`` are ``ProviderSpec``'s (``spec.OPTIONS``):
        ``requires``, ``ready`` (``port:N``, an ``http://`` URL, ``log:REGEX``,
        ``cmd:SHELL``, ``none``), ``ready_timeout``, ``stop_signal``, ``stop_timeout``,
        ``restart`` (``no``, ``on-failure``, ``always``), ``oneshot``, ``cwd``, ``env``,
        ``env_file``.

        With ``wait`` (default) the call returns once the provider is ready, after its
        requirements are; it raises ``ProviderFailed`` if the provider exits first or is not
        ready within ``ready_timeout`` (then it is stopped).  Without ``wait`` it returns at
        once and all of that happens in the background.  ``progress(elapsed, waiting_for)``
        is called about every 0.25 s while waiting.

        Run again with an equal spec while it is active, it changes nothing and returns the
        same handle; with a different spec it is refused, unless ``replace`` (then the old
        one is stopped, its dependents left alone, and this one started).  Bad input raises
        before anything starts, and disturbs nothing.
        """
        unknown = sorted(set(options) - OPTION_KEYS - {"shell"})
        if unknown:
            raise InvalidSpec(f"unknown option {shown(unknown[0])}: run takes {', '.join(sorted(OPTION_KEYS))}, "
                              f"shell, wait, replace and progress")
        shell = options.pop("shell", False)
        spec = ProviderSpec.build(name, command, shell=shell, **options)
        return self.run_spec(spec, wait=wait, replace=replace, progress=progress)

    def run_spec(self, spec: ProviderSpec, *, wait: bool = True, replace: bool = False, progress: Progress = None,
                 restarts: Optional[int] = None) -> Provider:
        """``run`` for a ready-made spec (what ``restart`` and stacks use)."""
        if not isinstance(spec, ProviderSpec):
            raise InvalidSpec(f"run_spec takes a ProviderSpec, not {type(spec).__name__}")
        check_flag("wait", wait)
        check_flag("replace", replace)
        check_callback("progress", progress)
        self.start()
        for _ in range(100):  # (a few rounds at most: each one stops what is in the way)
            with self._lock:
                if self._shutdown_op is not None:
                    raise HostError("the host is shutting down")
                old = self._providers.get(spec.name)
                in_the_way = old is not None and old.active
                if in_the_way and old is not None:
                    if old.spec == spec and old._stopping is None and old.state != State.STOPPING:
                        return old  # a re-run cell: nothing changes
                    if not replace and old._stopping is None and old.state != State.STOPPING:
                        what = " and ".join(spec.differences(old.spec)) or "spec"
                        raise DuplicateProvider(
                            f"provider {shown(spec.name)} already exists ({old.state.value}) with a different {what}: "
                            f"stop it first, or replace it (--replace, replace=True)")
                else:
                    for r in spec.requires:
                        if r not in self._providers:
                            raise UnknownDependency(f"unknown dependency {shown(r)}: "
                                                    f"start it before {shown(spec.name)}")
                    prov = Provider(self, spec, restarts=old.restarts if old is not None and restarts is None
                                    else restarts or 0)
                    self._providers[spec.name] = prov  # reserves the name while it starts
                    self._table.notify()
                    break
            assert old is not None
            self._stop([old])  # replaced (its dependents are left alone), or already stopping
        else:
            raise HostError(f"provider {shown(spec.name)} keeps being started by someone else")
        self._launcher.start(prov, old, wait=wait, progress=progress)
        return prov

    def up(self, file: Union[str, "os.PathLike[str]", None] = None, names: Sequence[str] = (), *, wait: bool = True,
           progress: Optional[Callable[[str, float, str], None]] = None) -> "UpReport":
        """Bring up a stack from ``file`` (``hostconsole.toml``, ``process-compose.yaml``,
        ``Procfile``; found in the current directory if None), or only ``names`` and what
        they require: independent providers concurrently, each after what it requires.
        Idempotent: what runs with the same spec is left alone, a changed one is restarted
        with its dependents, a new one started.  Returns once all are ready (unless not
        ``wait``); raises naming the first that failed, leaving the ready ones up.
        ``progress(name, seconds, waiting_for)`` is called about every 0.25 s while waiting."""
        from . import _up, stack

        names = check_names(names)
        check_flag("wait", wait)
        check_callback("progress", progress)
        return _up.up(self, stack.load(file), names, wait=wait, progress=progress)

    def down(self, file: Union[str, "os.PathLike[str]", None] = None, names: Sequence[str] = ()) -> StopReport:
        """Stop a stack's providers (or ``names`` of it), dependents first."""
        from . import _up, stack

        return _up.down(self, stack.load(file), check_names(names))

    # --- looking -------------------------------------------------------------------------

    def provider(self, name: str) -> Provider:
        with self._lock:
            return self._table.get(name)

    def __getitem__(self, name: str) -> Provider:
        return self.provider(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._providers

    def _snapshot(self, session: Session) -> Optional[registry.HostRecord]:
        """The registry entry as of now (takes the lock; see ``_publish``)."""
        with self._lock:
            if self._session is not session:
                return None
            wd = session.watchdog
            return registry.HostRecord(
                host_id=session.host_id, dir=session.host_dir, owner=session.owner, watchdog=wd.ident,
                watchdog_alive=not (session.watchdog_lost or wd.lost), state_dir=str(session.state_dir),
                kind="kernel" if "ipykernel" in sys.modules else "script", owner_argv=tuple(sys.argv[:8]),
                started=session.started_wall, fence=wd.fence, log_key=session.log_key,
                providers={n: p.record() for n, p in self._providers.items()})

    # --- stopping ------------------------------------------------------------------------

    def stop(self, *names: str, timeout: Optional[float] = None) -> StopReport:
        """Stop providers and, first, everything that depends on them.

        ``timeout``: SIGKILL reaches everything no later than this many seconds after the
        stop began, whatever the providers' own stop timeouts."""
        if len(names) == 1 and isinstance(names[0], (list, tuple, set)):
            names = tuple(names[0])
        for n in names:
            if not isinstance(n, str):
                raise InvalidSpec(f"provider names are strings, not {shown(n)}")
        cap = check_timeout("timeout", timeout, allow_none=True)
        with self._lock:
            for n in names:
                self._table.get(n)
            provs = [self._providers[n] for n in self._table.dependents_closure(names)]
        return self._stop(provs, cap)

    def restart(self, name: str, progress: Progress = None) -> Provider:
        """Stop ``name`` (and its dependents), start it again, then bring its dependents back."""
        check_callback("progress", progress)
        with self._lock:
            prov = self._table.get(name)
            closure = [self._providers[n] for n in self._table.dependents_closure([name])]
            was_active = {p.name for p in closure if p.state in ACTIVE}
        self._stop(closure)
        with self._lock:
            stop_order = order_for_stop([p.name for p in closure], self._table.requires_map())
        new = None
        for level in reversed(stop_order):
            for n in level:
                p = next(q for q in closure if q.name == n)
                if p is prov or p.name in was_active:
                    started = self.run_spec(p.spec, progress=progress,
                                            restarts=p.restarts + 1 if p is prov else p.restarts)
                    new = new or started
        assert new is not None
        return new

    def _stop(self, provs: Sequence[Provider], cap: Optional[float] = None, sweep: bool = False,
              purge: Optional[Purge] = None, inline: bool = False) -> StopReport:
        """The one stop path: stop ``provs`` (each once, however many callers ask)."""
        t0 = time.monotonic()
        cancelled: Dict[str, dict] = {}
        # A launch in flight (first start or respawn) finishes before we look: a process
        # spawned at the same moment as the stop is never missed.
        lives = sorted({id(p): p for p in provs}.values(), key=lambda p: p.name)
        for p in lives:
            p._life.acquire()
        try:
            with self._lock:
                for p in provs:
                    if p.main is None and p.state == State.STARTING:  # waiting to start: it never will
                        p.move(State.STOPPED)
                        cancelled[p.name] = {"name": p.name, "outcome": "gone", "exit_code": None, "signal": None,
                                             "seconds": 0.0, "survivors": []}
                mine = [p for p in provs if p._stopping is None and p.main is not None]
                ops = list(dict.fromkeys(p._stopping for p in provs if p._stopping is not None))
                for o in ops:
                    o.tighten(cap)
                op = None
                if mine:
                    op = StopOp(mine, purge.deadline if purge is not None else Deadline(cap), sweep)
                    if purge is not None:
                        purge.op = op  # a purge tightened from now on tightens this
                    for p in mine:
                        p._stopping = op
                        if p.state in ACTIVE and p.state != State.STOPPING:
                            p.move(State.STOPPING)
                    ops.append(op)
                self._table.notify()
        finally:
            for p in lives:
                p._life.release()
        if op is not None:
            # Outside every lock: the channel's reader needs the lock to deliver the exits
            # that come ahead of the stop's reply.
            if inline:
                op.run(self._execute, op)
            else:
                op.run_in_thread(self._execute, op, name="hostconsole-stop")
        outcomes: Dict[str, dict] = dict(cancelled)
        for o in ops:
            outcomes.update(o.result())
        wanted = {p.name for p in provs}
        records = [r for n, r in outcomes.items() if n in wanted]  # in the order they were stopped
        return StopReport(records, seconds=time.monotonic() - t0)

    def _execute(self, op: StopOp) -> Dict[str, dict]:
        names = [p.name for p in op.provs]
        with self._lock:
            levels = order_for_stop(names, self._table.requires_map())
            session = self._session
        outcomes: Optional[List[dict]] = None
        if session is not None and session.handed_over:
            return {}  # the watchdog finishes it: nothing more to do or know here
        if session is not None and not session.watchdog_lost:
            wd = op.carrier = session.watchdog
            try:
                reply = wd.request("stop", timeout=None, stop=op.id, levels=levels, within=op.deadline.remaining(),
                                   sweep=op.sweep)
                outcomes = reply.get("report")
            except WatchdogLost:
                outcomes = None
        if outcomes is None and session is not None and session.handed_over:
            return {}
        if outcomes is None:
            # No watchdog to do it: the same ladder, from here, by each provider's cell and
            # recorded members (see Session.own_trees).
            by_name = {p.name: p for p in op.provs}
            provs = [[by_name[n] for n in level] for level in levels]
            if session is not None:
                finder, targets, _ = session.own_trees(provs)
            else:
                finder, targets = Finder("", user_universe), [[Target.of(p.spec, p.main) for p in lv] for lv in provs]
            outcomes = [o.as_dict() for o in stop_levels(targets, finder, deadline=op.deadline)]
        result = {o["name"]: o for o in outcomes if o["name"] in names}
        with self._lock:
            for p in op.provs:
                o = result.get(p.name)
                if o is not None:
                    _stopped(p, o)
                elif p.state == State.STOPPING:
                    _stopped(p, {"outcome": "gone", "exit_code": None, "signal": None, "survivors": []})
                p._stopping = None
                result.setdefault(p.name, {"name": p.name, "outcome": "gone", "exit_code": p.exit_code,
                                           "signal": p.signal, "seconds": 0.0, "survivors": []})
            self._table.notify()
        return result

    def purge(self, timeout: Optional[float] = None) -> StopReport:
        """Stop every provider, dependents first; the host stays up.

        Idempotent and deduplicated: concurrent callers (threads, a signal handler) all
        wait for the same purge and get its report; a caller with a tighter ``timeout``
        tightens it.  ``timeout``: SIGKILL reaches every tree no later than this many
        seconds after the purge began, however many levels of dependencies there are.
        """
        cap = check_timeout("timeout", timeout, allow_none=True)
        purge, mine = self._join_purge(cap)
        if mine:
            purge.run_in_thread(self._do_purge, purge, name="hostconsole-purge")
        return purge.result()

    def _join_purge(self, cap: Optional[float]) -> "tuple[Purge, bool]":
        with self._lock:
            purge = self._purge
            if purge is not None:
                purge.tighten(cap)
                return purge, False
            purge = self._purge = Purge(cap)
            return purge, True

    def _do_purge(self, purge: Purge) -> StopReport:
        try:
            with self._lock:
                provs = [p for p in self._providers.values() if p.main is not None or p.state == State.STARTING]
            return self._stop(provs, sweep=True, purge=purge, inline=True)
        finally:
            with self._lock:
                if self._purge is purge:
                    self._purge = None

    def shutdown(self, timeout: Optional[float] = None, *, handover: bool = False) -> StopReport:
        """Purge, then release everything the host holds (watchdog, registry entry; the
        logs are kept as this owner's previous logs).

        Every way out of a session ends here; concurrent and repeated calls share it, and
        a tighter ``timeout`` tightens the purge under way.  With ``handover`` (what the
        kernel's shutdown and restart requests use) ``timeout`` is how long to wait, not
        when to SIGKILL: every provider keeps its own stop timeout, and what is still
        stopping when the time is up is handed to the watchdog, which finishes the stop
        (gracefully: a database gets to checkpoint) and then exits."""
        cap = check_timeout("timeout", timeout, allow_none=True)
        with self._lock:
            if self._session is None and self._shutdown_op is None:
                return StopReport([])
            op = self._shutdown_op
            mine = op is None
            if op is None:
                op = self._shutdown_op = Future()
                assert self._session is not None
                self._session.closing = True
            elif self._purge is not None and not handover:
                self._purge.tighten(cap)
        if mine:
            op.run_in_thread(self._do_shutdown, cap, handover, name="hostconsole-shutdown")
        return op.result()

    def _do_shutdown(self, cap: Optional[float], handover: bool) -> StopReport:
        try:
            purge, mine = self._join_purge(None if handover else cap)  # execution first ...
            if mine and handover:
                # (A daemon: if the stop outlasts the wait, the process must still be free to exit.)
                purge.run_in_thread(self._do_purge, purge, name="hostconsole-purge", daemon=True)
            elif mine:
                purge.run(self._do_purge, purge)
            try:
                report: StopReport = purge.result(timeout=cap if handover else None)
            except TimeoutError:
                return self._hand_over()
            with self._lock:
                session = self._session
            if session is not None:
                session.close()  # ... then release, from one place
            return report
        finally:
            with self._lock:
                self._providers.clear()
                self._session = None
                self._table.on_change = lambda: None
                self._shutdown_op = None
                _live_hosts.discard(self)
                self._table.notify()

    def _hand_over(self) -> StopReport:
        """The time is up while providers are still stopping: their stops are the watchdog's
        to finish.  It stops them as it would have, reports, and exits; the registry entry
        stays until then (a restarted kernel's run waits for their ports), and the next
        reap keeps their logs as this owner's previous logs."""
        with self._lock:
            session = self._session
            still = sorted(p.name for p in self._providers.values() if p._stopping is not None)
        if session is None:
            return StopReport([])
        session.hand_over()
        records: List[Dict[str, Any]] = [{"name": n, "outcome": "handed over", "exit_code": None, "signal": None,
                                          "seconds": 0.0, "survivors": []} for n in still]
        return StopReport(records, notes=[f"still stopping, finished by the watchdog (pid {session.watchdog.pid}): "
                                          f"{', '.join(still)}"] if still else [])

    def _on_stopped(self, event: Dict[str, Any]) -> None:
        """One provider of a stop under way is done (the watchdog says so as it happens)."""
        with self._lock:
            p = self._providers.get(event["name"])
            if p is not None and p._stopping is not None and p.main == (event["pid"], event["start"]):
                _stopped(p, event["outcome"])
                self._table.notify()

    def _on_control(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """A request from outside (``hostconsole stop``), relayed by the watchdog."""
        if request.get("op") != "purge":
            return {"ok": False, "error": f"unknown request {shown(request.get('op'))}"}
        report = self.purge(request.get("timeout"))
        return {"ok": True, "host": self.host_id, "report": report.records, "seconds": report.seconds}

    def __repr__(self) -> str:
        if self._session is None:
            return "<hostconsole.Host (not started)>"
        with self._lock:
            n = sum(p.state in ACTIVE for p in self._providers.values())
        return f"<hostconsole.Host {self.host_id}: {n} active provider{'s' if n != 1 else ''}, state {self.state_dir}>"


# --- the process's host -------------------------------------------------------------------

_default_host: Optional[Host] = None
_default_lock = threading.Lock()


def get_host() -> Host:
    """This process's host: the one the IPython magics use (created, not started)."""
    global _default_host
    with _default_lock:
        if _default_host is None:
            _default_host = Host()
        return _default_host


@atexit.register
def _shutdown_all_at_exit() -> None:
    for host in list(_live_hosts):
        try:
            host.shutdown()
        except Exception as e:  # exit must go on; the watchdog finishes what we could not
            print(f"hostconsole: shutdown at exit failed: {e}", file=sys.stderr)


def _stopped(p: Provider, o: Dict[str, Any]) -> None:
    """What a stop's outcome makes of a provider (hold the lock): its exit status, and out of
    STOPPING -- FAILED if it failed to start or a member outlived SIGKILL, else STOPPED."""
    if o["outcome"] != "gone" and (o["exit_code"] is not None or o["signal"]):
        p.exit_code, p.signal = o["exit_code"], o["signal"]
    if o["outcome"] == "survived":  # never "stopped" while a member lives
        p.fail_reason = (f"{len(o['survivors'])} process(es) survived SIGKILL: pids "
                         f"{', '.join(map(str, o['survivors']))}")
    if p.state == State.STOPPING:
        if p.fail_reason is not None:
            p.error, p.fail_reason = p.fail_reason, None
            p.move(State.FAILED)
        else:
            p.move(State.STOPPED)


def _forget_hosts_in_child() -> None:
    # A fork of the owner (multiprocessing, say) must neither keep the watchdog's socket
    # open -- end-of-file on it is how the watchdog learns that the owner died -- nor stop
    # the parent's providers when it exits.  In the child, every host starts afresh.
    for host in list(_live_hosts):
        session, host._session = host._session, None
        if session is not None:
            session.watchdog.detach()
        host._table = ProviderTable()
        host._launcher = Launcher(host._table, host._policy, host._current_session, host._stop)
        host._purge = None
        host._shutdown_op = None
    _live_hosts.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_hosts_in_child)
