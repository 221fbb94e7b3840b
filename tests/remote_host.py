"""A host living in a separate process, driven over a pipe: so a test can kill its owner.

    rh = RemoteHost(state_dir)          # spawns the owner process, which starts a Host
    rh.call("run", "web", ["sleep", "300"])
    rh.kill()                           # SIGKILL of the owning process
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading


def _serve(conn, state_dir, options):
    import faulthandler, signal as _signal, sys as _sys
    faulthandler.register(_signal.SIGUSR1, file=_sys.stderr, all_threads=True)
    import hostconsole

    host = hostconsole.Host(state_dir, **options).start()
    conn.send(("ok", {"host": host.host_id, "watchdog": host.status()["watchdog_pid"], "pid": os.getpid()}))
    while True:
        try:
            method, args, kwargs = conn.recv()
        except EOFError:
            return
        try:
            if method == "concurrent_purge":
                conn.send(("ok", _concurrent_purge(host, *args)))
                continue
            result = getattr(host, method)(*args, **kwargs)
            if isinstance(result, hostconsole.Provider):
                result = {"name": result.name, "state": result.state, "pid": result.pid}
            elif hasattr(result, "records"):
                result = result.records
            conn.send(("ok", result))
        except hostconsole.HostconsoleError as e:
            conn.send(("error", type(e).__name__, str(e)))
        except BaseException as e:  # an exception escaping the API is a finding
            import traceback

            conn.send(("crash", type(e).__name__, traceback.format_exc()))


def _concurrent_purge(host, n):
    results, errors = [], []

    def call():
        try:
            results.append(host.purge())
        except BaseException as e:  # noqa: BLE001 -- reported, and the test fails on it
            errors.append(repr(e))

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return {"errors": errors, "reports": len(results)}


class RemoteError(Exception):
    def __init__(self, kind, message):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


class RemoteHost:
    def __init__(self, state_dir, **options):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, str(state_dir), options), daemon=True)
        self.proc.start()
        child.close()
        if not self._conn.poll(60):
            raise RuntimeError("the remote host did not start")
        status, info = self._conn.recv()
        self.host_id, self.watchdog, self.pid = info["host"], info["watchdog"], info["pid"]

    def call(self, method, *args, timeout=120, **kwargs):
        self._conn.send((method, args, kwargs))
        if not self._conn.poll(timeout):
            raise TimeoutError(f"remote {method} did not answer within {timeout}s")
        reply = self._conn.recv()
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "crash":
            raise AssertionError(f"an exception escaped host.{method}: {reply[2]}")
        raise RemoteError(reply[1], reply[2])

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(10)
        self._conn.close()

    def close(self):
        try:
            self.call("shutdown")
        finally:
            self._conn.close()
            self.proc.join(30)
