"""Small helpers the tests share: polling waits and looking at real processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hostconsole import _proc


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def marked(host_id=None):
    """Processes of this user carrying HOSTCONSOLE_HOST (of ``host_id``, if given)."""
    uid = os.getuid()
    out = {}
    for pid in _proc.all_pids():
        if pid == os.getpid() or _proc.owner_uid(pid) != uid:
            continue
        m = _proc.markers(pid)
        hid = m.get("HOSTCONSOLE_HOST")
        if hid and (host_id is None or hid == host_id):
            st = _proc.stat(pid)
            if st is not None and not st.dead:
                out[st.ident] = m
    return out


def alive(pid_or_ident):
    if isinstance(pid_or_ident, _proc.ProcId):
        return _proc.alive(pid_or_ident)
    st = _proc.stat(pid_or_ident)
    return st is not None and not st.dead


def read_pids(path, count=1, timeout=10.0):
    """Wait for ``path`` to hold ``count`` pids (one per line) and return them."""
    p = Path(path)

    def ready():
        try:
            lines = [l for l in p.read_text().split() if l.strip()]
        except FileNotFoundError:
            return None
        return [int(x) for x in lines] if len(lines) >= count else None

    return wait_until(ready, timeout, what=f"{count} pid(s) in {path}")
