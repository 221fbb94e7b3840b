"""The results table (text for the terminal, markdown for RESULTS.md) and the machine."""

from __future__ import annotations

import os
import platform
import sys
from typing import List, Optional, Tuple

from . import _common as _C
from ._scenarios import DEFAULT_N, FIGURES, NEVER, Ctx, Figure

HC = "hostconsole"


def machine() -> List[Tuple[str, str]]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                    break
    except OSError:
        pass
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("memory", mem),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", f"{sys.version.split()[0]} ({sys.executable})"),
        ("load average at the end (1/5/15 min)", load),
    ] + [(f"creating a file in {d}", f"{us:.0f} µs (median)") for d, us in _C.FILE_CREATE.items()]


def source_state() -> str:
    """Which hostconsole was measured: the commit, and whether its files had local edits."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hostconsole"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {sha or '?'}" + (f" + uncommitted changes to {', '.join(changed)}" if changed else " (clean)")


def versions(ctx: Ctx) -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("hostconsole", "ipython", "psutil", "supervisor", "circus", "pyzmq", "tornado", "honcho"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} (not installed)")
    out += [cls(ctx.tmp).version() for cls in ctx.systems if cls.name == "pm2"]  # not a Python package
    return ", ".join(out)


def _fmt(v: float, unit: str) -> str:
    if v == NEVER:
        return "never"
    if unit == "count":
        return f"{v:g}"
    if unit == "bytes":
        return f"{v / 2**20:.1f} MiB"
    if unit == "us":
        return f"{v * 1e6:.0f} µs"
    if unit == "ms" or (unit == "s" and abs(v) < 1.0):
        return f"{v * 1000:.1f} ms"
    return f"{v:.3f} s"


def _cell(ctx: Ctx, f: Figure, system: str) -> str:
    s = ctx.results.summary(f.key, system)
    if s is None:
        return "—"
    lo, med = (_fmt(x, f.unit) for x in s)
    return med if lo == med else f"{lo} / {med}"


def _ratio(ctx: Ctx, f: Figure, system: str) -> str:
    if not f.ratio or system == "popen":
        return ""
    s, b = ctx.results.summary(f.key, system), ctx.results.summary(f.key, "popen")
    if s is None or b is None or b[1] in (0, NEVER) or s[1] == NEVER:
        return ""
    return f"{s[1] / b[1]:.2f}×"


def verdict(ctx: Ctx, f: Figure) -> Optional[Tuple[bool, str]]:
    """(met, how it was judged) for hostconsole's figure, or None without a target."""
    if f.target is None:
        return None
    r = ctx.results
    s = r.summary(f.key, HC)
    if s is None:
        return None
    kind = f.target[0]
    if kind == "ratio":
        b = r.summary(f.key, "popen")
        if b is None or not b[1]:
            return None
        ratio = s[1] / b[1]
        return ratio <= f.target[1], f"median {ratio:.2f}× Popen"
    if kind == "max":
        return s[1] <= f.target[1], f"median {_fmt(s[1], f.unit)}"
    if kind == "path":  # ≤ factor × (critical path + the start cost measured in the same run)
        factor, path, cost_key = f.target[1:]
        c = r.summary(cost_key, HC)
        if c is None:
            return None
        bound = factor * (path + c[1])
        return s[1] <= bound, (f"median {_fmt(s[1], f.unit)}; bound {factor:g} × ({_fmt(path, f.unit)} + "
                               f"{_fmt(c[1], f.unit)}) = {_fmt(bound, f.unit)}")
    if kind == "zero":
        worst = r.worst(f.key, HC)
        return worst == 0, f"worst repetition {worst:g}"
    return None


def rows(ctx: Ctx, systems: List[str]):
    """(figure label, [cell, ratio] per system, target, verdict) for every figure with data."""
    out = []
    for f in FIGURES:
        if f.key not in ctx.results.samples and f.key not in ctx.results.derived:
            continue
        n = ctx.results.n.get(f.scenario)
        label = f.text(n)
        cells = []
        for s in systems:
            cells.append(_cell(ctx, f, s))
            if s != "popen":
                cells.append(_ratio(ctx, f, s))
        v = verdict(ctx, f)
        vtext = "" if v is None else (("met" if v[0] else "MISSED") + f" ({v[1]})")
        if v is not None and n != DEFAULT_N.get(f.scenario):
            vtext += f" [target set for N={DEFAULT_N[f.scenario]}]"
        out.append((label, cells, f.target_text, vtext))
    return out


def headers(systems: List[str]) -> List[str]:
    h = ["figure"]
    for s in systems:
        name = {"popen": "Popen (baseline)", "supervisor": "supervisord"}.get(s, s)
        h.append(f"{name} min / median")
        if s != "popen":
            h.append("× Popen")
    return h + ["target (hostconsole)", "verdict"]


def text_table(ctx: Ctx, systems: List[str]) -> str:
    h = headers(systems)
    body = [[label] + cells + [t, v] for label, cells, t, v in rows(ctx, systems)]
    widths = [max(len(str(r[i])) for r in [h] + body) for i in range(len(h))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(h), line(["-" * w for w in widths])] + [line(r) for r in body])


def markdown_table(ctx: Ctx, systems: List[str]) -> str:
    h = headers(systems)
    body = [[label] + cells + [t, v] for label, cells, t, v in rows(ctx, systems)]
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(h) + " |", "|" + "|".join(["---"] + ["--:"] * (len(h) - 3) + ["---", "---"]) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in body]
    return "\n".join(out)
