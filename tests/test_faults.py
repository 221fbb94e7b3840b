"""Random interleavings of everything that can happen to a host, with an invariant checker.

A hypothesis state machine drives a real host living in its own owner process: it runs a
mix of providers (plain, grandchild, escaped grandchild, SIGTERM-ignoring, crash-looping
with a restart policy, oneshot) with random dependencies, stops, restarts, purges (also
from several threads at once), kill -9s random provider processes and the watchdog, and at
the end SIGKILLs the owner.  After every step: what ``ps`` says agrees with the OS, and
every marked process belongs to a provider the host knows.  After the end: nothing marked
survives (the watchdog, or -- if the watchdog was killed too -- a reap, cleans up).

Bounded for CI; ``HOSTCONSOLE_SOAK=1`` runs many more and longer sequences.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import hostconsole
from hostconsole import _proc

from helpers import marked, wait_until
from remote_host import RemoteError, RemoteHost

SOAK = bool(os.environ.get("HOSTCONSOLE_SOAK"))

MIX = {
    "plain": dict(command=["sleep", "300"]),
    "grandchild": dict(command="sleep 300 & wait", shell=True),
    "escapee": dict(command="setsid sleep 300 & wait", shell=True),
    "stubborn": dict(command="trap '' TERM; sleep 300 & wait", shell=True, stop_timeout=0.3),
    "crashy": dict(command="sleep 0.3; exit 1", shell=True, restart="on-failure"),
    "oneshot": dict(command="echo done", shell=True, oneshot=True),
}
ACTIVE = {"starting", "running", "restarting", "stopping"}
EXPECTED_ERRORS = {"DuplicateProvider", "UnknownProvider", "UnknownDependency", "ProviderFailed", "HostError"}


class HostMachine(RuleBasedStateMachine):
    state_dir = None  # set by the test

    @initialize()
    def start(self):
        self.rh = RemoteHost(self.state_dir, restart_backoff=0.05, restart_backoff_max=0.2,
                             restart_limit=3, restart_window=10)
        self.names = []
        self.watchdog_killed = False
        self.steps = 0

    # --- actions --------------------------------------------------------------------------

    @rule(kind=st.sampled_from(sorted(MIX)), n=st.integers(0, 9), deps=st.lists(st.integers(0, 20), max_size=2))
    def run(self, kind, n, deps):
        name = f"{kind}{n}"
        requires = sorted({self.names[d % len(self.names)] for d in deps}) if self.names else []
        requires = [r for r in requires if r != name]
        spec = dict(MIX[kind])
        command = spec.pop("command")
        try:
            self.rh.call("run", name, command, requires=requires, ready_timeout=5, **spec)
        except RemoteError as e:
            assert e.kind in EXPECTED_ERRORS, e
            if e.kind == "HostError":
                assert self.watchdog_killed, e
        if name not in self.names:
            self.names.append(name)

    @precondition(lambda self: self.names)
    @rule(i=st.integers(0, 100))
    def stop(self, i):
        name = self.names[i % len(self.names)]
        try:
            report = self.rh.call("stop", name)
            assert name in [r["name"] for r in report]
        except RemoteError as e:
            assert e.kind in EXPECTED_ERRORS, e  # e.g. it was never started (its start failed)

    @precondition(lambda self: self.names)
    @rule(i=st.integers(0, 100))
    def restart(self, i):
        name = self.names[i % len(self.names)]
        try:
            self.rh.call("restart", name)
        except RemoteError as e:
            assert e.kind in EXPECTED_ERRORS, e

    @rule()
    def purge(self):
        self.rh.call("purge")

    @rule(n=st.integers(2, 5))
    def concurrent_purge(self, n):
        # (Whether they share one purge depends on timing: a purge with nothing to stop
        # ends before the next thread asks.  That they do is pinned in test_host.py.)
        out = self.rh.call("concurrent_purge", n)
        assert out["errors"] == [], out

    @rule(i=st.integers(0, 1000))
    def kill_a_provider_process(self, i):
        procs = sorted(ident for ident, m in marked(self.rh.host_id).items() if m.get("HOSTCONSOLE_PROVIDER"))
        if procs:
            _proc.send(procs[i % len(procs)], signal.SIGKILL)

    @precondition(lambda self: not self.watchdog_killed)
    @rule()
    def kill_the_watchdog(self):
        old = self.rh.call("status")["watchdog_pid"]
        os.kill(old, signal.SIGKILL)
        self.watchdog_killed = True
        wait_until(lambda: self.rh.call("status")["watchdog_pid"] != old and self.rh.call("status")["watchdog_alive"],
                   what="a replacement watchdog")

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def ps_agrees_with_the_os(self):
        # A process may be between its exit and the host hearing of it: allow a moment.
        wait_until(self._consistent, timeout=5, interval=0.05, what="ps to agree with the OS")

    def _consistent(self):
        records = {r["name"]: r for r in self.rh.call("ps", all=True)}
        for r in records.values():
            if r["state"] in ("running", "stopping") and r["pid"] is not None:
                st_ = _proc.stat(r["pid"])
                if st_ is None or st_.dead:
                    return False
        known = set(records)
        for m in marked(self.rh.host_id).values():
            name = m.get("HOSTCONSOLE_PROVIDER")
            if name is None:
                continue  # the watchdog
            if name not in known:
                return False
            if records[name]["state"] in ("stopped",) and not self.watchdog_killed:
                # The host stopped it: nothing of it may be left running.
                return False
        return True

    def teardown(self):
        rh = getattr(self, "rh", None)
        if rh is None:
            return
        host_id = rh.host_id
        rh.kill()  # the end of every sequence: the owner dies without a word
        if self.watchdog_killed:
            # The double fault: leftovers wait for a reap, which must find them all.
            time.sleep(0.2)
            hostconsole.reap(state_dir=self.state_dir)
        wait_until(lambda: not marked(host_id), timeout=15, what="every marked process to be gone")


@pytest.mark.timeout(900 if SOAK else 300)
def test_random_interleavings_leave_nothing_behind(state_dir):
    HostMachine.state_dir = state_dir
    machine = settings(
        max_examples=60 if SOAK else 6,
        stateful_step_count=40 if SOAK else 12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not SOAK,  # CI: a fixed sequence of examples; soak: fresh ones every run
        print_blob=True,
    )(HostMachine)
    machine.TestCase().runTest()
