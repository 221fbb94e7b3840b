"""``honcho start -f PROCFILE``, run by honcho's own code once the benchmark says go.

The interpreter's start-up and honcho's import happen before the go (a line on stdin), so
that they are not timed: what is timed is what ``honcho start`` does with the Procfile.
Standard library and honcho only."""

import sys

from honcho.command import main

procfile = sys.argv[1]
print("armed", flush=True)
sys.stdin.readline()
main(["start", "-f", procfile, "--no-colour"])
