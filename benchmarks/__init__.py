"""hostconsole benchmarks: hostconsole side by side with raw ``subprocess.Popen``,
supervisord, circus and pm2, measured in one run.

    python -m benchmarks                      # full default run (a few minutes)
    python -m benchmarks --quick              # smoke test (well under a minute)
    python -m benchmarks --only start,ps      # some scenarios
    python -m benchmarks --repeat 7 --n start=100 --markdown benchmarks/RESULTS.md

Every figure is also given as a ratio to a raw-``Popen`` baseline measured in the same run:
machines are noisy, ratios are what count.  supervisord and circus run when they are
installed (``pip install supervisor circus``); pm2 when ``npm`` is there to install it into
``benchmarks/.node/`` (git-ignored; once, then reused); without them their columns are skipped.

Every process a benchmark starts carries ``HCBENCH_TAG=<this run's token>`` in its
environment and is stopped by pid (identity-checked), and verified gone, before the next
scenario; state and configuration live in a temporary directory removed at the end.
"""
