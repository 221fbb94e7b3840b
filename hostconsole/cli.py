"""The ``hostconsole`` command line."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import urllib.request
from typing import List, NoReturn, Optional


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmd_demo(args) -> int:
    """Start a host with a web server and a worker that polls it; show ps, logs, purge."""
    from .host import Host

    port = args.port or _free_port()
    with Host() as host:
        print(f"host {host.host_id} started; state in {host.state_dir}")
        host.run("web", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"])
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    print(f"GET http://127.0.0.1:{port}/ -> {r.status}")
                    break
            except OSError:
                if time.monotonic() > deadline:
                    print("the web server did not answer within 10 s", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        poll = ("import time, urllib.request\n"
                "while True:\n"
                f"    print('poll', urllib.request.urlopen('http://127.0.0.1:{port}/').status, flush=True)\n"
                "    time.sleep(0.2)\n")
        host.run("worker", [sys.executable, "-c", poll], requires="web")
        time.sleep(1)
        print("\n$ ps"); print(host.ps())
        print("\n$ logs worker -n 3"); print(host.logs("worker", 3), end="")
        print("\n$ purge"); print(host.purge())
    print("\nhost shut down: nothing it started is left running")
    return 0


class _Stop(Exception):
    """SIGTERM or SIGHUP to ``hostconsole up``: stop the stack, as on Ctrl-C."""


def cmd_up(args) -> int:
    """A stack in the foreground: up, then every provider's output with its name, until
    Ctrl-C or SIGTERM (an ordered stop, exit 0) or a provider fails without a restart left
    (named on stderr, the rest stopped in order, exit 1).  Being a host, if this process is
    killed its watchdog stops the stack."""
    import os
    import signal

    from . import _logfiles, stack
    from .errors import HostconsoleError
    from .host import Host
    from .state import State

    loaded = stack.load(args.file)
    names = loaded.select(args.names)
    for w in loaded.warnings:
        print(f"hostconsole up: {w}", file=sys.stderr)
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    width = max(len(n) for n in names)

    def on_signal(signum, frame):
        raise _Stop()

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    host = Host()
    status = 0
    try:
        host.start()
        host.up(loaded.path, names, progress=lambda n, t, what: None)
        print(f"hostconsole up: {', '.join(names)} ready (host {host.host_id}); Ctrl-C stops them", file=sys.stderr)
        for name, line in _follow(host, names):
            if name is None:
                failed = [n for n in names if host.provider(n).state == State.FAILED]
                if failed:
                    p = host.provider(failed[0])
                    print(f"hostconsole up: {failed[0]} failed ({p.error or f'exit {p.signal or p.exit_code}'}); "
                          f"stopping the rest", file=sys.stderr)
                    status = 1
                    break
                continue
            sys.stdout.write(_logfiles.prefixed(name, line, width, colour) + "\n")
            sys.stdout.flush()
    except (KeyboardInterrupt, _Stop):
        pass
    except HostconsoleError as e:
        print(f"hostconsole up: {str(e).splitlines()[0]}", file=sys.stderr)
        status = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # (the stop itself is not to be cut short)
            signal.signal(sig, signal.SIG_IGN)
        report = host.shutdown()
        if report.records:
            print(f"hostconsole up: stopped, in order: {', '.join(r['name'] for r in report.records)}",
                  file=sys.stderr)
    return status


def _follow(host, names):
    """Every line of the stack's providers from their first (the host is a new one: its
    logs began with this run), then as they come."""
    from . import _logfiles

    return _logfiles.follow_all(lambda: host._log_paths(names), 0, idle=True, from_start=True)


def cmd_console(args, ipython_args: List[str]) -> int:
    """Terminal IPython with the extension loaded and the host started."""
    from IPython.terminal.ipapp import TerminalIPythonApp

    from .host import get_host

    # What IPython.start_ipython does, with the host started in between: after IPython
    # has read its arguments (so --help starts nothing), before the first prompt, and
    # whatever the user's profile says.  The magics use this same process-wide host.
    app = TerminalIPythonApp.instance()
    app.initialize(["--ext=hostconsole", *ipython_args])
    host = get_host().start()
    print(f"hostconsole: host {host.host_id} started (state dir {host.state_dir}); %host help for the magics")
    app.start()
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr (and exit status 2), not usage and an error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: Optional[List[str]] = None) -> int:
    ap = _Parser(prog="hostconsole", description="Process host console for IPython and Jupyter.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = sub.add_parser("demo", help="run a short demonstration: a web server and a worker, then purge")
    demo.add_argument("--port", type=int, default=0, help="port for the demo web server (default: a free one)")
    demo.set_defaults(fn=cmd_demo)
    console = sub.add_parser("console", add_help=False, usage="hostconsole console [IPYTHON ARGS]",
                             help="IPython with the extension loaded and the host started; "
                                  "every other argument goes to IPython")
    console.set_defaults(fn=cmd_console)
    up = sub.add_parser("up", help="a stack in the foreground: every provider's output; Ctrl-C stops it")
    up.add_argument("args", nargs="*", metavar="[FILE] NAME", help="the stack file (default: hostconsole.toml, "
                    "process-compose.yaml or Procfile here), then the providers to bring up (default: all)")
    up.set_defaults(fn=cmd_up)
    from ._cli_hosts import add_commands

    add_commands(sub)
    args, extra = ap.parse_known_args(argv)
    if getattr(args, "fn", None) is cmd_up:
        items = list(args.args)
        first = items[0] if items else ""
        is_file = bool(items) and (os.path.exists(first) or "/" in first or first.endswith((".toml", ".yaml", ".yml"))
                                   or os.path.basename(first).lower().startswith("procfile"))
        args.file, args.names = (first, items[1:]) if is_file else (None, items)
    if not getattr(args, "fn", None):
        ap.print_help()
        return 2
    if extra and args.fn is not cmd_console:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    from .errors import HostconsoleError

    try:
        return args.fn(args, extra) if args.fn is cmd_console else args.fn(args)
    except HostconsoleError as e:
        print(f"hostconsole: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
