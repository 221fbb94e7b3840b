"""A host session: everything a started host holds, from ``start()`` to ``shutdown()``.

``Host.start()`` makes a ``Session``; ``shutdown()`` closes it and drops it.  While a host
has none, it is simply not started: nothing outside this module asks "started yet?" of a
half-made host.  A session owns

* its identity: host id, state dir, host dir (``STATE_DIR/hosts/ID``), the owner's identity
  and the markers every process of the host carries;
* its watchdog (``WatchdogClient``) -- and the replacement of a watchdog that died: a new one
  is started and adopts the running providers (at most ``REARM_LIMIT`` times a minute);
* what a provider's tree is when the watchdog cannot say (``own_trees``: its cell and
  recorded members), for the host's own stops and ``ps``, and a replacement's adoption;
* its registry writer (``RegistryPublisher``);
* the run counter of each provider name (the run headers of its log).

Threads: the watchdog's reader delivers ``on_exit``/``on_lost``; ``on_control`` runs on a
thread of its own; a replacement watchdog is started on ``hostconsole-rearm``.  The table's
lock guards ``watchdog``, ``watchdog_lost`` and ``closing``.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _fence, _proc, _statedir, registry
from . import _logfiles
from ._logfiles import log_name
from ._proc import ProcId, ProcStat
from ._publish import RegistryPublisher
from ._stop import Finder, Target, user_universe
from ._watchdog_client import WatchdogClient, WatchdogListener, WatchdogLost, start_thread
from .errors import HostError
from .provider import Provider, ProviderTable
from .state import ACTIVE

REARM_LIMIT, REARM_WINDOW = 3, 60.0  # new watchdogs after a loss, at most this many a minute


class Session(WatchdogListener):
    def __init__(self, state_dir: Path, table: ProviderTable, *, log_max_bytes: int, log_key: str,
                 on_exit: Callable[[Dict[str, Any]], None], on_stopped: Callable[[Dict[str, Any]], None],
                 on_control: Callable[[Dict[str, Any]], Dict[str, Any]],
                 snapshot: Callable[["Session"], Optional[registry.HostRecord]]):
        self.table = table
        self.log_max_bytes = log_max_bytes
        self.log_key = log_key
        self._on_exit = on_exit
        self._on_stopped = on_stopped
        self._on_control = on_control
        self.state_dir = state_dir
        hosts = _statedir.private_dir(state_dir / "hosts", "hosts directory")
        owner = _proc.identity(os.getpid())
        if owner is None:
            raise HostError("cannot read this process's own identity from the process table")
        self.owner: ProcId = owner
        self.host_id = secrets.token_hex(4)
        self.host_dir = _statedir.private_dir(hosts / self.host_id, "host directory")
        self.logs_dir = str(_statedir.private_dir(self.host_dir / "logs", "log directory"))
        self.started_wall = time.time()
        self.runs: Dict[str, int] = {}
        self.cpu = _proc.CpuSampler()  # for figures gathered without the watchdog
        self.closing = False
        self.handed_over = False  # the watchdog finishes the stops under way: see hand_over
        self.watchdog_lost = False
        self._rearms: List[float] = []
        try:
            self.watchdog: WatchdogClient = self._new_watchdog()
        except BaseException:
            _statedir.remove_tree(self.host_dir)
            raise
        self.publisher = RegistryPublisher(self.host_dir, lambda: snapshot(self))

    def markers(self, name: Optional[str]) -> Dict[str, str]:
        """The environment that makes a process recognisably this host's.

        HOSTCONSOLE_OWNER (pid:start of the owning process) lets anyone decide whether the
        host is alive from the process alone, with no registry; HOSTCONSOLE_STATE_DIR says
        which state directory's reap may judge it.
        """
        m = {
            "HOSTCONSOLE_HOST": self.host_id,
            "HOSTCONSOLE_OWNER": f"{self.owner.pid}:{self.owner.start}",
            "HOSTCONSOLE_STATE_DIR": str(self.state_dir),
        }
        if name is not None:
            m["HOSTCONSOLE_PROVIDER"] = name
        return m

    def log_path(self, name: str) -> str:
        logs = self.logs_dir
        if not os.path.isdir(logs):
            # Someone deleted the state (a cleanup script, rm -rf): make it again rather
            # than fail every start from now on.
            _statedir.private_dir(logs, "log directory")
        return os.path.join(logs, log_name(name))

    def next_run(self, name: str) -> int:
        self.runs[name] = self.runs.get(name, 0) + 1
        return self.runs[name]

    def request(self, op: str, **fields: Any) -> Dict[str, Any]:
        wd = self.watchdog
        if self.watchdog_lost or wd.lost:
            raise HostError("the host's watchdog is gone; restart the host (shutdown, then start)")
        try:
            return wd.request(op, **fields)
        except WatchdogLost:
            raise HostError("the host's watchdog is gone; restart the host (shutdown, then start)") from None

    def close(self) -> None:
        """Release everything (the providers are already stopped); the logs are kept as
        this owner's previous logs."""
        self.publisher.close()
        self.watchdog.close()
        # (the watchdog removes its host's empty cells as it exits; one that died did not)
        _fence.remove_host_cells(self.watchdog.fence, self.host_id)
        _logfiles.keep_previous(self.host_dir, self.state_dir, self.log_key)
        _statedir.remove_tree(self.host_dir)

    def hand_over(self) -> None:
        """Leave the stops under way to the watchdog: it finishes them, reports and exits.
        The host directory stays (the watchdog still writes there); reap removes it once the
        watchdog is gone, keeping the logs."""
        self.handed_over = True
        self.publisher.write_now()  # the entry as it stands: what was stopping is recorded
        self.publisher.close()
        self.watchdog.send_quietly({"op": "bye", "handover": True})
        self.watchdog.channel.close()

    # --- the watchdog -------------------------------------------------------------------

    def _new_watchdog(self) -> WatchdogClient:
        return WatchdogClient(self, host_id=self.host_id, host_dir=self.host_dir, markers=self.markers(None),
                              owner=self.owner)

    def on_exit(self, event: Dict[str, Any]) -> None:
        self._on_exit(event)

    def on_stopped(self, event: Dict[str, Any]) -> None:
        self._on_stopped(event)

    def on_members(self, event: Dict[str, Any]) -> None:
        with self.table.lock:
            prov = self.table.providers.get(event["name"])
            if prov is not None and prov.main == ProcId(event["pid"], event["start"]):
                prov.members = tuple(ProcId(p, s) for p, s in event["members"])
                self.table.notify()  # (the registry records them)

    def on_control(self, client: WatchdogClient, request: Dict[str, Any]) -> None:
        """A request from outside (``hostconsole stop``), relayed by the watchdog."""
        try:
            answer = self._on_control(request)
        except Exception as e:
            answer = {"ok": False, "error": str(e)}
        try:
            client.request("control_done", cid=request.get("cid"), **answer)
        except (HostError, WatchdogLost):
            pass

    def on_lost(self, client: WatchdogClient) -> None:
        with self.table.lock:
            if self.watchdog is not client or self.closing:
                return
            self.watchdog_lost = True
            now = time.monotonic()
            self._rearms = [t for t in self._rearms if now - t < REARM_WINDOW]
            rearm = len(self._rearms) < REARM_LIMIT
            if rearm:
                self._rearms.append(now)
            print(
                f"hostconsole: host {self.host_id}: its watchdog (pid {client.pid}) is gone; "
                + ("starting a new one to take over the running providers" if rearm else
                   f"not restarting it again ({REARM_LIMIT} times within {REARM_WINDOW:g}s); providers "
                   f"keep running and are stopped by this host's shutdown, or by the next reap"),
                file=sys.stderr,
            )
            if rearm:
                start_thread(self._rearm, client, name="hostconsole-rearm")
            self.table.notify()

    def own_trees(self, levels: List[List[Provider]]) -> Tuple[Finder, List[List[Target]], Dict[int, ProcStat]]:
        """Each provider's tree as the host alone knows it, for what the watchdog cannot do
        (a stop, ``ps``, a replacement's adoption): its cell, where it has one, and the
        members the watchdog recorded while it lived (an env-cleared daemon, another user's
        member), found again over this user's processes and the recorded members' own
        trees.  Returns the finder, the targets by level (their members current) and the
        process table it looked at."""
        fence = _fence.for_record(self.watchdog.fence, self.host_id)
        targets = []
        for level in levels:
            row = []
            for p in level:
                cell = fence.cell_at(p.cell) if fence is not None and p.cell else None
                t = Target.of(p.spec, p.main, cell)
                for ident in p.members:
                    if ident.pid not in t.members and _proc.alive(ident):
                        t.members[ident.pid] = ident
                row.append(t)
            targets.append(row)
        recorded = [pid for row in targets for t in row for pid in t.members]

        def universe() -> Dict[int, ProcStat]:
            table = _proc.descendants(recorded)  # (another user's member is in no user's universe but its own)
            table.update(user_universe())
            return table

        finder = Finder(self.host_id, universe)
        table = finder.find([t for row in targets for t in row])
        return finder, targets, table

    def _rearm(self, lost: WatchdogClient) -> None:
        """A new watchdog for a host whose watchdog died, adopting its running providers:
        crash safety comes back without a restart.  Their trees are found as the host alone
        can find them (``own_trees``: cells, recorded members, markers), as the old
        watchdog's tracking went with it."""
        with self.table.lock:
            if self.watchdog is not lost or self.closing:
                return
        try:
            wd = self._new_watchdog()
        except Exception as e:
            print(f"hostconsole: host {self.host_id}: no new watchdog: {e}", file=sys.stderr)
            return
        with self.table.lock:
            if self.watchdog is not lost or self.closing:
                wd.close(timeout=2.0)
                return
            provs = [p for p in self.table.providers.values()
                     if p.main is not None and p.state in ACTIVE and p._stopping is None]
            adopt = list(provs)
        _, targets, _ = self.own_trees([adopt])
        adopted = 0
        for p, t in zip(adopt, targets[0]):
            assert p.main is not None
            try:
                reply = wd.request("adopt", spec=p.spec.to_wire(), main=list(p.main),
                                   members=[list(i) for i in t.members.values()],
                                   log=str(p.log_path) if p.log_path else None, log_max=self.log_max_bytes, cell=p.cell)
                adopted += "adopted" in reply
            except (WatchdogLost, HostError):
                return  # that one died too: its own loss handler takes it from here
        with self.table.lock:
            if self.watchdog is lost and not self.closing:
                self.watchdog = wd
                self.watchdog_lost = False
                self.table.notify()
            else:
                wd.close(timeout=2.0)
                return
        print(f"hostconsole: host {self.host_id}: new watchdog (pid {wd.pid}) took over {adopted} provider(s)",
              file=sys.stderr)
