"""An owner process for crash tests: starts a host with a mix of providers, writes what it
started to a JSON file, then waits to be killed.

    python owner.py STATE_DIR OUT_JSON [COUNT]
"""

import json
import os
import sys
import time

import hostconsole

state_dir, out = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
work = os.path.dirname(out)
host = hostconsole.Host(state_dir).start()


def term_log(name):
    return f"{work}/{name}.term"


mix = {}
for i in range(count):
    # graceful, with a background grandchild in its group
    mix[f"plain{i}"] = (f"trap 'echo TERM > {term_log(f'plain{i}')}; exit 0' TERM; "
                        f"sleep 300 & echo $! > {work}/plain{i}.gc; echo ready; wait", 5)
    # graceful, with a grandchild that escaped into its own session
    mix[f"escape{i}"] = (f"setsid bash -c \"trap 'echo TERM > {term_log(f'escape{i}')}; exit 0' TERM; "
                         f"sleep 300 & wait\" & echo $! > {work}/escape{i}.gc; echo ready; wait", 5)
    # ignores SIGTERM: must be killed after its stop timeout
    mix[f"stubborn{i}"] = ("trap '' TERM; sleep 300 & echo ready; wait", 1)
for name, (script, stop_timeout) in mix.items():
    host.run(name, script, shell=True, stop_timeout=stop_timeout)
deadline = time.monotonic() + 20
while not all("ready" in host.logs(n) for n in mix) and time.monotonic() < deadline:
    time.sleep(0.02)
with open(out + ".tmp", "w") as f:
    json.dump({"host": host.host_id, "watchdog": host.status()["watchdog_pid"],
               "providers": {n: host.provider(n).pid for n in mix}}, f)
os.rename(out + ".tmp", out)
while True:
    time.sleep(60)
