"""What the magics show: progress while they wait, a host's status, log lines with
their providers' names.  Knows IPython's display machinery, nothing of hosts' insides.

In a kernel, output that changes (progress, the live view) is one display updated in
place (``display(..., display_id=True)`` and ``.update``); in a terminal, one line redrawn
with ``\r``; elsewhere (a pipe), nothing that would only be noise.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any, Dict, Iterable, Optional, Tuple

from . import _logfiles

# A wait shorter than this gets no progress indicator: it would only flicker.
PROGRESS_AFTER = 0.5


def in_kernel(shell: Any) -> bool:
    return getattr(shell, "kernel", None) is not None


def colour_wanted(shell: Any, stream: Any = None) -> bool:
    """Colour for a kernel's output (notebooks render ANSI colours) or a terminal, unless
    NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    return in_kernel(shell) or _isatty(stream if stream is not None else sys.stdout)


def print_lines(rows: Iterable[Tuple[Optional[float], str, str]], colour: bool, width: int = 0) -> None:
    """``(time, name, line)`` rows as ``HH:MM:SS name | line``, names aligned."""
    rows = list(rows)
    width = width or max((len(name) for _, name, _ in rows), default=0)
    for when, name, line in rows:
        sys.stdout.write(_logfiles.prefixed(name, line, width, colour, when) + "\n")
    sys.stdout.flush()


class Progress:
    """What ``Host.run`` calls while it waits: one line, updated in place, shown only once
    the wait is noticeable; finalised (notebook) or erased (terminal) when the wait ends."""

    def __init__(self, shell, name: str):
        self.name = name
        self.in_kernel = getattr(shell, "kernel", None) is not None
        self.on_tty = not self.in_kernel and _isatty(sys.stdout)
        self.handle = None
        self.shown = False
        self.t0 = time.monotonic()

    def __call__(self, elapsed: float, waiting_for: str):
        if elapsed < PROGRESS_AFTER:
            return
        text = f"{self.name}: waiting for {waiting_for} ({elapsed:.1f}s)"
        if self.in_kernel:
            self._show(text)
        elif self.on_tty:
            width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be erased by \r
            sys.stdout.write("\r" + text[:width] + "\x1b[K")
            sys.stdout.flush()
        self.shown = True

    def _show(self, text: str):
        from IPython.display import display

        data = {"text/plain": text}
        if self.handle is None:
            self.handle = display(data, raw=True, display_id=True)
        else:
            self.handle.update(data, raw=True)

    def __enter__(self):
        return self

    def __exit__(self, etype, value, tb):
        if not self.shown:
            return False
        took = time.monotonic() - self.t0
        if self.in_kernel:
            if etype is None:
                final = f"{self.name}: ready after {took:.1f}s"
            elif issubclass(etype, KeyboardInterrupt):
                final = f"{self.name}: stopped waiting after {took:.1f}s (interrupted)"
            else:
                final = ""  # the error says it all
            self._show(final)
        elif self.on_tty:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()
        return False


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class HostStatus(dict):
    """``host.status()`` plus this shell's hooks; a dict that prints as aligned lines, then
    each provider inspected (command, cwd, readiness, stop policy, membership)."""

    def _lines(self):
        shown = [k for k in self if k != "inspect"]
        width = max(map(len, shown)) if shown else 0
        for k in shown:
            v = self[k]
            if isinstance(v, dict):
                v = ", ".join(f"{a} {b}" for a, b in v.items()) or "none"
            elif isinstance(v, (list, tuple)):
                v = ", ".join(map(str, v)) or "none"
            yield k.ljust(width), "-" if v is None else str(v)

    def _inspect(self):
        from ._table import Inspect

        return Inspect(self.get("inspect") or [])

    def __repr__(self):
        text = "\n".join(f"{k}  {v}" for k, v in self._lines())
        return text + ("\n\n" + repr(self._inspect()) if self.get("inspect") else "")

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))

    def _repr_html_(self):
        import html

        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k.strip())}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in self._lines())
        return f"<table>{rows}</table>" + (self._inspect()._repr_html_() if self.get("inspect") else "")


class StackProgress:
    """What ``Host.up`` calls while it waits: a line per provider still waiting (a display
    each, in a kernel; one summary line in a terminal), finalised as each gets ready."""

    def __init__(self, shell: Any):
        self.in_kernel = in_kernel(shell)
        self.on_tty = not self.in_kernel and _isatty(sys.stdout)
        self.handles: Dict[str, Any] = {}
        self.waiting: Dict[str, str] = {}
        self.elapsed = 0.0
        self.t0 = time.monotonic()

    def __call__(self, name: str, elapsed: float, waiting_for: str) -> None:
        if elapsed < PROGRESS_AFTER:
            return
        self.elapsed = elapsed
        self.waiting[name] = waiting_for
        text = f"{name}: waiting for {waiting_for} ({elapsed:.1f}s)"
        if self.in_kernel:
            self._show(name, text)
        elif self.on_tty:
            line = "waiting: " + ", ".join(f"{n} ({w})" for n, w in self.waiting.items()) + f" {elapsed:.1f}s"
            width = shutil.get_terminal_size().columns - 1
            sys.stdout.write("\r" + line[:width] + "\x1b[K")
            sys.stdout.flush()

    def _show(self, name: str, text: str) -> None:
        from IPython.display import display

        data = {"text/plain": text}
        if name not in self.handles:
            self.handles[name] = display(data, raw=True, display_id=True)
        else:
            self.handles[name].update(data, raw=True)

    def __enter__(self) -> "StackProgress":
        return self

    def __exit__(self, etype: Any, value: Any, tb: Any) -> None:
        took = time.monotonic() - self.t0
        if self.in_kernel:
            for name in self.handles:
                if etype is None:
                    self._show(name, f"{name}: ready ({took:.1f}s)")
                elif issubclass(etype, KeyboardInterrupt):
                    self._show(name, f"{name}: stopped waiting after {took:.1f}s (interrupted)")
                else:
                    self._show(name, "")
        elif self.on_tty and self.waiting:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()
