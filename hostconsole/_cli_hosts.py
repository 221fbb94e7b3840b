"""``hostconsole ps | stop | reap``: every host of this user, seen from outside.

``ps`` reads the registry and looks at the processes themselves (so it shows a host's
state within the time the host takes to rewrite its entry, and live figures); ``stop``
asks a live host, through its watchdog's control socket, to purge its own providers, so
the host's own view stays true and its kernel stays usable.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Dict, List

from . import _proc, _statedir, registry
from ._proc import ProcId
from ._table import PsTable, StopReport
from .errors import HostError

ACTIVE = ("starting", "running", "restarting", "stopping")


def _marked_by_host() -> Dict[str, Dict[str, List[ProcId]]]:
    """{host id: {provider name: [identities]}} for this user's marked processes."""
    out: Dict[str, Dict[str, List[ProcId]]] = {}
    uid = os.getuid()
    for pid in _proc.all_pids():
        if _proc.owner_uid(pid) != uid:
            continue
        m = _proc.markers(pid)
        hid, name = m.get("HOSTCONSOLE_HOST"), m.get("HOSTCONSOLE_PROVIDER")
        if hid and name:
            st = _proc.stat(pid)
            if st is not None and not st.dead:
                out.setdefault(hid, {}).setdefault(name, []).append(st.ident)
    return out


def host_records(state_dir: Path) -> List[dict]:
    """One record per registered host: ``{"host", "pid", "alive", "state_dir", ...,
    "providers": [ps records]}``."""
    from .host import _figures

    live = _marked_by_host()
    now = time.time()
    out = []
    for rec in registry.read_all(state_dir):
        alive = rec.alive
        trees = live.get(rec.host_id, {})
        figures = _figures(trees)
        provs = []
        for name, p in rec.providers.items():
            state = p.get("state")
            active = state in ACTIVE and alive
            started = p.get("started")
            r = {
                "name": name,
                "kind": p.get("kind", "provider"),
                "state": state if alive else f"{state} (host dead)",
                "pid": p.get("pid") if active else None,
                "uptime": (now - started) if active and isinstance(started, (int, float)) else None,
                "restarts": p.get("restarts", 0),
                "exit_code": p.get("exit_code"),
                "signal": p.get("signal"),
            }
            r.update(figures.get(name) or {"cpu_percent": 0.0, "rss": 0, "nprocs": 0, "ports": []})
            provs.append(r)
        for name in sorted(set(trees) - set(rec.providers)):
            # Running, marked as this host's, but not (yet) in its registry entry: the
            # processes are the truth, the registry only a hint.
            r = {"name": name, "kind": "provider", "state": "unregistered" + ("" if alive else " (host dead)"),
                 "pid": None, "uptime": None, "restarts": None, "exit_code": None, "signal": None}
            r.update(figures[name])
            provs.append(r)
        owner = rec.owner
        out.append({
            "host": rec.host_id,
            "pid": owner.pid if owner else None,
            "alive": alive,
            "state_dir": str(state_dir),
            "kind": rec.data.get("kind"),
            "argv": rec.data.get("owner_argv"),
            "started": rec.data.get("started"),
            "watchdog_pid": (rec.watchdog.pid if rec.watchdog else None),
            "watchdog_alive": bool(rec.watchdog and _proc.alive(rec.watchdog)),
            "providers": provs,
        })
    return out


def _connect(path: Path, timeout: float) -> socket.socket:
    # By a name relative to its directory: the full path may be longer than sun_path.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(path.parent)
        sock.connect(path.name)
    except OSError:
        sock.close()
        raise
    finally:
        os.fchdir(here)
        os.close(here)
    return sock


def ask(state_dir: Path, host_id: str, request: dict, timeout: float = 150.0) -> dict:
    """Send one control request to a live host (through its watchdog); its answer."""
    rec = registry.read(Path(state_dir) / "hosts" / host_id)
    if rec is None:
        raise HostError(f"no host {host_id!r} in {state_dir}")
    if not rec.alive:
        raise HostError(f"host {host_id} is not alive (its owner exited); `hostconsole reap` stops its leftovers")
    path = rec.dir / "control.sock"
    try:
        sock = _connect(path, timeout)
    except OSError as e:
        raise HostError(f"cannot reach host {host_id} (its watchdog is not answering: {e.strerror or e})") from None
    with sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        line = sock.makefile("rb").readline()
    if not line:
        raise HostError(f"host {host_id} closed the connection without answering")
    answer = json.loads(line)
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


def _state_dir(args) -> Path:
    return Path(getattr(args, "state_dir", None) or _statedir.default_state_dir()).expanduser().absolute()


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
    for p in (ps, stop, reap):
        p.add_argument("--state-dir", help="default: $HOSTCONSOLE_STATE_DIR or the per-user default")
