"""The live view: ``%host ps --watch``.

In a kernel: the ``ps`` table is displayed once and then kept up to date in place, about
once a second (``display(..., display_id=True)`` and ``.update``), by a thread of its own:
the magic returns at once and the next cell runs.  The thread ends when its host shuts
down (the view then says so) or when ``close()`` is called; a view costs one ``ps`` a
second (measured: ~10 ms wall, most of it the watchdog's, for 100 providers).

With ipywidgets (the ``widgets`` extra), the same table in a widget, with a stop and a
restart button per provider and a logs pane that follows the provider picked there; the
buttons act on a thread of their own (a stop may take its stop timeout), never on the
kernel's.  Without ipywidgets: the HTML view alone.

In a terminal (``watch_terminal``): the table redrawn in place until Ctrl-C.

Threads: the view's ``hostconsole-watch`` thread (reads the host through its public API);
widget callbacks on the kernel's thread hand their work to short-lived threads.
"""

from __future__ import annotations

import html
import shutil
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ._table import PsTable

if TYPE_CHECKING:
    from .host import Host

INTERVAL = 1.0
LOG_LINES = 20


def widgets_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):  # (broken: the HTML view will do)
        return False


class LiveView:
    """A ``ps`` table that keeps itself up to date (see the module's docstring)."""

    def __init__(self, host: "Host", all: bool = False, interval: float = INTERVAL, widgets: Optional[bool] = None):
        self.host = host
        self.all = all
        self.interval = interval
        self.widgets = widgets_available() if widgets is None else widgets
        self._closed = threading.Event()
        self._handle: Any = None
        self._ui: Optional[_WidgetUI] = None
        self.refreshes = 0
        self.cpu_seconds = 0.0  # this process's CPU spent refreshing (for the figure in the notes)

    def show(self) -> "LiveView":
        """Display the view and start keeping it up to date; returns at once."""
        from IPython.display import display

        table = self.host.ps(all=self.all)
        if self.widgets:
            self._ui = _WidgetUI(self.host)
            self._ui.update(table)
            # The widget, and the table as HTML for whatever cannot show widgets (a notebook
            # saved and viewed elsewhere sees the table as it was when the view was shown).
            bundle = dict(self._ui.box._repr_mimebundle_() or {})
            bundle.update(_html_bundle(table))
            display(bundle, raw=True)
        else:
            self._handle = display(_html_bundle(table), raw=True, display_id=True)
        threading.Thread(target=self._run, name="hostconsole-watch", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(self.interval):
            if not self.host.started:
                self._render(None)
                return
            t0 = time.process_time()
            try:
                self._render(self.host.ps(all=self.all))
            except Exception as e:  # a view must never take anything down with it
                self._render_text(f"hostconsole: the live view stopped: {e}")
                return
            self.cpu_seconds += time.process_time() - t0
            self.refreshes += 1

    def _render(self, table: Optional[PsTable]) -> None:
        if table is None:
            self._render_text("(the host has shut down: this view no longer changes)")
            return
        if self._ui is not None:
            self._ui.update(table)
        elif self._handle is not None:
            self._handle.update(_html_bundle(table), raw=True)

    def _render_text(self, text: str) -> None:
        if self._ui is not None:
            self._ui.note(text)
        elif self._handle is not None:
            self._handle.update({"text/plain": text, "text/html": f"<p><em>{html.escape(text)}</em></p>"}, raw=True)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text("")  # (the view is its display: nothing more to print)


def _html_bundle(table: PsTable) -> Dict[str, str]:
    stamp = time.strftime("%H:%M:%S")
    return {"text/plain": repr(table),
            "text/html": table._repr_html_() + f"<p style='color:#57606a;font-size:smaller'>updated {stamp}</p>"}


class _WidgetUI:
    """The ipywidgets form of the view: table, buttons per provider, a logs pane."""

    def __init__(self, host: "Host"):
        import ipywidgets as w

        self.w = w
        self.host = host
        self.table = w.HTML()
        self.rows = w.VBox()
        self.pick = w.Dropdown(description="logs of", options=[], layout=w.Layout(width="auto"))
        self.logs = w.HTML()
        self.status = w.HTML()
        self.box = w.VBox([self.table, self.rows, self.pick, self.logs, self.status])
        self._names: List[str] = []

    def update(self, table: PsTable) -> None:
        self.table.value = _html_bundle(table)["text/html"]
        names = [r["name"] for r in table.records]
        if names != self._names:
            self._names = names
            self.rows.children = [self._row(n) for n in names]
            keep = self.pick.value if self.pick.value in names else (names[0] if names else None)
            self.pick.options = names
            self.pick.value = keep
            shown = "" if names else "none"  # (nothing to pick: no picker, no empty pane)
            self.pick.layout.display = self.logs.layout.display = shown
        if self.pick.value:
            try:
                text = self.host.logs(self.pick.value, LOG_LINES)
            except Exception as e:  # (gone meanwhile)
                text = str(e)
            self.logs.value = (f"<pre style='max-height:16em;overflow:auto'>{html.escape(text)}</pre>" if text
                               else f"<p><em>{html.escape(self.pick.value)} has written no output yet</em></p>")

    def _row(self, name: str) -> Any:
        w = self.w
        stop = w.Button(description=f"stop {name}", tooltip=f"%host stop {name}", layout=w.Layout(width="auto"))
        restart = w.Button(description=f"restart {name}", tooltip=f"%host restart {name}",
                           layout=w.Layout(width="auto"))
        stop.on_click(lambda _: self._act(f"stop {name}", lambda: self.host.stop(name)))
        restart.on_click(lambda _: self._act(f"restart {name}", lambda: self.host.restart(name)))
        return w.HBox([w.Label(name, layout=w.Layout(width="12em")), stop, restart])

    def _act(self, what: str, fn: Callable[[], Any]) -> None:
        # A stop may take its stop timeout: never on the kernel's thread.
        def run() -> None:
            try:
                fn()
                self.note(f"{what}: done")
            except Exception as e:
                self.note(f"{what}: {str(e).splitlines()[0]}")

        self.note(f"{what}...")
        threading.Thread(target=run, name="hostconsole-watch-action", daemon=True).start()

    def note(self, text: str) -> None:
        self.status.value = f"<p><em>{html.escape(text)}</em></p>"


def watch_terminal(host: "Host", all: bool = False, interval: float = INTERVAL, once: bool = False) -> None:
    """Redraw the table in place (a terminal) until Ctrl-C."""
    out = sys.stdout
    lines = 0
    try:
        while True:
            text = repr(host.ps(all=all)) + f"\n(updated {time.strftime('%H:%M:%S')}; Ctrl-C to stop watching)"
            width = shutil.get_terminal_size().columns
            rows = [line[:width] for line in text.splitlines()]
            if lines:
                out.write(f"\x1b[{lines}F")  # back to where the last drawing began
            out.write("".join(r + "\x1b[K\n" for r in rows) + "\x1b[J")
            out.flush()
            lines = len(rows)
            if once or not host.started:
                return
            time.sleep(interval)  # (a display's refresh, not a wait for a condition)
    except KeyboardInterrupt:
        pass
