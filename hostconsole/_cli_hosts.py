"""``hostconsole ps | stop | reap``: every host of this user, seen from outside.

``ps`` reads the registry and looks at the processes themselves (so it shows a host's
state within the time the host takes to rewrite its entry, and live figures); ``stop``
asks a live host, through its watchdog's control socket, to purge its own providers, so
the host's own view stays true and its kernel stays usable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

from . import _fence, _logfiles, _proc, _statedir, registry
from ._observe import Member, members_from_wire, ps_record, scan_marked, tree_figures
from ._stop import Finder, Target
from ._table import PsTable, StopReport
from ._watchdog_control import ask as ask_socket
from .errors import HostError, shown
from .spec import check_name
from .state import State

TREE_TIMEOUT = 2.0


def _trees(rec: registry.HostRecord, marked: Dict[str, List[_proc.ProcId]], sampler: _proc.CpuSampler,
           alive: bool) -> Dict[str, List[Member]]:
    """Each provider's tree: from its live watchdog (the figures the host itself sees), or
    else -- and for marked processes the watchdog does not know -- from what the registry
    recorded (members, cell) and the markers still show."""
    trees: Dict[str, List[Member]] = {}
    if alive:
        try:
            answer = ask_socket(rec.dir, {"op": "tree"}, TREE_TIMEOUT)
            if answer.get("ok"):
                trees = {n: members_from_wire(rows) for n, rows in answer.get("trees", {}).items()}
        except (OSError, ValueError):
            pass
    targets = []
    fence = _fence.for_record(rec.fence, rec.host_id)
    for name in (set(rec.providers) | set(marked)) - set(trees):
        p = rec.providers.get(name)
        main = p.main if p is not None else None
        cell = fence.cell_at(p.cell) if fence is not None and p is not None and p.cell else None
        t = Target(name, main, main.pid if main else None, host_id=rec.host_id, cell=cell)
        for ident in (p.members if p is not None else ()):
            t.members[ident.pid] = ident
        for ident in marked.get(name, ()):
            t.members[ident.pid] = ident
        targets.append(t)
    if targets:
        roots = [pid for t in targets for pid in t.members]
        table = Finder(rec.host_id, lambda: _proc.descendants(roots)).find(targets)
        cpu = sampler.percent(table[pid] for t in targets for pid in t.members if pid in table)
        trees.update({t.name: [(i, cpu.get(i, 0.0)) for i in t.members.values()] for t in targets})
    return trees


def host_records(state_dir: Path) -> List[dict]:
    """One record per registered host: ``{"host", "pid", "alive", "state_dir", ...,
    "providers": [ps records]}`` -- the records ``Host.ps()`` makes, by the same builder."""
    uid = os.getuid()
    by_host: Dict[str, Dict[str, List[_proc.ProcId]]] = {}
    for m in scan_marked(uid):
        if m.provider:
            by_host.setdefault(m.host_id, {}).setdefault(m.provider, []).append(m.ident)
    sampler = _proc.CpuSampler()
    now = time.time()
    out = []
    for rec in registry.read_all(state_dir):
        alive = rec.alive
        marked = by_host.get(rec.host_id, {})
        figures = tree_figures(_trees(rec, marked, sampler, alive))
        provs = [ps_record(p, figures.get(name), host_alive=alive, now=now) for name, p in rec.providers.items()]
        for name in sorted(set(marked) - set(rec.providers)):
            # Running, marked as this host's, but not (yet) in its registry entry: the
            # processes are the truth, the registry only a hint.
            unlisted = registry.ProviderRecord(name=name, spec=None, state=State.RUNNING)
            provs.append(ps_record(unlisted, figures.get(name), host_alive=alive, now=now) | {"registered": False})
        owner = rec.owner
        out.append({
            "host": rec.host_id,
            "pid": owner.pid if owner else None,
            "alive": alive,
            "state_dir": str(state_dir),
            "kind": rec.kind,
            "argv": list(rec.owner_argv),
            "started": rec.started,
            "watchdog_pid": rec.watchdog.pid if rec.watchdog else None,
            "watchdog_alive": bool(rec.watchdog and _proc.alive(rec.watchdog)),
            "providers": provs,
        })
    return out


def ask(state_dir: Path, host_id: str, request: dict, timeout: float = 150.0) -> dict:
    """Send one control request to a live host (through its watchdog); its answer."""
    check_name(host_id, "host id")
    rec = registry.read(Path(state_dir) / "hosts" / host_id)
    if rec is None:
        raise HostError(f"no host {shown(host_id)} in {state_dir}")
    if not rec.alive:
        raise HostError(f"host {host_id} is not alive (its owner exited); `hostconsole reap` stops its leftovers")
    try:
        answer = ask_socket(rec.dir, request, timeout)
    except OSError as e:
        raise HostError(f"cannot reach host {host_id} (its watchdog is not answering: {e.strerror or e})") from None
    except ValueError as e:
        raise HostError(f"host {host_id}: {e}") from None
    if not answer.get("ok"):
        raise HostError(f"host {host_id}: {answer.get('error', 'request failed')}")
    return answer


def cmd_ps(args) -> int:
    state_dir = _state_dir(args)
    hosts = host_records(state_dir)
    if args.json:
        print(json.dumps(hosts, indent=None))
        return 0
    if not hosts:
        print(f"no hosts in {state_dir}")
        return 0
    for h in hosts:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["started"])) if h.get("started") else "?"
        life = "alive" if h["alive"] else "DEAD"
        wd = "" if h["watchdog_alive"] or not h["alive"] else "  (watchdog not running!)"
        argv = " ".join(h.get("argv") or [])[:60]
        print(f"host {h['host']}  {life}  pid {h['pid']}  {h.get('kind') or '?'}  started {started}  {argv}{wd}")
        print("  " + repr(PsTable(h["providers"])).replace("\n", "\n  "))
    return 0


def cmd_stop(args) -> int:
    state_dir = _state_dir(args)
    if args.all:
        ids = [h["host"] for h in host_records(state_dir) if h["alive"]]
        if not ids:
            print("no live hosts")
            return 0
    elif args.host:
        ids = [args.host]
    else:
        raise HostError("name a host id, or --all")
    failed = 0
    for hid in ids:
        try:
            answer = ask(state_dir, hid, {"op": "purge", "timeout": args.timeout})
        except HostError as e:
            print(f"hostconsole: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"host {hid}: purged in {answer.get('seconds', 0):.3f}s")
        print("  " + repr(StopReport(answer.get("report", []))).replace("\n", "\n  "))
    return 1 if failed else 0


def cmd_reap(args) -> int:
    from .reap import reap

    report = reap(dry_run=args.dry_run, state_dir=_state_dir(args))
    print(report.summary())
    if report.records:
        print(repr(report))
    if report.removed:
        print(f"removed registry entries of dead hosts: {', '.join(report.removed)}")
    return 0


def cmd_logs(args) -> int:
    """A provider's last lines: of a live host (``--host`` if several have that name), or
    with ``--previous`` of an owner's previous host (``--key``: which owner; a kernel's is
    ``kernel-ID``)."""
    state_dir = _state_dir(args)
    check_name(args.name)
    if args.n < 0:
        raise HostError(f"-n must be a non-negative number of lines, not {args.n}")
    if args.previous:
        keys = sorted({r.log_key for r in registry.read_all(state_dir) if not r.alive} |
                      set(_listdir(state_dir / _logfiles.PREVIOUS)))
        key = args.key or (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise HostError(f"whose previous logs? --key one of: {', '.join(keys)}" if keys else
                            f"no previous logs in {state_dir}")
        path = _logfiles.find_previous(state_dir, key, args.name)
        if path is None:
            raise HostError(f"no previous logs of {shown(args.name)} for {key} in {state_dir}")
    else:
        found = [r for r in registry.read_all(state_dir) if r.alive and args.name in r.providers
                 and (args.host is None or r.host_id == args.host)]
        if not found:
            raise HostError(f"no live host in {state_dir} has a provider {shown(args.name)}"
                            + (f" (host {args.host})" if args.host else ""))
        if len(found) > 1:
            raise HostError(f"{len(found)} hosts have a provider {shown(args.name)}: choose one with --host "
                            f"({', '.join(r.host_id for r in found)})")
        path = str(found[0].dir / "logs" / _logfiles.log_name(args.name))
    sys.stdout.write(_logfiles.tail(path, args.n))
    return 0


def _listdir(path: Path) -> List[str]:
    try:
        return [n for n in os.listdir(path) if not n.startswith(".")]
    except OSError:
        return []


def _state_dir(args) -> Path:
    return _statedir.resolve(getattr(args, "state_dir", None))


def add_commands(sub) -> None:
    ps = sub.add_parser("ps", help="every host of this user and its providers")
    ps.add_argument("--json", action="store_true", help="a JSON array, one object per host")
    ps.set_defaults(fn=cmd_ps)
    stop = sub.add_parser("stop", help="ask a live host to purge its providers")
    stop.add_argument("host", nargs="?", metavar="HOST_ID")
    stop.add_argument("--all", action="store_true", help="every live host")
    stop.add_argument("--timeout", type=float, default=None, help="cap on each provider's stop timeout")
    stop.set_defaults(fn=cmd_stop)
    reap = sub.add_parser("reap", help="stop leftovers of dead hosts")
    reap.add_argument("--dry-run", action="store_true", help="only say what would be stopped")
    reap.set_defaults(fn=cmd_reap)
    logs = sub.add_parser("logs", help="a provider's last lines (of a live host, or --previous)")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("-n", type=int, default=50, metavar="LINES", help="how many (default 50)")
    logs.add_argument("--host", metavar="HOST_ID", help="which live host, if several have NAME")
    logs.add_argument("--previous", action="store_true", help="of the previous host of an owner (after a restart)")
    logs.add_argument("--key", help="whose previous host: kernel-ID for a kernel, default for others")
    logs.set_defaults(fn=cmd_logs)
    for p in (ps, stop, reap, logs):
        p.add_argument("--state-dir", help="default: $HOSTCONSOLE_STATE_DIR or the per-user default")
