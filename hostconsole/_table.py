"""Tables that print well in a terminal and render as HTML in a notebook."""

from __future__ import annotations

import html
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

Column = Tuple[str, str, Callable[[Any], str]]  # (key, heading, formatter)

STATE_COLOURS = {
    "running": "#1a7f37",
    "exited": "#57606a",
    "starting": "#9a6700",
    "restarting": "#9a6700",
    "stopping": "#9a6700",
    "stopped": "#57606a",
    "failed": "#cf222e",
    "killed": "#9a6700",
    "gone": "#57606a",
}

# (inline: a widget's HTML box has none of the notebook's table styles)
_CELL = "text-align:left;padding:4px 12px 4px 0;white-space:nowrap"


def _blank(v):
    return "-" if v is None or v == [] else str(v)


def fmt_seconds(v):
    if v is None:
        return "-"
    v = float(v)
    if v < 60:
        return f"{v:.1f}s"
    if v < 3600:
        return f"{int(v // 60)}m{int(v % 60):02d}s"
    return f"{int(v // 3600)}h{int(v % 3600 // 60):02d}m"


def fmt_bytes(v):
    if v is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f}{unit}" if unit == "B" else f"{v:.1f}{unit}"
        v /= 1024


class Table:
    """A list of records with a text and an HTML rendering."""

    columns: Sequence[Column] = ()
    state_key = "state"
    empty = "(nothing)"

    def shown_columns(self) -> Sequence[Column]:
        """The columns to show (a table may leave out one that is empty in every row)."""
        return self.columns

    def html_cell(self, key: str, record: Dict[str, Any], text: str) -> Optional[str]:
        """HTML for one cell, where it is more than its escaped text (None: the text)."""
        return None

    def __init__(self, records: List[Dict[str, Any]], notes: Sequence[str] = ()):
        self.records = records
        self.notes = list(notes)  # shown under the table: things the user should know

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, key):
        if isinstance(key, str):
            for r in self.records:
                if r.get("name") == key:
                    return r
            raise KeyError(key)
        return self.records[key]

    def _rows(self) -> List[List[str]]:
        return [[fmt(r.get(key)) for key, _, fmt in self.shown_columns()] for r in self.records]

    def __repr__(self):
        return "\n".join([self._text()] + [f"! {n}" for n in self.notes])

    def _text(self):
        if not self.records:
            return self.empty
        head = [h for _, h, _ in self.shown_columns()]
        rows = self._rows()
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return "\n".join([line(head)] + [line(r) for r in rows])

    def _repr_html_(self):
        notes = "".join(f"<p style='color:#cf222e'>&#9888; {html.escape(n)}</p>" for n in self.notes)
        return self._html() + notes

    def _html(self):
        if not self.records:
            return f"<p><em>{html.escape(self.empty)}</em></p>"
        columns = self.shown_columns()
        head = "".join(f"<th style='{_CELL}'>{html.escape(h)}</th>" for _, h, _ in columns)
        body = []
        for rec, cells in zip(self.records, self._rows()):
            tds = []
            for (key, _, _), cell in zip(columns, cells):
                text = self.html_cell(key, rec, cell) or html.escape(cell)
                if key == self.state_key:
                    colour = STATE_COLOURS.get(str(rec.get(key)), "inherit")
                    text = f"<span style='color:{colour};font-weight:bold'>&#9679; {text}</span>"
                tds.append(f"<td style='{_CELL}'>{text}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def port_url(port: int) -> str:
    """Where a browser reaches a provider's port: through jupyter-server-proxy under
    JupyterHub (``{JUPYTERHUB_SERVICE_PREFIX}proxy/PORT/``), else on this machine."""
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if prefix:
        return f"{prefix.rstrip('/')}/proxy/{port}/"
    return f"http://127.0.0.1:{port}/"


def _restarts(r: Dict[str, Any]) -> str:
    n = str(r.get("restarts") if r.get("restarts") is not None else "-")
    nxt = r.get("next_restart_in")
    return f"{n} (next in {nxt:.1f}s)" if isinstance(nxt, (int, float)) else n


class PsTable(Table):
    empty = "(no providers)"
    columns = (
        ("name", "NAME", str),
        ("kind", "KIND", str),
        ("state", "STATE", str),
        ("pid", "PID", _blank),
        ("uptime", "UPTIME", fmt_seconds),
        ("restarts_shown", "RESTARTS", str),
        ("exit", "EXIT", _blank),
        ("cpu_percent", "CPU%", lambda v: "-" if v is None else f"{v:.1f}"),
        ("rss", "RSS", fmt_bytes),
        ("nprocs", "PROCS", str),
        ("ports", "PORTS", lambda v: ",".join(map(str, v)) if v else "-"),
        ("reason", "REASON", _blank),
    )

    def shown_columns(self) -> Sequence[Column]:
        # REASON only where something failed: a table of healthy providers stays narrow.
        return self.columns if any(r.get("reason") for r in self.records) else self.columns[:-1]

    def _rows(self):
        for r in self.records:
            r.setdefault("exit", r.get("signal") or r.get("exit_code"))
            r.setdefault("restarts_shown", _restarts(r))
        rows = super()._rows()
        for r in self.records:
            r.pop("exit", None)
            r.pop("restarts_shown", None)
        return rows

    def html_cell(self, key: str, record: Dict[str, Any], text: str) -> Optional[str]:
        if key == "ports" and record.get("ports"):
            return ", ".join(f"<a href='{html.escape(port_url(p))}' target='_blank'>{p}</a>" for p in record["ports"])
        if key == "reason" and record.get("reason"):
            return f"<span style='color:#cf222e'>{html.escape(text)}</span>"
        return None


class Inspect(Table):
    """Each provider as it was defined: what ``%host status`` shows below the host."""

    empty = "(no providers)"
    columns = (
        ("name", "NAME", str),
        ("command", "COMMAND", lambda v: (v or "-").replace("\n", "; ")[:80]),
        ("cwd", "CWD", _blank),
        ("ready", "READY", _blank),
        ("stop", "STOP", _blank),
        ("restart", "RESTART", _blank),
        ("membership", "MEMBERSHIP", _blank),
    )


class StopReport(Table):
    """What a stop or purge did, per provider."""

    empty = "(nothing to stop)"
    state_key = "outcome"
    columns = (
        ("name", "NAME", str),
        ("outcome", "OUTCOME", str),
        ("exit_code", "EXIT CODE", _blank),
        ("signal", "SIGNAL", _blank),
        ("seconds", "SECONDS", lambda v: f"{v:.3f}"),
    )

    def __init__(self, records, seconds: float = 0.0, notes: Sequence[str] = ()):
        super().__init__(records, notes)
        self.seconds = seconds  # wall time of the whole stop, all levels
