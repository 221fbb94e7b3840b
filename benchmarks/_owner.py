"""The crash scenario's owner: a separate process that starts N provider trees, reports
them in a JSON file, and waits to be SIGKILLed.

    python _owner.py hostconsole OUT_JSON N STATE_DIR   # a Host and N providers
    python _owner.py popen OUT_JSON N CRASH_ID          # N raw Popen trees (the baseline)

It never outlives a forgotten benchmark for long: it exits by itself after 10 minutes.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import CRASH_TREE, CRASH_VAR  # noqa: E402

LIFETIME = 600.0


def main():
    kind, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "hostconsole":
        import hostconsole

        host = hostconsole.Host(sys.argv[4]).start()
        pids = [host.run(f"tree{i}", ["bash", "-c", CRASH_TREE]).pid for i in range(n)]
        report = {"owner": os.getpid(), "host": host.host_id, "watchdog": host.status()["watchdog_pid"],
                  "pids": pids}
    elif kind == "popen":
        env = dict(os.environ, **{CRASH_VAR: sys.argv[4]})
        procs = [subprocess.Popen(["bash", "-c", CRASH_TREE], env=env, start_new_session=True,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(n)]
        report = {"owner": os.getpid(), "pids": [p.pid for p in procs]}
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    with open(out + ".tmp", "w") as f:
        json.dump(report, f)
    os.rename(out + ".tmp", out)
    time.sleep(LIFETIME)


if __name__ == "__main__":
    main()
