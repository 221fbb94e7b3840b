"""The host: supervises providers (OS process trees) on behalf of one process.

This module knows nothing of IPython.  A ``Host`` owns a watchdog process (``_shepherd``)
that spawns and reaps its providers and stops them if the host's process dies; the host
keeps the provider table, the dependency graph and the user-facing API.

Threads: callers of the API (any thread, or a signal handler), the watchdog channel's
reader, and one short-lived worker per stop/purge/shutdown.  Stops run in a worker so
that an interrupted caller (Ctrl-C) abandons only its waiting, never the stop itself.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from . import _proc, _ready, _statedir, registry
from ._proc import ProcId
from ._stop import Finder, Target, order_for_stop, stop_levels, user_universe
from ._table import PsTable, StopReport
from ._wire import Channel
from .errors import (
    DuplicateProvider,
    ExecutableNotFound,
    HostError,
    InvalidSpec,
    PlatformNotSupported,
    PortInUse,
    ProviderFailed,
    UnknownDependency,
    UnknownProvider,
)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
ACTIVE = frozenset({"starting", "running", "restarting", "stopping"})
DEFAULT_STOP_TIMEOUT = 5.0
DEFAULT_READY_TIMEOUT = 30.0
REQUEST_TIMEOUT = 30.0
REARM_LIMIT, REARM_WINDOW = 3, 60.0  # new watchdogs after a loss, at most this many a minute
REGISTRY_COALESCE = 0.05
WATCHDOG_START_TIMEOUT = 30.0
CONTROL_SOCKET = "control.sock"
RESTART_POLICIES = ("no", "on-failure", "always")
PROGRESS_INTERVAL = 0.25


# --- validation ---------------------------------------------------------------------------


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidSpec(
            f"invalid provider name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit"
        )
    return name


def parse_signal(sig) -> int:
    """'TERM', 'SIGTERM', 'term', 15 or signal.SIGTERM -> 15."""
    if isinstance(sig, signal.Signals):
        return int(sig)
    if isinstance(sig, int) and not isinstance(sig, bool):
        try:
            return int(signal.Signals(sig))
        except ValueError:
            pass
    elif isinstance(sig, str):
        s = sig.strip().upper()
        if s.isdigit():
            return parse_signal(int(s))
        if not s.startswith("SIG"):
            s = "SIG" + s
        if s in signal.Signals.__members__:
            return int(signal.Signals[s])
    raise InvalidSpec(f"unknown signal {sig!r}: use a name such as TERM, INT, HUP, QUIT or USR1")


def check_timeout(what: str, value, allow_none=False) -> Optional[float]:
    if value is None and allow_none:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidSpec(f"{what} must be a number of seconds, not {value!r}") from None
    if math.isnan(v) or v < 0 or math.isinf(v):
        raise InvalidSpec(f"{what} must be a non-negative number of seconds, not {value!r}")
    return v


def _check_env(env) -> Dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise InvalidSpec(f"env must be a mapping of names to strings, not {type(env).__name__}")
    out = {}
    for k, v in env.items():
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise InvalidSpec(f"invalid environment variable name {k!r}")
        if not isinstance(v, str) or "\0" in v:
            raise InvalidSpec(f"environment variable {k} must be a string without NUL bytes")
        if k.startswith("HOSTCONSOLE_"):
            raise InvalidSpec(f"{k} is set by the host; it cannot be overridden")
        out[k] = v
    return out


def _resolve_executable(argv0: str, cwd: Optional[str], env: Mapping[str, str]) -> str:
    if os.sep in argv0:
        path = argv0 if os.path.isabs(argv0) else os.path.join(cwd or os.getcwd(), argv0)
        if not os.path.exists(path):
            raise ExecutableNotFound(f"executable {argv0!r} does not exist")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise ExecutableNotFound(f"{argv0!r} is not an executable file")
        return path
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise ExecutableNotFound(f"executable {argv0!r} not found on PATH")
    return found


# --- providers ----------------------------------------------------------------------------


class Provider:
    """A provider of a host, and the handle ``Host.run`` returns."""

    def __init__(self, host: "Host", name, argv, *, env, cwd, requires, stop_signal, stop_timeout, oneshot, shell,
                 ready=None, ready_timeout=DEFAULT_READY_TIMEOUT, restart="no"):
        self._host = host
        self.ready_spec: _ready.ReadySpec = ready or _ready.ReadySpec()
        self.ready_timeout: float = ready_timeout
        self.restart_policy: str = restart
        self.incarnation = 0  # bumped by every spawn; stale monitors and timers check it
        self.log_offset = 0  # where this incarnation's output starts in the log
        self.error: Optional[str] = None  # why it failed, when the host knows more than an exit code
        self._restart_times: List[float] = []
        self._life = threading.RLock()  # serialises a launch against a stop
        self._failing = False
        self.name = name
        self.argv: List[str] = argv
        self.shell = shell
        self.env: Dict[str, str] = env
        self.cwd: Optional[str] = cwd
        self.requires: tuple = tuple(requires)
        self.stop_signal: int = stop_signal
        self.stop_timeout: float = stop_timeout
        self.oneshot: bool = oneshot
        self.state = "starting"
        self.main: Optional[ProcId] = None
        self.started_at: Optional[float] = None  # monotonic
        self.started_wall: Optional[float] = None
        self.restarts = 0
        self.exit_code: Optional[int] = None
        self.signal: Optional[str] = None
        self.log_path: Optional[Path] = None
        self._stopping: Optional["_Op"] = None

    @property
    def kind(self) -> str:
        return "oneshot" if self.oneshot else "provider"

    @property
    def pid(self) -> Optional[int]:
        # Not while restarting: the last process is gone, the next not yet there.
        return self.main.pid if self.main is not None and self.state in ("starting", "running", "stopping") else None

    @property
    def uptime(self) -> Optional[float]:
        if self.pid is None or self.started_at is None:
            return None
        return time.monotonic() - self.started_at

    @property
    def ready(self) -> bool:
        return (self.state == "running" and not self.oneshot) or (self.oneshot and self.state == "exited")

    def stop(self) -> StopReport:
        return self._host.stop(self.name)

    def restart(self) -> "Provider":
        return self._host.restart(self.name)

    def logs(self, n: int = 100) -> str:
        return self._host.logs(self.name, n)

    def wait(self, timeout: Optional[float] = None) -> str:
        """Wait until the provider is no longer starting, running or stopping; its state."""
        return self._host._wait_for(self, lambda: self.state not in ACTIVE, timeout)

    def __repr__(self):
        parts = [self.state]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
            parts.append(f"up {self.uptime:.1f}s")
        if self.state in ("exited", "failed", "stopped") and (self.exit_code is not None or self.signal):
            parts.append(f"exit {self.signal or self.exit_code}")
        return f"<{self.kind.capitalize()} {self.name!r}: {', '.join(parts)}>"


def _start_thread(target, *args, name: str, daemon: bool = True) -> bool:
    """Start a thread; False if the OS will not give us one (a process or thread limit).

    Every caller has a way to carry on without it: a stop path must never fail because
    the machine is out of processes -- that is when it is needed most."""
    try:
        threading.Thread(target=target, args=args, name=name, daemon=daemon).start()
        return True
    except RuntimeError:
        return False


class _Op:
    """A result many threads (or a signal handler) can wait for while one worker makes it."""

    def __init__(self):
        self._done = threading.Event()
        self._result = None
        self._error: Optional[BaseException] = None

    def run_in_thread(self, fn, *args, name="hostconsole-op"):
        def body():
            try:
                self._result = fn(*args)
            except BaseException as e:  # delivered to every waiter
                self._error = e
            finally:
                self._done.set()

        # Not a daemon: interpreter exit waits for a stop in progress to finish.  Without a
        # thread to spare, do it here and now (an interrupt could then cut it short).
        if not _start_thread(body, name=name, daemon=False):
            body()
        return self

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: Optional[float] = None):
        if not self._done.wait(timeout):
            raise TimeoutError("timed out waiting for hostconsole")
        if self._error is not None:
            raise self._error
        return self._result


class _WatchdogLost(Exception):
    pass


class _Watchdog:
    """The host's end of the channel to its watchdog process."""

    def __init__(self, host: "Host"):
        self._host_ref = weakref.ref(host)
        parent, child = socket.socketpair()
        self.channel = Channel(parent)
        owner = _proc.identity(os.getpid())
        cmd = [sys.executable, "-m", "hostconsole._shepherd", "--fd", str(child.fileno()),
               "--host-id", host.host_id, "--report", str(host.host_dir / "watchdog-report.json"),
               "--control", str(host.host_dir / CONTROL_SOCKET)]
        if owner is not None:
            cmd += ["--owner", f"{owner.pid}:{owner.start}"]
        env = dict(os.environ)
        # Marked as this host's (so a reap can find it if its owner dies), never as a provider.
        env.pop("HOSTCONSOLE_PROVIDER", None)
        env.update(host._markers(None))
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(host.host_dir / "watchdog.log", "ab", buffering=0) as log:
            self.proc = subprocess.Popen(
                cmd, pass_fds=[child.fileno()], start_new_session=True, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/",
            )
        child.close()
        self.ident = _proc.identity(self.proc.pid)
        self.lost = False
        self._next_id = 0
        self._pending: Dict[int, list] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.reader = threading.Thread(target=self._read, name="hostconsole-watchdog-reader", daemon=True)
        self.reader.start()
        # Started means started: the watchdog is up, with every thread it needs, before
        # the first provider exists.  If it dies on the way, say why.
        if not self._ready.wait(WATCHDOG_START_TIMEOUT) or self.lost:
            self.close(timeout=1.0)
            last = _statedir.tail(host.host_dir / "watchdog.log", 1).strip()
            raise HostError("the host's watchdog did not start" + (f": {last}" if last else ""))

    @property
    def pid(self):
        return self.proc.pid

    def _read(self):
        while True:
            msg = self.channel.recv()
            if msg is None:
                break
            if "re" in msg:
                with self._lock:
                    slot = self._pending.pop(msg["re"], None)
                if slot is not None:
                    slot[1] = msg
                    if slot[2] is not None:
                        # Applied here, in channel order: a later event (the provider's
                        # exit) must find the reply's effects already in place.
                        slot[2](msg)
                    slot[0].set()
            elif msg.get("ev") == "ready":
                self._ready.set()
            elif msg.get("ev") == "exit":
                host = self._host_ref()
                if host is not None:
                    host._on_exit(msg)
            elif msg.get("ev") == "control":
                host = self._host_ref()
                if host is not None:
                    # Not on this thread: a purge needs the reader to carry its replies.
                    if not _start_thread(host._on_control, self, msg, name="hostconsole-control"):
                        self.channel.send({"op": "control_done", "cid": msg.get("cid"), "ok": False,
                                           "error": "the host cannot start a thread (process limit?)"})
        with self._lock:
            self.lost = True
            pending, self._pending = self._pending, {}
        self._ready.set()
        for slot in pending.values():
            slot[0].set()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        host = self._host_ref()
        if host is not None:
            host._on_watchdog_lost(self)

    def request(self, op: str, timeout: Optional[float] = REQUEST_TIMEOUT, on_reply=None, **fields) -> dict:
        with self._lock:
            if self.lost:
                raise _WatchdogLost()
            self._next_id += 1
            rid = self._next_id
            slot = [threading.Event(), None, on_reply]
            self._pending[rid] = slot
        try:
            self.channel.send({"id": rid, "op": op, **fields})
        except OSError:
            raise _WatchdogLost() from None
        interrupted = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                done = slot[0].wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                break
            except KeyboardInterrupt as e:
                # The request is on its way: an abandoned spawn would be a provider that
                # runs unrecorded.  Finish the exchange, then let the interrupt through.
                interrupted = e
        if interrupted is not None and done:
            raise interrupted
        if not done:
            with self._lock:
                self._pending.pop(rid, None)
            raise HostError(f"the host's watchdog did not answer {op!r} within {timeout}s")
        if slot[1] is None:
            raise _WatchdogLost()
        return slot[1]

    def close(self, timeout: float = 5.0):
        try:
            self.request("bye", timeout=timeout)
        except (HostError, _WatchdogLost):
            pass
        self.channel.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # It never stops on its own only if it is wedged; its providers are already gone.
            _proc.send(self.ident, signal.SIGKILL)
            self.proc.wait(timeout=timeout)


# --- the host -----------------------------------------------------------------------------

_live_hosts: "weakref.WeakSet[Host]" = weakref.WeakSet()


class Host:
    """Supervises providers on behalf of this process.

    ``Host()`` does nothing until ``start()`` (or the first ``run``); as a context manager
    it starts on entry and shuts down on exit.
    """

    def __init__(
        self,
        state_dir: Union[str, os.PathLike, None] = None,
        *,
        restart_backoff: float = 0.5,
        restart_backoff_max: float = 30.0,
        restart_limit: int = 5,
        restart_window: float = 60.0,
        log_max_bytes: int = 10 * 1024 * 1024,
    ):
        """``restart_*``: a provider with a restart policy is restarted after
        ``restart_backoff`` seconds, doubling each time up to ``restart_backoff_max``; more
        than ``restart_limit`` restarts within ``restart_window`` seconds and it is failed
        for good.  ``log_max_bytes``: each provider's log is rotated (one old file kept)
        past this size, so a chatty provider cannot fill the disk."""
        self.restart_backoff = check_timeout("restart backoff", restart_backoff)
        self.restart_backoff_max = check_timeout("restart backoff max", restart_backoff_max)
        if not isinstance(restart_limit, int) or restart_limit < 0:
            raise InvalidSpec(f"restart limit must be a non-negative integer, not {restart_limit!r}")
        self.restart_limit = restart_limit
        self.restart_window = check_timeout("restart window", restart_window)
        if not isinstance(log_max_bytes, int) or log_max_bytes < 1024:
            raise InvalidSpec(f"log_max_bytes must be an integer of at least 1024, not {log_max_bytes!r}")
        self.log_max_bytes = log_max_bytes
        self._state_dir_arg = state_dir
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._providers: Dict[str, Provider] = {}
        self._watchdog: Optional[_Watchdog] = None
        self._watchdog_lost = False
        self._purge_op: Optional[_Op] = None
        self._shutdown_op: Optional[_Op] = None
        self.host_id: Optional[str] = None
        self.state_dir: Optional[Path] = None
        self.host_dir: Optional[Path] = None
        self.started = False
        self.last_reap = None  # what start() reaped
        self._dirty = threading.Event()
        self._rearms: List[float] = []
        self._registry_writer_alive = False
        self._save_warned = False

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, state_dir: Union[str, os.PathLike, None] = None) -> "Host":
        """Start the host (idempotent)."""
        with self._lock:
            if self._shutdown_op is not None and not self._shutdown_op.done():
                raise HostError("the host is shutting down")
            if self.started:
                return self
            if not (_proc.LINUX or sys.platform == "darwin"):
                raise PlatformNotSupported(
                    f"hostconsole supports Linux and macOS, not {sys.platform}: it cannot keep "
                    f"its promise that no provider outlives the kernel here"
                )
            root = _statedir.private_dir(state_dir or self._state_dir_arg or _statedir.default_state_dir())
            hosts = _statedir.private_dir(root / "hosts", "hosts directory")
            # Leftovers of dead hosts first: their ports and memory are what we'd trip on.
            from .reap import reap

            self.last_reap = reap(state_dir=root)
            if self.last_reap.records:
                print(f"hostconsole: {self.last_reap.summary()}", file=sys.stderr)
            self._owner = _proc.identity(os.getpid())
            self.host_id = secrets.token_hex(4)
            self.state_dir = root
            self.host_dir = _statedir.private_dir(hosts / self.host_id, "host directory")
            _statedir.private_dir(self.host_dir / "logs", "log directory")
            self._started_wall = time.time()
            self._save_warned = False
            try:
                self._watchdog = _Watchdog(self)
            except BaseException:
                _statedir.remove_tree(self.host_dir)
                self.host_dir = None
                raise
            self.started = True
            self._watchdog_lost = False
            _live_hosts.add(self)
            self._write_registry()  # at once: from now on the host is findable
            self._dirty.clear()
            self._registry_writer_alive = _start_thread(self._registry_writer, self.host_id,
                                                        name="hostconsole-registry")
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.shutdown()
        return False

    # --- running -------------------------------------------------------------------------

    def run(
        self,
        name: str,
        command: Union[str, Sequence[str]],
        *,
        shell: bool = False,
        env: Optional[Mapping[str, str]] = None,
        cwd: Union[str, os.PathLike, None] = None,
        requires: Union[str, Iterable[str]] = (),
        stop_signal: Union[str, int] = "TERM",
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        oneshot: bool = False,
        ready: Optional[str] = None,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        restart: str = "no",
        wait: bool = True,
        progress: Optional[Callable[[float, str], None]] = None,
    ) -> Provider:
        """Start provider ``name`` and return its handle.

        ``command`` is an argv list, or a string: split like a shell line, or with
        ``shell=True`` run by bash.  ``ready`` is a readiness check (``port:N``, an
        ``http://`` URL, ``log:REGEX``, ``cmd:SHELL``, ``none``); a oneshot is ready when it
        exits 0.  ``restart`` is ``no``, ``on-failure`` or ``always``.

        With ``wait`` (default) the call returns once the provider is ready, after its
        dependencies (``requires``) are; it raises ``ProviderFailed`` if the provider
        exits first or is not ready within ``ready_timeout`` (then it is stopped).
        Without ``wait`` it returns at once and all of that happens in the background.
        ``progress(elapsed, waiting_for)`` is called about every 0.25 s while waiting.
        Bad input raises before anything starts, and disturbs nothing.
        """
        check_name(name)
        env = _check_env(env)
        # The default is the caller's working directory now (not the watchdog's, "/").
        cwd = os.path.abspath(os.fspath(cwd)) if cwd is not None else os.getcwd()
        if not os.path.isdir(cwd):
            raise InvalidSpec(f"working directory {cwd!r} does not exist")
        if isinstance(requires, str):
            requires = [r for r in requires.split(",") if r.strip()]
        requires = tuple(r.strip() for r in requires)
        for r in requires:
            if r == name:
                raise InvalidSpec(f"provider {name!r} cannot require itself")
        sig = parse_signal(stop_signal)
        stop_timeout = check_timeout("stop timeout", stop_timeout)
        ready_timeout = check_timeout("ready timeout", ready_timeout)
        ready_spec = _ready.parse(ready)
        if restart not in RESTART_POLICIES:
            raise InvalidSpec(f"unknown restart policy {restart!r}: use no, on-failure or always")
        argv = self._argv(command, shell)
        merged = dict(os.environ)
        merged.update(env)
        exe = _resolve_executable(argv[0], cwd, merged)
        if shell:
            argv[0] = exe

        self.start()
        with self._lock:
            if self._shutdown_op is not None:
                raise HostError("the host is shutting down")
            old = self._providers.get(name)
            if old is not None and (old.state in ACTIVE or old._stopping is not None):
                raise DuplicateProvider(f"provider {name!r} already exists ({old.state}); stop it first or choose another name")
            for r in requires:
                if r not in self._providers:
                    raise UnknownDependency(f"unknown dependency {r!r}: start it before {name!r}")
            prov = Provider(self, name, argv, env=env, cwd=cwd, requires=requires, stop_signal=sig,
                            stop_timeout=stop_timeout, oneshot=bool(oneshot), shell=shell,
                            ready=ready_spec, ready_timeout=ready_timeout, restart=restart)
            if old is not None:
                prov.restarts = old.restarts
            self._providers[name] = prov  # reserves the name while we wait for dependencies

        def unreserve():
            with self._lock:
                if self._providers.get(name) is prov and prov.main is None:
                    if old is not None:
                        self._providers[name] = old
                    else:
                        del self._providers[name]
                    self._changed.notify_all()

        if not wait:
            def background():
                try:
                    self._await_requirements(prov, None)
                    self._check_port(prov)
                    self._launch(prov)
                except Exception as e:  # reported through the provider's state
                    with self._lock:
                        prov.state, prov.error = "failed", str(e)
                        self._save()
                        self._changed.notify_all()

            if not _start_thread(background, name=f"hostconsole-start-{name}"):
                unreserve()
                raise ProviderFailed(f"cannot start {name!r}: no thread to start it in the background "
                                     f"(process limit?)")
            return prov
        try:
            self._await_requirements(prov, progress)
            self._check_port(prov)
            self._launch(prov)
        except BaseException:
            unreserve()
            raise
        self._await_ready(prov, progress)
        return prov

    @staticmethod
    def _argv(command, shell) -> List[str]:
        if shell:
            if not isinstance(command, str):
                raise InvalidSpec("with shell=True the command must be a string")
            return ["bash" if shutil.which("bash") else "sh", "-c", command]
        if isinstance(command, str):
            try:
                argv = shlex.split(command)
            except ValueError as e:
                raise InvalidSpec(f"cannot split command {command!r}: {e}") from None
        else:
            argv = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in command]
            if not all(isinstance(a, str) for a in argv):
                raise InvalidSpec("every command argument must be a string")
        if not argv or not argv[0]:
            raise InvalidSpec("missing command")
        return argv

    def _await_requirements(self, prov: Provider, progress):
        """Wait until every dependency is ready; raise if one failed or stopped.

        Bounded by the provider's ready timeout."""
        timeout = prov.ready_timeout

        def check():
            for r in prov.requires:
                dep = self._providers.get(r)
                if dep is None or dep.ready:
                    continue
                if dep.state not in ACTIVE or dep.state == "stopping":
                    why = f"exit {dep.signal or dep.exit_code}" if dep.state in ("failed", "exited") else dep.state
                    raise ProviderFailed(f"cannot start {prov.name!r}: its dependency {r!r} is {dep.state} ({why})")
                return False
            return True

        t0 = time.monotonic()
        with self._lock:
            while not check():
                left = t0 + timeout - time.monotonic()
                if left <= 0:
                    waiting = [r for r in prov.requires if not self._providers[r].ready]
                    raise ProviderFailed(
                        f"cannot start {prov.name!r}: dependencies {', '.join(waiting)} not ready after {timeout:g}s"
                    )
                self._changed.wait(min(left, PROGRESS_INTERVAL))
                if progress is not None:
                    waiting = [r for r in prov.requires if not self._providers[r].ready]
                    self._unlocked(progress, time.monotonic() - t0, f"dependencies {', '.join(waiting)}")

    def _launch(self, prov: Provider):
        """Spawn one incarnation of ``prov`` and watch it until it is ready."""
        with prov._life:
            with self._lock:
                if prov.state not in ("starting", "restarting") or self._shutdown_op is not None:
                    raise ProviderFailed(f"provider {prov.name!r} was stopped before it started")
            self._spawn(prov)
        with self._lock:
            inc = prov.incarnation
            watch = prov.state == "starting"
        if watch:
            if not _start_thread(self._monitor_ready, prov, inc, name=f"hostconsole-ready-{prov.name}"):
                self._fail_start(prov, inc, "cannot watch its readiness: no thread (process limit?); it was stopped")

    def _spawn(self, prov: Provider):
        # Someone may have deleted the state (a cleanup script, rm -rf): make it again
        # rather than fail every start from now on.
        log = _statedir.private_dir(self.host_dir / "logs", "log directory") / _statedir.log_name(prov.name)
        env = dict(os.environ)
        env.pop("HOSTCONSOLE_PROVIDER", None)
        env.update(prov.env)
        env.update(self._markers(prov.name))
        msg = dict(name=prov.name, argv=prov.argv, env=env, cwd=prov.cwd, log=str(log),
                   log_max=self.log_max_bytes, stop_signal=prov.stop_signal,
                   stop_timeout=prov.stop_timeout, requires=list(prov.requires))
        try:
            offset = log.stat().st_size
        except OSError:
            offset = 0

        def started(reply):
            # Runs on the channel's reader thread, before any later event is read.
            if "pid" in reply:
                with self._lock:
                    current = self._providers.get(prov.name)
                    if current is not prov:
                        # Its run() was interrupted while the spawn was on its way.  An
                        # interrupt stops only the waiting: the provider is ours, recorded.
                        if current is None or (current.state not in ACTIVE and current._stopping is None):
                            self._providers[prov.name] = prov
                        else:  # the name was taken meanwhile: this one must not run
                            prov.main = ProcId(reply["pid"], reply["start"])
                            prov.state = "stopping"
                            if not _start_thread(self._stop, [prov], name="hostconsole-stop"):
                                _proc.send_group(prov.main.pid, prov.main, signal.SIGKILL)
                            return
                    prov.incarnation += 1
                    prov.log_path, prov.log_offset = log, offset
                    prov.main = ProcId(reply["pid"], reply["start"])
                    prov.started_at = time.monotonic()
                    prov.started_wall = time.time()
                    prov.exit_code = prov.signal = prov.error = None
                    prov.state = "starting"
                    if not prov.oneshot and prov.ready_spec.kind == "none":
                        prov.state = "running"
                    self._save()
                    self._changed.notify_all()

        reply = self._request("spawn", on_reply=started, **msg)
        err = reply.get("error")
        if err:
            text = err.get("message") or err.get("type")
            if err.get("type") in ("FileNotFoundError", "PermissionError", "NotADirectoryError"):
                raise ExecutableNotFound(f"cannot execute {prov.argv[0]!r}: {text}")
            raise ProviderFailed(f"cannot start {prov.name!r}: {text}")

    def _monitor_ready(self, prov: Provider, inc: int):
        """Probe one incarnation until it is ready, ends, or runs out of time.

        A oneshot has no probe: its exit (seen by ``_on_exit``) is its readiness, and
        only the deadline is watched here."""
        deadline = time.monotonic() + prov.ready_timeout
        what = "exit 0" if prov.oneshot else prov.ready_spec.describe()
        pause = 0.02
        while True:
            with self._lock:
                if prov.incarnation != inc or prov.state != "starting":
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail_start(prov, inc, f"not ready after {prov.ready_timeout:g}s: waited for {what}; "
                                            f"it was stopped")
                return
            ok = False
            if not prov.oneshot:
                try:
                    ok = prov.ready_spec.check(prov.log_path, prov.log_offset, left)
                except Exception:  # a probe that breaks is a probe that says "not yet"
                    ok = False
            with self._lock:
                if ok:
                    if prov.incarnation == inc and prov.state == "starting":
                        prov.state = "running"
                        self._save()
                        self._changed.notify_all()
                    return
                # Woken early by any state change (an exit, a stop).
                self._changed.wait(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 1.5, 0.25 if not prov.oneshot else 1.0)

    def _fail_start(self, prov: Provider, inc: int, reason: str):
        with self._lock:
            if prov.incarnation != inc or prov.state != "starting":
                return
            prov.state, prov.error = "failed", reason
            prov._failing = True  # a waiter reports the failure once the tree is gone
            self._changed.notify_all()
        try:
            self._stop([prov])  # "failed" is not active: it stays failed, its tree goes
        finally:
            with self._lock:
                prov._failing = False
                self._save()
                self._changed.notify_all()

    def _await_ready(self, prov: Provider, progress):
        """Wait (bounded by the ready timeout, plus the stop it may cause) until ``prov`` is
        ready; raise ProviderFailed with its last output if it fails instead."""
        if not prov.oneshot and prov.ready_spec.kind == "none":
            return  # ready the moment it was spawned, whatever it has done since
        t0 = time.monotonic()
        what = "exit 0" if prov.oneshot else prov.ready_spec.describe()
        limit = prov.ready_timeout + prov.stop_timeout + 5.0
        with self._lock:
            while True:
                if prov.ready:
                    return
                if prov.state not in ACTIVE and not prov._failing:
                    break
                if time.monotonic() - t0 > limit:
                    break
                self._changed.wait(PROGRESS_INTERVAL)
                if progress is not None and prov.state in ACTIVE:
                    self._unlocked(progress, time.monotonic() - t0, what)
            state, error = prov.state, prov.error
            code = prov.signal or prov.exit_code
        if error is None:
            how = f"exit code {code}" if isinstance(code, int) else f"killed by {code}"
            if state not in ("exited", "failed"):
                error = f"is {state}"
            elif prov.oneshot:
                error = f"failed ({how})"
            else:
                error = f"exited ({how}) before it became ready"
        tail = self.logs(prov.name, 10).rstrip()
        kind = "oneshot" if prov.oneshot else "provider"
        raise ProviderFailed(f"{kind} {prov.name!r} {error}" + (f"; last output:\n{tail}" if tail else "; no output"))

    def _unlocked(self, fn, *args):
        """Call ``fn`` (user code: a progress display) without holding the host's lock,
        which the watchdog's reader thread needs; we hold it exactly once here."""
        self._lock.release()
        try:
            fn(*args)
        finally:
            self._lock.acquire()

    def _check_port(self, prov: Provider):
        """Refuse at once if the port the readiness check names is already taken.

        A leftover of a dead host that its own watchdog is still stopping is waited for
        (briefly), since it is about to free the port."""
        port = prov.ready_spec.port
        if port is None or not _ready.port_open(port):
            return
        deadline = time.monotonic() + 10.0
        while True:
            holders = _ready.port_holders(port)
            if not holders and not _ready.port_open(port):
                return  # its holder went away while we looked
            described, dying = [], False
            for pid, cmd in holders or [(None, "")]:
                text, leftover_being_stopped = self._describe_holder(pid, cmd)
                described.append(text)
                dying = dying or leftover_being_stopped
            if dying and time.monotonic() < deadline:
                time.sleep(0.1)
                if not _ready.port_open(port):
                    return
                continue
            raise PortInUse(f"port {port} is already taken by {'; '.join(described)}")

    def _describe_holder(self, pid, cmd):
        """One phrase for whoever holds a port; and whether it is a dying leftover."""
        if pid is None:
            return "a process this user cannot see (another user's?)", False
        m = _proc.markers(pid)
        what = f"pid {pid} ({cmd})" if cmd else f"pid {pid}"
        hid, name = m.get("HOSTCONSOLE_HOST"), m.get("HOSTCONSOLE_PROVIDER")
        if not hid:
            # A process in exit has lost its memory (no environment, no command line) a
            # moment before it closes its sockets: it is about to free the port.
            exiting = not cmd and not _proc.environ_readable(pid)
            return what + (" (exiting)" if exiting else ""), exiting
        if hid == self.host_id:
            return f"provider {name!r} of this host, {what}", False
        from .reap import _owner

        owner = _owner(m)
        if owner is not None and _proc.alive(owner):
            return f"provider {name!r} of live host {hid} (owner pid {owner.pid}), {what}", False
        rec = registry.read(self.state_dir / "hosts" / hid) if self.state_dir else None
        stopping = rec is not None and rec.watchdog is not None and _proc.alive(rec.watchdog)
        return (f"a leftover of dead host {hid} (provider {name!r}), {what}: "
                f"run `%host reap` or hostconsole.reap() to stop it"), stopping

    def _markers(self, name: Optional[str]) -> Dict[str, str]:
        """The environment that makes a process recognisably this host's.

        HOSTCONSOLE_OWNER (pid:start of the owning process) lets anyone decide whether the
        host is alive from the process alone, with no registry; HOSTCONSOLE_STATE_DIR says
        which state directory's reap may judge it.
        """
        m = {
            "HOSTCONSOLE_HOST": self.host_id,
            "HOSTCONSOLE_OWNER": f"{self._owner.pid}:{self._owner.start}",
            "HOSTCONSOLE_STATE_DIR": str(self.state_dir),
        }
        if name is not None:
            m["HOSTCONSOLE_PROVIDER"] = name
        return m

    def _save(self):
        """Note that the registry entry needs rewriting (cheap: called on every change).

        The writer thread rewrites it within ~50 ms, off the paths of start and stop
        (a synchronous write there cost ~1 ms a provider).  Readers of the registry
        (``hostconsole ps``) see a change well within a second; nothing that decides
        what to signal depends on it being current."""
        if self._registry_writer_alive:
            self._dirty.set()
        else:
            self._write_registry()

    def _registry_writer(self, host_id: str):
        # Tied to the start that made it: a host shut down and started again (a reload of
        # the extension) has a new writer, and this one must not write beside it.
        while True:
            self._dirty.wait()
            if not self.started or self.host_id != host_id:
                return
            time.sleep(REGISTRY_COALESCE)  # one write for a burst of changes
            self._dirty.clear()
            self._write_registry()

    def _write_registry(self):
        with self._lock:
            data = self._registry_record()
            host_dir = self.host_dir
        if data is None:
            return
        try:
            if not host_dir.is_dir():
                _statedir.private_dir(host_dir, "host directory")
            registry.write_atomic(host_dir / registry.HOST_FILE, data)
        except (OSError, HostError) as e:
            if not self._save_warned:
                self._save_warned = True
                print(f"hostconsole: cannot write the registry entry of host {self.host_id}: {e}", file=sys.stderr)

    def _registry_record(self) -> Optional[dict]:
        if not self.started or self.host_dir is None:
            return None
        wd = self._watchdog
        provs = {}
        for p in self._providers.values():
            provs[p.name] = {
                "pid": p.main.pid if p.main else None, "start": p.main.start if p.main else None,
                "pgid": p.main.pid if p.main else None, "state": p.state, "kind": p.kind,
                "requires": list(p.requires), "stop_signal": p.stop_signal, "stop_timeout": p.stop_timeout,
                "argv": p.argv, "restarts": p.restarts, "exit_code": p.exit_code, "signal": p.signal,
                "started": p.started_wall,
            }
        data = {
            "version": registry.VERSION,
            "host": self.host_id,
            "owner": {"pid": self._owner.pid, "start": self._owner.start},
            "owner_argv": sys.argv[:8],
            "kind": "kernel" if "ipykernel" in sys.modules else "script",
            "started": self._started_wall,
            "state_dir": str(self.state_dir),
            "watchdog": {"pid": wd.ident.pid, "start": wd.ident.start} if wd is not None and wd.ident else None,
            "watchdog_alive": wd is not None and not wd.lost,
            "providers": provs,
        }
        return data

    def _wait_for(self, prov, predicate, timeout) -> Optional[str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not predicate():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._changed.wait(0.5 if left is None else min(left, 0.5))
            return prov.state

    def _on_exit(self, msg):
        """A provider's main process ended (reported by the watchdog, which reaped it)."""
        with self._lock:
            prov = self._providers.get(msg["name"])
            if prov is None or prov.main != ProcId(msg["pid"], msg["start"]):
                return
            prov.exit_code, prov.signal = msg["exit_code"], msg["signal"]
            if msg.get("unknown"):
                prov.error = "ended while guarded by a replacement watchdog: its exit status is unknown"
            if prov.state in ("starting", "running"):
                ok = prov.exit_code == 0
                if prov.oneshot and ok:
                    prov.state = "exited"  # done: that is a oneshot's readiness
                elif prov.restart_policy == "always" or (prov.restart_policy == "on-failure" and not ok):
                    self._schedule_restart(prov)
                else:
                    prov.state = "exited" if ok else "failed"
            self._save()
            self._changed.notify_all()

    def _schedule_restart(self, prov: Provider):
        """Restart with exponential backoff, at most ``restart_limit`` times within
        ``restart_window`` seconds; past that the provider is failed and stays down
        (OTP's restart intensity).  Call with the lock held."""
        now = time.monotonic()
        recent = [t for t in prov._restart_times if now - t < self.restart_window]
        if len(recent) >= self.restart_limit:
            prov.state = "failed"
            prov.error = (f"restarted {len(recent)} times within {self.restart_window:g}s "
                          f"(last exit {prov.signal or prov.exit_code}); giving up")
            prov._restart_times = recent
            return
        delay = min(self.restart_backoff_max, self.restart_backoff * (2 ** len(recent)))
        prov._restart_times = recent + [now]
        prov.state = "restarting"
        prov.restarts += 1
        timer = threading.Timer(delay, self._respawn, args=(prov, prov.incarnation))
        timer.daemon = True
        try:
            timer.start()
        except RuntimeError:
            prov.state = "failed"
            prov.error = f"could not schedule its restart: no thread (process limit?); last exit {prov.signal or prov.exit_code}"

    def _respawn(self, prov: Provider, inc: int):
        with self._lock:
            if prov.state != "restarting" or prov.incarnation != inc:
                return  # stopped (or restarted by hand) meanwhile
        try:
            self._launch(prov)
        except Exception as e:
            with self._lock:
                if prov.state == "restarting":
                    prov.state, prov.error = "failed", f"restart failed: {e}"
                    self._save()
                    self._changed.notify_all()

    def _on_control(self, wd: "_Watchdog", msg: dict):
        """A request from outside (``hostconsole stop``), relayed by the watchdog."""
        try:
            if msg.get("op") == "purge":
                report = self.purge(msg.get("timeout"))
                answer = {"ok": True, "host": self.host_id, "report": report.records, "seconds": report.seconds}
            else:
                answer = {"ok": False, "error": f"unknown request {msg.get('op')!r}"}
        except Exception as e:
            answer = {"ok": False, "error": str(e)}
        try:
            wd.request("control_done", cid=msg.get("cid"), **answer)
        except (HostError, _WatchdogLost):
            pass

    def _on_watchdog_lost(self, wd: _Watchdog):
        with self._lock:
            if self._watchdog is wd and self.started and self._shutdown_op is None:
                self._watchdog_lost = True
                self._save()
                now = time.monotonic()
                self._rearms = [t for t in self._rearms if now - t < REARM_WINDOW]
                rearm = len(self._rearms) < REARM_LIMIT
                if rearm:
                    self._rearms.append(now)
                print(
                    f"hostconsole: host {self.host_id}: its watchdog (pid {wd.pid}) is gone; "
                    + ("starting a new one to take over the running providers" if rearm else
                       f"not restarting it again ({REARM_LIMIT} times within {REARM_WINDOW:g}s); providers "
                       f"keep running and are stopped by this host's shutdown, or by the next reap"),
                    file=sys.stderr,
                )
                if rearm:
                    _start_thread(self._rearm, wd, name="hostconsole-rearm")
            self._changed.notify_all()

    def _rearm(self, lost: _Watchdog):
        """A new watchdog for a host whose watchdog died, adopting its running providers:
        crash safety comes back without a restart.  Their trees are found by marker, as
        the old watchdog's tracking went with it."""
        with self._lock:
            if self._watchdog is not lost or not self.started or self._shutdown_op is not None:
                return  # shut down meanwhile
        try:
            wd = _Watchdog(self)
        except Exception as e:
            if self.started:
                print(f"hostconsole: host {self.host_id}: no new watchdog: {e}", file=sys.stderr)
            return
        with self._lock:
            if self._watchdog is not lost or not self.started or self._shutdown_op is not None:
                wd.close(timeout=2.0)
                return
            provs = [p for p in self._providers.values()
                     if p.main is not None and p.state in ACTIVE and p._stopping is None]
        targets = [self._target(p) for p in provs]
        Finder(self.host_id or "", user_universe).find(targets)
        adopted = 0
        for p, t in zip(provs, targets):
            try:
                reply = wd.request("adopt", name=p.name, pid=p.main.pid, start=p.main.start,
                                   stop_signal=p.stop_signal, stop_timeout=p.stop_timeout,
                                   requires=list(p.requires), members=[list(i) for i in t.members.values()],
                                   log=str(p.log_path) if p.log_path else None, log_max=self.log_max_bytes)
                adopted += "adopted" in reply
            except (_WatchdogLost, HostError):
                return  # that one died too: its own loss handler takes it from here
        with self._lock:
            if self._watchdog is lost:
                self._watchdog = wd
                self._watchdog_lost = False
                self._save()
                self._changed.notify_all()
            else:
                wd.close(timeout=2.0)
                return
        print(f"hostconsole: host {self.host_id}: new watchdog (pid {wd.pid}) took over {adopted} provider(s)",
              file=sys.stderr)

    def _request(self, op, **fields) -> dict:
        wd = self._watchdog
        if wd is None or wd.lost:
            raise HostError("the host's watchdog is gone; restart the host (shutdown, then start)")
        try:
            return wd.request(op, **fields)
        except _WatchdogLost:
            raise HostError("the host's watchdog is gone; restart the host (shutdown, then start)") from None

    # --- looking -------------------------------------------------------------------------

    def _get(self, name: str) -> Provider:
        prov = self._providers.get(name)
        if prov is None:
            raise UnknownProvider(f"no provider named {name!r}")
        return prov

    def provider(self, name: str) -> Provider:
        with self._lock:
            return self._get(name)

    def __getitem__(self, name: str) -> Provider:
        return self.provider(name)

    def __contains__(self, name: str) -> bool:
        return name in self._providers

    def _trees(self, provs: Sequence[Provider]) -> Dict[str, List[ProcId]]:
        """Every live process of each provider's tree."""
        if self._watchdog is not None and not self._watchdog.lost:
            try:
                reply = self._watchdog.request("tree", names=[p.name for p in provs])
                return {n: [ProcId(*x) for x in v] for n, v in reply.get("trees", {}).items()}
            except (_WatchdogLost, HostError):
                pass
        targets = [self._target(p) for p in provs if p.main is not None]
        Finder(self.host_id or "", user_universe).find(targets)
        return {t.name: list(t.members.values()) for t in targets}

    def ps(self, all: bool = False) -> PsTable:
        """A table of providers with live figures for each whole process tree.

        Without ``all``, providers stopped by the user or a purge are left out.
        """
        with self._lock:
            provs = [p for p in self._providers.values() if all or p.state != "stopped"]
        trees = self._trees(provs) if provs else {}
        figures = _figures(trees)
        records = []
        for p in provs:
            rec = {
                "name": p.name,
                "kind": p.kind,
                "state": p.state,
                "pid": p.pid,
                "uptime": p.uptime,
                "restarts": p.restarts,
                "exit_code": p.exit_code,
                "signal": p.signal,
            }
            rec.update(figures.get(p.name) or {"cpu_percent": 0.0, "rss": 0, "nprocs": 0, "ports": []})
            rec["ready"] = str(p.ready_spec)
            rec["restart"] = p.restart_policy
            rec["error"] = p.error
            records.append(rec)
        notes = []
        if self._watchdog_lost:
            notes.append("this host's watchdog died: providers keep running, but if this process dies now "
                         "they are left to the next reap; shut the host down and start it again to re-arm it")
        return PsTable(records, notes)

    def logs(self, name: str, n: int = 100) -> str:
        """The last ``n`` lines of a provider's stdout and stderr."""
        with self._lock:
            prov = self._get(name)
            path = prov.log_path
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidSpec(f"number of lines must be a non-negative integer, not {n!r}")
        return _statedir.tail(path, n) if path is not None else ""

    def follow(self, name: str, n: int = 10, poll: float = 0.1) -> Iterator[str]:
        """Yield the last ``n`` lines of a provider's output, then new output as it comes.

        Never ends by itself: stop iterating (or interrupt) to stop following.  Follows
        the provider across restarts and log rotation."""
        with self._lock:
            path = self._get(name).log_path
        pos = _statedir.size(path)  # before the tail is read: nothing written since is lost
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidSpec(f"number of lines must be a non-negative integer, not {n!r}")
        first = _statedir.tail(path, n, end=pos) if path is not None else ""
        if first:
            yield first
        while True:
            with self._lock:
                path = self._providers[name].log_path if name in self._providers else path
            size = _statedir.size(path)
            if size < pos:  # rotated or truncated: start over at its beginning
                pos = 0
            if size > pos:
                with open(path, "rb") as f:
                    f.seek(pos)
                    data = f.read(size - pos)
                pos += len(data)
                yield data.decode("utf-8", errors="replace")
            else:
                time.sleep(poll)

    def status(self) -> dict:
        with self._lock:
            counts: Dict[str, int] = {}
            for p in self._providers.values():
                counts[p.state] = counts.get(p.state, 0) + 1
            wd = self._watchdog
            return {
                "host": self.host_id,
                "started": self.started,
                "pid": os.getpid(),
                "watchdog_pid": wd.pid if wd is not None else None,
                "watchdog_alive": wd is not None and not wd.lost,
                "state_dir": str(self.state_dir) if self.state_dir else None,
                "providers": counts,
                "reaped_at_start": self.last_reap.found if self.last_reap is not None else 0,
            }

    # --- stopping ------------------------------------------------------------------------

    def _target(self, p: Provider) -> Target:
        return Target(p.name, p.main, p.main.pid if p.main else None, p.stop_signal, p.stop_timeout)

    def _requires_map(self) -> Dict[str, tuple]:
        return {n: p.requires for n, p in self._providers.items()}

    def _dependents_closure(self, names: Iterable[str]) -> List[str]:
        out = list(dict.fromkeys(names))
        i = 0
        while i < len(out):
            for n, p in self._providers.items():
                if out[i] in p.requires and n not in out:
                    out.append(n)
            i += 1
        return out

    def stop(self, *names: str, timeout: Optional[float] = None) -> StopReport:
        """Stop providers and, first, everything that depends on them.

        ``timeout``: SIGKILL reaches everything no later than this many seconds after
        the stop began, whatever the providers' own stop timeouts."""
        if len(names) == 1 and not isinstance(names[0], str):
            names = tuple(names[0])
        cap = check_timeout("timeout", timeout, allow_none=True)
        with self._lock:
            for n in names:
                self._get(n)
            provs = [self._providers[n] for n in self._dependents_closure(names)]
        return self._stop(provs, cap)

    def restart(self, name: str, progress: Optional[Callable[[float, str], None]] = None) -> Provider:
        """Stop ``name`` (and its dependents), start it again, then bring its dependents back."""
        with self._lock:
            prov = self._get(name)
            closure = [self._providers[n] for n in self._dependents_closure([name])]
            was_active = {p.name for p in closure if p.state in ACTIVE}
        self._stop(closure)
        with self._lock:
            stop_order = order_for_stop([p.name for p in closure], self._requires_map())
        start_order = [self._providers[n] for level in reversed(stop_order) for n in level]
        new = None
        for p in start_order:
            if p is prov or p.name in was_active:
                started = self.run(p.name, p.argv, env=p.env, cwd=p.cwd, requires=p.requires,
                                   stop_signal=p.stop_signal, stop_timeout=p.stop_timeout,
                                   oneshot=p.oneshot, ready=p.ready_spec, ready_timeout=p.ready_timeout,
                                   restart=p.restart_policy, progress=progress)
                started.restarts = p.restarts + 1 if p is prov else p.restarts
                started.shell = p.shell
                new = new or started
        return new

    def _stop(self, provs: Sequence[Provider], cap: Optional[float] = None, sweep: bool = False) -> StopReport:
        """The one stop path: stop ``provs`` (each once, however many callers ask)."""
        t0 = time.monotonic()
        # A launch in flight (first start or respawn) finishes before we look: a process
        # spawned at the same moment as the stop is never missed.
        lives = sorted({id(p): p for p in provs}.values(), key=lambda p: p.name)
        for p in lives:
            p._life.acquire()
        try:
            with self._lock:
                for p in provs:
                    if p.main is None and p.state in ACTIVE:
                        p.state = "stopped"  # still waiting to start: it never will
                mine = [p for p in provs if p._stopping is None and p.main is not None]
                op = None
                if mine:
                    op = _Op()
                    for p in mine:
                        p._stopping = op
                        if p.state in ACTIVE:
                            p.state = "stopping"
                    self._changed.notify_all()
                ops = list(dict.fromkeys(p._stopping for p in provs if p._stopping is not None))
        finally:
            for p in lives:
                p._life.release()
        if op is not None:
            # Outside every lock: the channel's reader needs the host's lock to deliver
            # the exits that come ahead of the stop's reply (and without a spare thread,
            # the stop runs right here).
            op.run_in_thread(self._execute_stop, mine, cap, sweep, name="hostconsole-stop")
        outcomes: Dict[str, dict] = {}
        for o in ops:
            outcomes.update(o.result())
        wanted = {p.name for p in provs}
        records = [r for n, r in outcomes.items() if n in wanted]  # in the order they were stopped
        return StopReport(records, seconds=time.monotonic() - t0)

    def _execute_stop(self, provs: List[Provider], cap: Optional[float], sweep: bool = False) -> Dict[str, dict]:
        names = [p.name for p in provs]
        with self._lock:
            levels = order_for_stop(names, self._requires_map())
        outcomes: Optional[List[dict]] = None
        wd = self._watchdog
        if wd is not None and not wd.lost:
            try:
                reply = wd.request("stop", timeout=None, levels=levels, within=cap, sweep=sweep)
                if "report" in reply:
                    outcomes = reply["report"]
            except _WatchdogLost:
                outcomes = None
        if outcomes is None:
            # No watchdog to do it: the same ladder, from here, over this user's processes.
            by_name = {p.name: p for p in provs}
            targets = [[self._target(by_name[n]) for n in level] for level in levels]
            found = stop_levels(targets, Finder(self.host_id or "", user_universe), within=cap)
            outcomes = [o.as_dict() for o in found]
        result = {o["name"]: o for o in outcomes if o["name"] in names}
        with self._lock:
            for p in provs:
                o = result.get(p.name)
                if o is not None and o["outcome"] != "gone" and (o["exit_code"] is not None or o["signal"]):
                    p.exit_code, p.signal = o["exit_code"], o["signal"]
                if p.state in ACTIVE:
                    p.state = "stopped"
                p._stopping = None
                result.setdefault(p.name, {"name": p.name, "outcome": "gone", "exit_code": p.exit_code,
                                           "signal": p.signal, "seconds": 0.0, "survivors": []})
            self._save()
            self._changed.notify_all()
        return result

    def purge(self, timeout: Optional[float] = None) -> StopReport:
        """Stop every provider, dependents first; the host stays up.

        Idempotent and deduplicated: concurrent callers (threads, a signal handler) all
        wait for the same purge and get its report.  ``timeout``: SIGKILL reaches every
        tree no later than this many seconds after the purge began, however many levels
        of dependencies there are.
        """
        cap = check_timeout("timeout", timeout, allow_none=True)
        with self._lock:
            op = self._purge_op
            mine = op is None
            if mine:
                op = self._purge_op = _Op()
        if mine:  # started outside the lock: see _stop
            op.run_in_thread(self._do_purge, op, cap, name="hostconsole-purge")
        return op.result()

    def _do_purge(self, op: _Op, cap):
        try:
            with self._lock:
                provs = [p for p in self._providers.values() if p.main is not None]
            return self._stop(provs, cap, sweep=True)
        finally:
            with self._lock:
                if self._purge_op is op:
                    self._purge_op = None

    def shutdown(self, timeout: Optional[float] = None) -> StopReport:
        """Purge, then release everything the host holds (watchdog, logs, state).

        Every way out of a session ends here; concurrent and repeated calls share it.
        """
        with self._lock:
            if not self.started and self._shutdown_op is None:
                return StopReport([])
            op = self._shutdown_op
            mine = op is None
            if mine:
                op = self._shutdown_op = _Op()
        if mine:  # started outside the lock: see _stop
            op.run_in_thread(self._do_shutdown, timeout, name="hostconsole-shutdown")
        return op.result()

    def _do_shutdown(self, timeout):
        try:
            report = self.purge(timeout)  # execution first ...
            with self._lock:
                wd, self._watchdog = self._watchdog, None
                host_dir = self.host_dir
            if wd is not None:
                wd.close()  # ... then release, from one place
            _statedir.remove_tree(host_dir)
            return report
        finally:
            with self._lock:
                self._providers.clear()
                self.started = False
                self._registry_writer_alive = False
                self._dirty.set()  # wakes the writer, which sees the host stopped and ends
                self._shutdown_op = None
                self.host_dir = None
                _live_hosts.discard(self)
                self._changed.notify_all()

    def __repr__(self):
        if not self.started:
            return "<hostconsole.Host (not started)>"
        with self._lock:
            n = sum(p.state in ACTIVE for p in self._providers.values())
        return f"<hostconsole.Host {self.host_id}: {n} active provider{'s' if n != 1 else ''}, state {self.state_dir}>"


# --- live figures -------------------------------------------------------------------------

_ps_cache: Dict[ProcId, "object"] = {}
_ps_lock = threading.Lock()


def _figures(trees: Mapping[str, Sequence[ProcId]]) -> Dict[str, dict]:
    """cpu %, rss, process count and listening TCP ports of each tree, in one pass.

    psutil.Process objects are kept between calls (by identity), because cpu % is the
    usage since the previous call; the first sighting of a process reports 0.0.
    """
    import psutil

    out = {}
    with _ps_lock:
        for name, idents in trees.items():
            cpu, rss, n, ports = 0.0, 0, 0, set()
            for ident in idents:
                proc = _ps_cache.get(ident)
                try:
                    if proc is None:
                        proc = psutil.Process(ident.pid)
                        proc.cpu_percent(None)  # primes the counter
                        _ps_cache[ident] = proc
                    with proc.oneshot():
                        cpu += proc.cpu_percent(None)
                        rss += proc.memory_info().rss
                    conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") \
                        else proc.connections(kind="tcp")
                    ports.update(c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN)
                    n += 1
                except psutil.Error:
                    _ps_cache.pop(ident, None)
            out[name] = {"cpu_percent": round(cpu, 1), "rss": rss, "nprocs": n, "ports": sorted(ports)}
        seen = {i for idents in trees.values() for i in idents}
        for key in [k for k in _ps_cache if k not in seen]:
            del _ps_cache[key]
    return out


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
def _shutdown_all_at_exit():
    for host in list(_live_hosts):
        try:
            host.shutdown()
        except Exception as e:  # exit must go on; the watchdog finishes what we could not
            print(f"hostconsole: shutdown at exit failed: {e}", file=sys.stderr)


def _forget_hosts_in_child():
    # A fork of the owner (multiprocessing, say) must neither keep the watchdog's socket
    # open -- end-of-file on it is how the watchdog learns that the owner died -- nor stop
    # the parent's providers when it exits.  In the child, every host starts afresh.
    for host in list(_live_hosts):
        wd, host._watchdog = host._watchdog, None
        if wd is not None:
            try:
                os.close(wd.channel.sock.detach())
            except OSError:
                pass
        host._lock = threading.RLock()
        host._changed = threading.Condition(host._lock)
        host._providers = {}
        host._purge_op = host._shutdown_op = None
        host.started = False
    _live_hosts.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_hosts_in_child)
