"""Launching providers: requirements, port check, spawn, readiness, and the restart policy.

``Launcher.start`` runs one provider's start pipeline::

    wait for its requirements -> check the ready port is free -> spawn (through the watchdog)
    -> watch readiness (a thread per incarnation) -> RUNNING, or FAILED (its tree stopped)

On the caller's thread when the caller waits (``wait=True``), else on a thread of its own.
Bad input or a failure before the spawn leaves nothing behind: the name is given back.
An interrupt (Ctrl-C) interrupts only the waiting: the pipeline carries on in the
background from where it was, and the provider shows in ``ps`` as ever.

``on_exit`` applies the restart policy when a provider's main process ends: exponential
backoff, at most ``limit`` restarts within ``window`` seconds (Erlang/OTP's restart
intensity), then FAILED for good.

Locks: everything here takes only the table's lock (and a provider's ``_life`` before it).
User callbacks (``progress``) are called without any lock.  Threads: the caller's, a
``hostconsole-start-NAME`` per background start, a ``hostconsole-ready-NAME`` per
incarnation being watched, a timer per scheduled restart.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _logfiles, _proc, _ready
from ._proc import ProcId
from ._session import Session
from ._watchdog_client import start_thread
from .errors import ExecutableNotFound, PortInUse, ProviderFailed, shown
from .provider import Provider, ProviderTable
from .state import ACTIVE, State

PROGRESS_INTERVAL = 0.25
PORT_WAIT = 10.0  # how long a port held by a dying leftover is waited for

Progress = Optional[Callable[[float, str], None]]


@dataclass
class RestartPolicy:
    backoff: float = 0.5
    backoff_max: float = 30.0
    limit: int = 5
    window: float = 60.0


class Launcher:
    def __init__(self, table: ProviderTable, policy: RestartPolicy, session: Callable[[], Session],
                 stop: Callable[[List[Provider]], Any]):
        self.table = table
        self.policy = policy
        self._session = session  # raises HostError if the host is no longer started
        self._stop = stop

    # --- the pipeline -------------------------------------------------------------------

    def start(self, prov: Provider, old: Optional[Provider], *, wait: bool, progress: Progress) -> None:
        """Start ``prov`` (already in the table under its name; ``old`` is whom it replaced)."""
        if not wait:
            if not start_thread(self._in_background, prov, name=f"hostconsole-start-{prov.name}"):
                self._give_back(prov, old)
                raise ProviderFailed(f"cannot start {shown(prov.name)}: no thread to start it in the background "
                                     f"(process limit?)")
            return
        try:
            self._pipeline(prov, progress)
        except KeyboardInterrupt:
            # Only the waiting is interrupted: the provider goes on starting as asked.
            if not start_thread(self._in_background, prov, name=f"hostconsole-start-{prov.name}"):
                self._give_back(prov, old)
            raise
        except BaseException:
            self._give_back(prov, old)
            raise
        self.await_ready(prov, progress)

    def _in_background(self, prov: Provider) -> None:
        try:
            self._pipeline(prov, None)
        except Exception as e:  # reported through the provider's state
            with self.table.lock:
                if prov.state == State.STARTING and prov.main is None:
                    prov.error = str(e)
                    prov.move(State.FAILED)
                    self.table.notify()

    def _pipeline(self, prov: Provider, progress: Progress) -> None:
        """Take ``prov`` from wherever it is in its start to a watched spawn."""
        with self.table.lock:
            spawned = prov.main is not None
        if not spawned:
            self._await_requirements(prov, progress)
            self._check_port(prov)
            self._launch(prov)
        else:
            self._watch(prov)

    def _give_back(self, prov: Provider, old: Optional[Provider]) -> None:
        """Nothing half started: the name goes back to whom it was, if ``prov`` never ran
        (and nobody stopped it meanwhile: then it stays, stopped, for ``ps --all``)."""
        with self.table.lock:
            if self.table.providers.get(prov.name) is prov and prov.main is None and prov.state == State.STARTING:
                if old is not None:
                    self.table.providers[prov.name] = old
                else:
                    del self.table.providers[prov.name]
                self.table.notify()

    def _await_requirements(self, prov: Provider, progress: Progress) -> None:
        """Wait until every requirement is ready; raise if one failed or stopped, or if
        ``prov`` itself was stopped meanwhile.  Bounded by the provider's ready timeout."""
        timeout = prov.ready_timeout

        def waiting_for() -> List[str]:
            out = []
            for r in prov.requires:
                dep = self.table.providers.get(r)
                if dep is None or dep.ready:
                    continue
                if dep.state not in ACTIVE or dep.state == State.STOPPING:
                    failed = dep.state == State.FAILED or dep.fail_reason is not None
                    why = dep.fail_reason or dep.error or (f"exit {dep.signal or dep.exit_code}" if failed or
                                                           dep.state == State.EXITED else dep.state.value)
                    raise ProviderFailed(f"cannot start {shown(prov.name)}: its dependency {shown(r)} is "
                                         f"{'failed' if failed else dep.state.value} ({why})")
                out.append(r)
            return out

        t0 = time.monotonic()
        with self.table.lock:
            while True:
                if prov.state != State.STARTING:
                    raise ProviderFailed(f"provider {shown(prov.name)} was stopped before it started")
                waiting = waiting_for()
                if not waiting:
                    return
                left = t0 + timeout - time.monotonic()
                if left <= 0:
                    raise ProviderFailed(f"cannot start {shown(prov.name)}: dependencies {', '.join(waiting)} "
                                         f"not ready "
                                         f"after {timeout:g}s")
                self.table.changed.wait(min(left, PROGRESS_INTERVAL))
                if progress is not None:
                    self._unlocked(progress, time.monotonic() - t0, f"dependencies {', '.join(waiting)}")

    def _launch(self, prov: Provider) -> None:
        """Spawn one incarnation of ``prov`` and watch it until it is ready."""
        with prov._life:
            with self.table.lock:
                session = self._session()
                if prov.state not in (State.STARTING, State.RESTARTING) or session.closing:
                    raise ProviderFailed(f"provider {shown(prov.name)} was stopped before it started")
            self._spawn(prov, session)
        self._watch(prov)

    def _watch(self, prov: Provider) -> None:
        with self.table.lock:
            inc = prov.incarnation
            if prov.state != State.STARTING or prov.monitored == inc:
                return
            prov.monitored = inc
        if not start_thread(self._monitor_ready, prov, inc, name=f"hostconsole-ready-{prov.name}"):
            self._fail_start(prov, inc, "cannot watch its readiness: no thread (process limit?); it was stopped")

    def _spawn(self, prov: Provider, session: Session) -> None:
        log = session.log_path(prov.name)
        with self.table.lock:
            run = session.next_run(prov.name)
        session.watchdog.sync_env()

        def started(reply: Dict[str, Any]) -> None:
            # Runs on the channel's reader thread, before any later event is read.
            if "pid" not in reply:
                return
            ident = ProcId(reply["pid"], reply["start"])
            with self.table.lock:
                if self.table.providers.get(prov.name) is not prov:
                    # The name was given to another meanwhile: this one must not run.
                    prov.main = ident
                    prov.move(State.STOPPING)
                    if not start_thread(self._stop, [prov], name="hostconsole-stop"):
                        _proc.send_group(ident.pid, ident, signal.SIGKILL)
                    return
                prov.incarnation += 1
                prov.log_path, prov.log_offset = Path(log), int(reply.get("log_offset", 0))
                prov.main = ident
                prov.members = (ident,)
                prov.cell = reply.get("cell")
                prov.started_at = time.monotonic()
                prov.started_wall = time.time()
                prov.exit_code = prov.signal = prov.error = None
                if prov.state == State.RESTARTING:
                    prov.move(State.STARTING)
                if not prov.oneshot and prov.ready_spec.kind == "none":
                    prov.move(State.RUNNING)
                self.table.notify()

        # The executable as the spec's checks found it (cached): the watchdog need not search
        # PATH again.
        try:
            exe = prov.spec.executable()
        except ExecutableNotFound as e:
            raise ExecutableNotFound(f"cannot execute {shown(prov.argv[0])}: {e}") from None
        reply = session.request("spawn", on_reply=started, spec=prov.spec.to_wire(), markers=session.markers(prov.name),
                                log=log, log_max=session.log_max_bytes, run=run, exe=exe)
        err = reply.get("error")
        if err:
            text = err.get("message") or err.get("type")
            if err.get("type") in ("FileNotFoundError", "PermissionError", "NotADirectoryError"):
                raise ExecutableNotFound(f"cannot execute {shown(prov.argv[0])}: {text}")
            raise ProviderFailed(f"cannot start {shown(prov.name)}: {text}")

    def _monitor_ready(self, prov: Provider, inc: int) -> None:
        """Probe one incarnation until it is ready, ends, or runs out of time.

        A oneshot has no probe: its exit (seen by ``on_exit``) is its readiness, and only
        the deadline is watched here."""
        deadline = time.monotonic() + prov.ready_timeout
        what = "exit 0" if prov.oneshot else prov.ready_spec.describe()
        probe = prov.ready_spec.probe(prov.log_path, prov.log_offset)
        pause, most = 0.01, (1.0 if prov.oneshot else prov.ready_spec.poll_max)
        due = time.monotonic()
        while True:
            with self.table.lock:
                if prov.incarnation != inc or prov.state != State.STARTING:
                    return
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                self._fail_start(prov, inc, f"not ready after {prov.ready_timeout:g}s: waited for {what}; "
                                            f"it was stopped")
                return
            ok = False
            if now >= due:  # (a wake by someone else's change is no reason to probe sooner)
                if not prov.oneshot:
                    try:
                        ok = probe(left)
                    except Exception:  # a probe that breaks is a probe that says "not yet"
                        ok = False
                due = now + pause
                pause = min(pause * 1.5, most)
            with self.table.lock:
                if ok:
                    if prov.incarnation == inc and prov.state == State.STARTING:
                        prov.move(State.RUNNING)
                        self.table.notify()
                    return
                # Woken early by any state change (an exit, a stop).
                self.table.changed.wait(max(0.0, min(due, deadline) - time.monotonic()))

    def _fail_start(self, prov: Provider, inc: int, reason: str) -> None:
        """It will not become ready: stop its tree; then it is FAILED, with ``reason``."""
        with self.table.lock:
            if prov.incarnation != inc or prov.state != State.STARTING:
                return
            prov.fail_reason = reason
            prov.move(State.STOPPING)  # its exit from now on is the stop's, not a crash
            self.table.notify()
        self._stop([prov])

    def await_ready(self, prov: Provider, progress: Progress) -> None:
        """Wait until ``prov`` is ready; raise ProviderFailed with this run's last output if
        it fails instead.  Its restart policy may restart it meanwhile, but only within its
        ready timeout: past it, it is stopped (FAILED, nothing left restarting) and the
        caller told -- a wait bounded by the ready timeout plus the stop."""
        if not prov.oneshot and prov.ready_spec.kind == "none":
            return  # ready the moment it was spawned, whatever it has done since
        t0 = time.monotonic()
        what = "exit 0" if prov.oneshot else prov.ready_spec.describe()
        deadline = t0 + prov.ready_timeout
        with self.table.lock:
            while not prov.ready and prov.active:
                left = deadline - time.monotonic()
                if left <= 0 and prov.state in (State.STARTING, State.RESTARTING):
                    break
                # (after the deadline only a stop is under way: its own timeout bounds it)
                self.table.changed.wait(min(PROGRESS_INTERVAL, left) if left > 0 else PROGRESS_INTERVAL)
                if progress is not None and prov.active:
                    self._unlocked(progress, time.monotonic() - t0, what)
            if prov.ready:
                return
            late = prov.active and prov.state in (State.STARTING, State.RESTARTING)
            restarts = prov.restarts
        if late:
            self._give_up(prov, f"not ready after {prov.ready_timeout:g}s: waited for {what}"
                                + (f" through {restarts} restart(s)" if restarts else "") + "; it was stopped")
        raise ProviderFailed(self.failure(prov))

    def _give_up(self, prov: Provider, reason: str) -> None:
        """The caller's wait is over: whatever incarnation is starting or waiting to restart
        is stopped, and the provider is FAILED with ``reason``."""
        with self.table.lock:
            if prov.state == State.RESTARTING:  # (no process: its scheduled respawn sees the state)
                prov.error = reason
                prov.next_restart = None
                prov.move(State.FAILED)
                self.table.notify()
                return
            inc = prov.incarnation
        self._fail_start(prov, inc, reason)

    def failure(self, prov: Provider) -> str:
        """Why ``prov`` is not ready: one line, then this run's last output."""
        with self.table.lock:
            state, error = prov.state, prov.error
            code = prov.signal or prov.exit_code
            path, offset = prov.log_path, prov.log_offset
        if error is None:
            how = f"exit code {code}" if isinstance(code, int) else f"killed by {code}"
            if state not in (State.EXITED, State.FAILED):
                error = f"is {state.value}"
            elif prov.oneshot:
                error = f"failed ({how})"
            else:
                error = f"exited ({how}) before it became ready"
        tail = _logfiles.tail(path, 10, start=offset).rstrip() if path is not None else ""
        return f"{prov.kind} {shown(prov.name)} {error}" + (f"; last output:\n{tail}" if tail else "; no output")

    def _unlocked(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn`` (user code: a progress display) without holding the table's lock,
        which the watchdog's reader thread needs; we hold it exactly once here."""
        self.table.lock.release()
        try:
            fn(*args)
        finally:
            self.table.lock.acquire()

    # --- exits and restarts -------------------------------------------------------------

    def on_exit(self, msg: Dict[str, Any]) -> None:
        """A provider's main process ended (reported by the watchdog, which reaped it)."""
        with self.table.lock:
            prov = self.table.providers.get(msg["name"])
            if prov is None or prov.main != ProcId(msg["pid"], msg["start"]):
                return
            prov.exit_code, prov.signal = msg["exit_code"], msg["signal"]
            if msg.get("unknown"):
                prov.error = "ended while guarded by a replacement watchdog: its exit status is unknown"
            if prov.state in (State.STARTING, State.RUNNING):
                ok = prov.exit_code == 0
                if prov.oneshot and ok:
                    prov.move(State.EXITED)  # done: that is a oneshot's readiness
                elif prov.restart_policy == "always" or (prov.restart_policy == "on-failure" and not ok):
                    self._schedule_restart(prov)
                else:
                    prov.move(State.EXITED if ok else State.FAILED)
            self.table.notify()

    def _schedule_restart(self, prov: Provider) -> None:
        """Restart after a backoff, or give up past the restart intensity (hold the lock)."""
        p = self.policy
        now = time.monotonic()
        recent = [t for t in prov.restart_times if now - t < p.window]
        if len(recent) >= p.limit:
            prov.move(State.FAILED)
            prov.error = (f"restarted {len(recent)} times within {p.window:g}s "
                          f"(last exit {prov.signal or prov.exit_code}); giving up")
            prov.restart_times = recent
            return
        delay = min(p.backoff_max, p.backoff * (2 ** len(recent)))
        prov.restart_times = recent + [now]
        prov.move(State.RESTARTING)
        prov.restarts += 1
        prov.next_restart = time.time() + delay
        timer = threading.Timer(delay, self._respawn, args=(prov, prov.incarnation))
        timer.daemon = True
        try:
            timer.start()
        except RuntimeError:
            prov.move(State.FAILED)
            prov.error = (f"could not schedule its restart: no thread (process limit?); "
                          f"last exit {prov.signal or prov.exit_code}")

    def _respawn(self, prov: Provider, inc: int) -> None:
        with self.table.lock:
            if prov.state != State.RESTARTING or prov.incarnation != inc:
                return  # stopped (or restarted by hand) meanwhile
        try:
            self._launch(prov)
        except Exception as e:
            with self.table.lock:
                if prov.state == State.RESTARTING:
                    prov.move(State.FAILED)
                    prov.error = f"restart failed: {e}"
                    self.table.notify()

    # --- ports --------------------------------------------------------------------------

    def _check_port(self, prov: Provider) -> None:
        """Refuse at once if the port the readiness check names is already taken.

        A leftover of a dead host that its own watchdog is still stopping (a restarted
        kernel's previous host, say) is waited for, as long as its own stop timeout allows:
        it is about to free the port."""
        port = prov.ready_spec.port
        if port is None or not _ready.port_open(port):
            return
        t0 = time.monotonic()
        deadline = t0 + PORT_WAIT
        while True:
            holders = _ready.port_holders(port)
            if not holders and not _ready.port_open(port):
                return  # its holder went away while we looked
            described, dying = [], False
            for pid, cmd in holders or [(None, "")]:
                text, wait = self._describe_holder(pid, cmd)
                described.append(text)
                dying = dying or wait > 0
                deadline = max(deadline, t0 + wait)
            if dying and time.monotonic() < deadline:
                with self.table.lock:
                    self.table.changed.wait(0.1)  # (a wait that a stop of ours may cut short)
                if not _ready.port_open(port):
                    return
                continue
            raise PortInUse(f"port {port} is already taken by {'; '.join(described)}")

    def _describe_holder(self, pid: Optional[int], cmd: str) -> Tuple[str, float]:
        """One phrase for whoever holds a port; and, for a dying leftover, how long it may
        take to go (0 for anyone else)."""
        from ._observe import Marked, owner_of
        from .reap import Judge, Life
        from .registry import read_all

        if pid is None:
            return "a process this user cannot see (another user's?)", 0.0
        m = _proc.markers(pid)
        what = f"pid {pid} ({cmd})" if cmd else f"pid {pid}"
        hid, name = m.get("HOSTCONSOLE_HOST"), m.get("HOSTCONSOLE_PROVIDER")
        if not hid:
            # A process in exit has lost its memory (no environment, no command line) a
            # moment before it closes its sockets: it is about to free the port.
            exiting = not cmd and not _proc.environ_readable(pid)
            return what + (" (exiting)" if exiting else ""), PORT_WAIT if exiting else 0.0
        session = self._session()
        if hid == session.host_id:
            return f"provider {shown(name)} of this host, {what}", 0.0
        st = _proc.stat(pid)
        holder = Marked(st.ident if st is not None else ProcId(pid, 0), _proc.owner_uid(pid), hid, name, owner_of(m),
                        m.get("HOSTCONSOLE_STATE_DIR"))
        judge = Judge({r.host_id: r for r in read_all(session.state_dir)}, [holder])
        life, owner = judge.life(hid), judge.owner(hid)
        if life is Life.ALIVE and owner is not None:
            return f"provider {shown(name)} of live host {hid} (owner pid {owner.pid}), {what}", 0.0
        wait = 0.0
        if life is Life.ENDING:  # its watchdog is stopping it: as long as its stop timeout, and then some
            rec = judge.records.get(hid)
            p = rec.providers.get(name or "") if rec is not None else None
            wait = max(PORT_WAIT, (p.stop_timeout if p is not None else 0.0) + 3.0)
        return (f"a leftover of dead host {hid} (provider {shown(name)}), {what}: "
                f"run `%host reap` or hostconsole.reap() to stop it"), wait

