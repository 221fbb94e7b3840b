"""The memory scenario's subject: a fresh interpreter that measures its own RSS (and its
watchdog's) around starting a host and N providers, prints JSON, and cleans up.

    python _mem.py hostconsole N STATE_DIR
    python _mem.py popen N

psutil is imported before the first reading (hostconsole uses it for ``ps``; the baseline
has it too), so its own cost is left out of every growth figure.
"""

import json
import os
import subprocess
import sys
import time

import psutil  # noqa: F401  (imported first: its own RSS is not hostconsole's)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import SLEEPER, rss_of  # noqa: E402

ME = os.getpid()


def settle():
    time.sleep(0.6)  # past one tick of the watchdog's tracker (0.5 s)


def main():
    kind, n = sys.argv[1], int(sys.argv[2])
    out = {"rss_base": rss_of(ME)}
    if kind == "hostconsole":
        import hostconsole

        out["rss_import"] = rss_of(ME)
        host = hostconsole.Host(sys.argv[3]).start()
        try:
            try:
                host._current_session().request("ping", timeout=10)  # the watchdog is up and has answered
            except Exception:
                pass
            settle()
            wd = host.status()["watchdog_pid"]
            out["rss_0"] = rss_of(ME)
            out["wd_rss_0"] = rss_of(wd)
            for i in range(n):
                host.run(f"m{i}", SLEEPER)
            settle()
            out["rss_n_run"] = rss_of(ME)
            host.ps()
            out["rss_n"] = rss_of(ME)
            out["wd_rss_n"] = rss_of(wd)
        finally:
            host.shutdown()
    elif kind == "popen":
        out["rss_import"] = out["rss_0"] = rss_of(ME)
        procs = []
        try:
            for _ in range(n):
                procs.append(subprocess.Popen(SLEEPER, start_new_session=True, stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            settle()
            out["rss_n"] = out["rss_n_run"] = rss_of(ME)
        finally:
            for p in procs:
                p.kill()
            for p in procs:
                p.wait(10)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
