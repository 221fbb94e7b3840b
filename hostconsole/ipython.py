"""The IPython layer: the ``%host`` magics, and the hooks that send every way out of a
kernel or terminal session through the host's one shutdown path.

Thin on purpose: this module parses, displays and hooks; ``Host`` does everything else.
Which hook catches which ending (measured, see FACTS.md):

- the kernel's shutdown and restart requests: ``kernel.do_shutdown``, wrapped;
- ``exit``/``quit`` in a kernel cell: the shell's ``exit_now`` trait;
- interpreter exit (terminal Ctrl-D, ``exit``, end of a script): host.py's ``atexit``;
- ``%unload_ext``/``%reload_ext``: ``unload_ipython_extension``;
- SIGTERM, SIGHUP, SIGKILL, crashes: no hook at all -- the host's watchdog sees its owner
  die.  No signal handler is installed, so the kernel dies exactly as it would without us.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import weakref
from typing import Any, Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from . import host as _host
from ._display import HostStatus, Progress, StackProgress, colour_wanted, in_kernel, print_lines
from ._live import LiveView, watch_terminal
from .errors import HostconsoleError, shown
from .reap import reap
from .spec import OPTIONS

# jupyter_client SIGTERMs the kernel's group 2.5 s after a shutdown request: stop within it.
KERNEL_SHUTDOWN_TIMEOUT = 1.5

USAGE = """\
%host start [--state-dir DIR]           start this kernel's host (idempotent); reaps leftovers of dead hosts
%host run NAME [OPTIONS] -- COMMAND [ARG ...]
%%host run NAME [OPTIONS]               the cell body is a bash script, run as the provider
%host ps [--all] [--json] [--watch]     table of providers; --all adds stopped ones; --watch keeps it live
%host logs NAME [-n LINES] [--follow]   last lines of a provider's output; --follow until interrupted
%host logs --all [-n LINES] [--follow]  every provider's lines (or several NAMEs), each prefixed with its name
%host logs NAME --previous              the same provider's logs of this kernel's previous host
%host up [FILE] [NAME ...]              bring up a stack (hostconsole.toml, process-compose.yaml, Procfile)
%host down [FILE] [NAME ...]            stop the stack's providers (dependents first)
%host stop NAME [NAME ...]              stop providers (their dependents first)
%host restart NAME
%host purge [--timeout SECONDS]         stop every provider; the host stays up
%host shutdown                          purge, then release everything the host holds
%host status                            host id, pids, state dir, hooks installed, counts
%host reap [--dry-run]                  find and stop leftovers of dead hosts
%host help [SUBCOMMAND]                 this text, or one subcommand's options

run options:
{options}
  --no-wait             return at once instead of waiting for readiness
  --replace             if NAME is running with a different spec, stop it and start this one

Running `%host run NAME ...` again with the same spec changes nothing (a notebook can be
re-run top to bottom); with a different one it is refused unless --replace.
Ctrl-C while a magic waits interrupts only the waiting: providers keep running."""


# --- argument parsing ---------------------------------------------------------------------


class _HelpShown(Exception):
    """argparse printed a subcommand's help: nothing else to do."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises one-line UsageErrors instead of printing usage and exiting."""

    def __init__(self, sub: str, description: str):
        super().__init__(prog=f"%host {sub}", description=description, allow_abbrev=False)

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see %host help {self.prog.split()[-1]})")

    def exit(self, status=0, message=None):
        if status:
            raise UsageError(f"{self.prog}: {(message or 'bad arguments').strip()}")
        raise _HelpShown()


def _seconds(text: str) -> float:
    # The range (negative, NaN) is Host's to judge, with the same message as the Python API.
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a number of seconds") from None


def _lines(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a whole number of lines") from None


def _build_parsers() -> dict:
    ps = {}

    p = ps["start"] = _Parser("start", "Start this kernel's host (idempotent); reaps leftovers of dead hosts.")
    p.add_argument("--state-dir", metavar="DIR")

    p = ps["run"] = _Parser("run", "Start a provider: %host run NAME [OPTIONS] -- COMMAND [ARG ...], "
                                   "or %%host run NAME [OPTIONS] with a bash script as the cell body.")
    p.add_argument("name", metavar="NAME", help="[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
    for o in OPTIONS:  # the provider's options: one definition, in spec.py
        if o.kind == "flag":
            p.add_argument(o.flag, dest=o.key, action="store_true", default=None, help=o.help)
        else:
            p.add_argument(o.flag, dest=o.key, metavar=o.metavar, help=o.help,
                           action="append" if o.kind == "list" else "store")
    p.add_argument("--no-wait", action="store_true", help="return at once instead of waiting for readiness")
    p.add_argument("--replace", action="store_true",
                   help="if NAME is running with a different spec, stop it and start this one")

    p = ps["ps"] = _Parser("ps", "Table of providers.")
    p.add_argument("--all", action="store_true", help="include providers stopped by the user or a purge")
    p.add_argument("--json", action="store_true", help="print a JSON array of records instead")
    p.add_argument("--watch", action="store_true", help="a live view that keeps itself up to date (a notebook: "
                   "about once a second, the next cell runs at once; a terminal: redrawn until Ctrl-C)")

    p = ps["logs"] = _Parser("logs", "Last lines of a provider's stdout and stderr (of several, or --all: "
                                     "each line prefixed with its provider's name).")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--all", action="store_true", help="every provider's lines, interleaved by time")
    p.add_argument("-n", type=_lines, metavar="LINES")
    p.add_argument("--follow", action="store_true", help="keep printing new output until interrupted")
    p.add_argument("--previous", action="store_true",
                   help="the logs of this kernel's previous host (before Restart Kernel, say)")

    for verb, what in (("up", "Bring up a stack from FILE (default: hostconsole.toml, process-compose.yaml or "
                               "Procfile here), or only NAMEs and what they require."),
                       ("down", "Stop a stack's providers (or NAMEs of it), dependents first.")):
        p = ps[verb] = _Parser(verb, what)
        p.add_argument("args", nargs="*", metavar="[FILE] NAME")

    p = ps["stop"] = _Parser("stop", "Stop providers, their dependents first.")
    p.add_argument("names", nargs="+", metavar="NAME")

    p = ps["restart"] = _Parser("restart", "Stop a provider (dependents first) and start it again.")
    p.add_argument("name", metavar="NAME")

    p = ps["purge"] = _Parser("purge", "Stop every provider, dependents first; the host stays up.")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="SIGKILL reaches everything no later than this, however many levels")

    ps["shutdown"] = _Parser("shutdown", "Purge, then release everything the host holds.")
    ps["status"] = _Parser("status", "Host id, pids, state dir, hooks installed, counts.")

    p = ps["reap"] = _Parser("reap", "Find and stop leftovers of dead hosts (this user's only).")
    p.add_argument("--dry-run", action="store_true", help="only show what would be stopped")
    return ps


_PARSERS = _build_parsers()
USAGE = USAGE.format(options="\n".join(
    f"  {(o.flag + ' ' + (o.metavar or '')).strip():<21} {o.help}" for o in OPTIONS))


def _usage_error(e: HostconsoleError) -> UsageError:
    """One line for the error; anything after it (a provider's last output) goes first, on stderr."""
    lines = str(e).strip().splitlines() or [type(e).__name__]
    head = lines[0]
    if len(lines) > 1:
        print("\n".join(lines[1:]), file=sys.stderr)
        if head.endswith(":"):
            head = head[:-1] + " (above)"
    return UsageError(head)


# --- the magics ---------------------------------------------------------------------------


@magics_class
class HostMagics(Magics):
    @line_cell_magic
    def host(self, line, cell=None):
        try:
            return self._dispatch(line, cell)
        except _HelpShown:
            return None
        except HostconsoleError as e:
            raise _usage_error(e) from None
        except KeyboardInterrupt:
            # Only the waiting is interrupted: Host finishes (a stop) or keeps (a provider)
            # what it started.  At a terminal's prompt that is one line, not a traceback of
            # the magic's insides; elsewhere (a kernel, code calling the magic) it is raised
            # afresh, so code around it stops too and the traceback ends here, not in a lock.
            message = "interrupted the waiting only; %host ps shows where things stand"
            if type(self.shell).__name__ == "TerminalInteractiveShell":
                print(f"KeyboardInterrupt: {message}", file=sys.stderr)
                return None
            raise KeyboardInterrupt(message) from None

    host.__doc__ = "Process host console.\n\n" + USAGE

    def _dispatch(self, line: str, cell: Optional[str]):
        try:
            tokens = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"%host: cannot split the line ({e})") from None
        if not tokens or tokens[0] in ("help", "-h", "--help"):
            if cell is not None:
                raise UsageError("%%host takes only run: %%host run NAME [OPTIONS], with a bash script as the cell body")
            return self._help(tokens[1:])
        sub, rest = tokens[0], tokens[1:]
        if sub not in _PARSERS:
            raise UsageError(f"%host: unknown subcommand {shown(sub)}: use {', '.join(_PARSERS)} or help")
        if cell is not None and sub != "run":
            raise UsageError(f"%%host {sub}: only run takes a cell body (%%host run NAME [OPTIONS])")
        if sub == "run":
            return self._run(rest, cell)
        args = _PARSERS[sub].parse_args(rest)
        return getattr(self, f"_{sub}")(args)

    @staticmethod
    def _help(rest):
        if not rest:
            print(USAGE)
        elif len(rest) == 1 and rest[0] in _PARSERS:
            _PARSERS[rest[0]].print_help()
        else:
            raise UsageError(f"%host help: no subcommand {shown(' '.join(rest))}: use {', '.join(_PARSERS)}")

    # --- subcommands ---------------------------------------------------------------------

    def _run(self, rest, cell):
        parser = _PARSERS["run"]
        dashdash = "--" in rest
        if dashdash:
            i = rest.index("--")
            rest, command = rest[:i], rest[i + 1:]
        else:
            command = None
        args, extra = parser.parse_known_args(rest)
        options = [x for x in extra if x.startswith("-")]
        if extra and (options and (dashdash or cell is not None or extra[0].startswith("-"))):
            parser.error(f"unrecognized option {options[0]}")
        if cell is not None:
            if command is not None or extra:
                raise UsageError("%%host run: the cell body is the command; nothing may follow the options")
            if not cell.strip():
                raise UsageError("%%host run: missing command: the cell body (a bash script) is empty")
            command = cell
        elif extra and dashdash:
            raise UsageError(f"%host run: a provider name is one word, but {shown(' '.join([args.name, *extra]))} "
                             f"came before '--' (use a name such as {shown('-'.join([args.name, *extra]))})")
        elif extra:
            raise UsageError(f"%host run: missing '--' before the command: %host run {args.name} [OPTIONS] -- "
                             f"{' '.join(shlex.quote(x) for x in extra)}")
        elif not command:
            raise UsageError(f"%host run: missing command: %host run {args.name} [OPTIONS] -- COMMAND [ARG ...]")

        # Only what the user gave: every default lives in ProviderSpec, once.
        kw = {o.key: getattr(args, o.key) for o in OPTIONS if getattr(args, o.key) is not None}
        host = _host.get_host()
        before = host.provider(args.name) if args.name in host else None
        with Progress(self.shell, args.name) as progress:
            prov = host.run(args.name, command, shell=cell is not None, wait=not args.no_wait,
                            replace=args.replace, progress=progress, **kw)
        if prov is before:
            print(f"{args.name}: already {prov.state} with this spec; nothing changed")
        return prov

    def _start(self, args):
        host = _host.get_host()
        wanted = os.path.abspath(os.path.expanduser(args.state_dir)) if args.state_dir else None
        if host.started and host.state_dir is not None:
            if wanted is not None and os.path.realpath(wanted) != os.path.realpath(host.state_dir):
                raise UsageError(f"%host start: host {host.host_id} already runs with state dir {host.state_dir}; "
                                 f"%host shutdown first to use another")
            print(f"host {host.host_id} already started (state dir {host.state_dir})")
            return None
        host.start(wanted)  # says itself (stderr) what it reaped
        print(f"host {host.host_id} started (state dir {host.state_dir})")
        return None

    def _ps(self, args):
        host = _host.get_host()
        if args.watch:
            if args.json:
                raise UsageError("%host ps: --watch shows a table; --json prints records once (use one of them)")
            host.start()  # (a view of a host that is not there would end at once)
            if in_kernel(self.shell):
                LiveView(host, all=args.all).show()
            else:
                watch_terminal(host, all=args.all)
            return None
        table = host.ps(all=args.all)
        if args.json:
            print(json.dumps(table.records))
            return None
        return table

    def _logs(self, args):
        host = _host.get_host()
        n = {} if args.n is None else {"n": args.n}
        if args.previous and args.follow:
            raise UsageError("%host logs: --previous and --follow do not go together (the previous host is gone)")
        if not args.names and not args.all:
            raise UsageError("%host logs: name a provider (NAME), several, or --all")
        if args.all or len(args.names) > 1:
            return self._logs_of_many(host, args.names, args.follow, n.get("n", 10))
        name = args.names[0]
        if not args.follow:
            text = host.logs(name, previous=args.previous, **n)
            if text:
                print(text, end="" if text.endswith("\n") else "\n")
            return None
        stream = host.follow(name, **n)
        try:
            for text in stream:
                sys.stdout.write(text)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass  # how following ends: nothing else is touched
        finally:
            stream.close()
        return None

    def _logs_of_many(self, host, names, follow: bool, n: int):
        colour = colour_wanted(self.shell)
        if not follow:
            print_lines(host.logs_all(names, n), colour)
            return None
        width = max([len(x) for x in names or host._providers] + [4])
        stream = host.follow_all(names, n)
        try:
            for name, line in stream:
                print_lines([(time.time(), name, line)], colour, max(width, len(name)))
        except KeyboardInterrupt:
            pass  # how following ends: nothing else is touched
        finally:
            stream.close()
        return None

    @staticmethod
    def _stack_args(verb: str, args):
        """``[FILE] [NAME ...]``: the first is the file if it is one (or looks like one)."""
        items = list(args.args)
        if items and (os.path.exists(items[0]) or "/" in items[0] or items[0].endswith((".toml", ".yaml", ".yml"))
                      or os.path.basename(items[0]).lower().startswith("procfile")):
            return os.path.expanduser(items[0]), items[1:]
        return None, items

    def _up(self, args):
        file, names = self._stack_args("up", args)
        with StackProgress(self.shell) as progress:
            return _host.get_host().up(file, names, progress=progress)

    def _down(self, args):
        file, names = self._stack_args("down", args)
        return _host.get_host().down(file, names)

    def _stop(self, args):
        return _host.get_host().stop(*args.names)

    def _restart(self, args):
        with Progress(self.shell, args.name) as progress:
            return _host.get_host().restart(args.name, progress=progress)

    def _purge(self, args):
        return _host.get_host().purge(timeout=args.timeout)

    def _shutdown(self, args):
        return _host.get_host().shutdown()

    def _status(self, args):
        status = HostStatus(_host.get_host().status())
        hooks = _installed.get(self.shell)
        status["hooks"] = hooks.names if hooks is not None else []
        return status

    def _reap(self, args):
        host = _host.get_host()
        return reap(dry_run=args.dry_run, state_dir=host.state_dir if host.started else None)


# --- hooks --------------------------------------------------------------------------------


def _shutdown_host(timeout: Optional[float] = None, handover: bool = False):
    """The one shutdown path, from a hook: it must never break the way out it rides on."""
    try:
        _host.get_host().shutdown(timeout=timeout, handover=handover)
    except Exception as e:  # the watchdog stops whatever this could not
        print(f"hostconsole: shutdown failed: {e}", file=sys.stderr)


class _Hooks:
    """What ``load_ipython_extension`` installs on one shell, and removes again on unload."""

    def __init__(self, shell):
        self.shell = shell
        self.magics = HostMagics(shell)
        shell.register_magics(self.magics)
        self.names = ["atexit"]  # host.py registers it once for every live host

        shell.observe(self._on_exit_now, names="exit_now")
        self.names.append("exit_now")

        # Kernel shutdown and restart requests reach ``do_shutdown`` on the control thread
        # before ipykernel sweeps its own process group and exits: stop providers there,
        # so the request returns only once they are gone (and their ports free).
        self.kernel: Any = getattr(shell, "kernel", None)
        self.original: Any = None
        self.active = True
        if self.kernel is not None and callable(getattr(self.kernel, "do_shutdown", None)):
            self.shadowed = vars(self.kernel).get("do_shutdown")
            self.original = self.kernel.do_shutdown
            self.kernel.do_shutdown = self._do_shutdown
            self.names.append("kernel.do_shutdown")

    def _do_shutdown(self, restart):
        if self.active:
            # Wait at most this long, then leave what is still stopping to the watchdog: it
            # keeps every provider's own stop timeout (a database gets to checkpoint).
            _shutdown_host(timeout=KERNEL_SHUTDOWN_TIMEOUT, handover=True)
        return self.original(restart)  # dict or coroutine: ipykernel awaits it as before

    def _on_exit_now(self, change):
        if change["new"] and self.active:
            _shutdown_host()

    def remove(self):
        self.active = False
        self.shell.unobserve(self._on_exit_now, names="exit_now")
        if self.original is not None and vars(self.kernel).get("do_shutdown") == self._do_shutdown:
            if self.shadowed is None:
                del self.kernel.do_shutdown
            else:
                self.kernel.do_shutdown = self.shadowed
        # If someone wrapped do_shutdown after us, ours stays in their chain, inactive.
        mm = self.shell.magics_manager
        for kind in ("line", "cell"):
            if getattr(mm.magics[kind].get("host"), "__self__", None) is self.magics:
                del mm.magics[kind]["host"]
        if dict.get(mm.registry, type(self.magics).__name__) is self.magics:
            del mm.registry[type(self.magics).__name__]


_installed: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def load_ipython_extension(shell):
    # Loading twice (or a second shell) never makes a second host: get_host() is the
    # process's one host, and it starts lazily, on `%host start` or the first `%host run`.
    if shell not in _installed:
        _installed[shell] = _Hooks(shell)
    key = _kernel_key(shell)
    if key is not None:
        _host.get_host().log_key = key  # Restart Kernel keeps the id: `logs --previous` finds its logs


def _kernel_key(shell) -> Optional[str]:
    """``kernel-ID`` for a Jupyter kernel (the id of its connection file, which survives a
    restart), None elsewhere."""
    if getattr(shell, "kernel", None) is None:
        return None
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # no connection file (an embedded kernel): the default key will do
        return None
    stem = name[:-5] if name.endswith(".json") else name
    stem = stem[len("kernel-"):] if stem.startswith("kernel-") else stem
    safe = "".join(c for c in stem if c.isalnum() or c in "-_.")[:100].lstrip(".")
    return f"kernel-{safe}" if safe else None


def unload_ipython_extension(shell):
    hooks = _installed.pop(shell, None)
    try:
        _shutdown_host()
    finally:
        if hooks is not None:
            hooks.remove()
