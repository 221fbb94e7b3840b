"""Terminal IPython under a real pty (pexpect): Ctrl-C, Ctrl-D and closing the terminal,
and the `hostconsole console` command.

At the prompt Ctrl-C is a key press; while a cell runs the terminal is cooked and Ctrl-C is
a SIGINT to IPython's foreground process group -- which no provider and no watchdog is in.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pexpect
import pytest

import hostconsole

from helpers import alive, marked, wait_until

PY = sys.executable
PKG_PARENT = str(Path(hostconsole.__file__).resolve().parent.parent)
PROMPT = re.compile(r"In \[(\d+)\]:")


def providers_of(host_id):
    return {m.get("HOSTCONSOLE_PROVIDER") for m in marked(host_id).values()} - {None}


class Terminal:
    def __init__(self, argv, tmp_path):
        env = dict(os.environ, HOSTCONSOLE_STATE_DIR=str(tmp_path / "state"), IPYTHONDIR=str(tmp_path / "ipython"),
                   PYTHONPATH=PKG_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=str(tmp_path), encoding="utf-8",
                                   timeout=30, dimensions=(50, 220))
        self.child.logfile_read = open(tmp_path / "terminal.log", "w")
        self.host_id = None
        self.n = 0

    def prompt(self):
        """Wait for the next prompt (prompt_toolkit redraws the current one as you type)."""
        while True:
            self.child.expect(PROMPT)
            n = int(self.child.match.group(1))
            if n > self.n:
                self.n = n
                return

    def line(self, text, expect=None):
        """Type a line at the prompt; wait for ``expect`` (if given), then the next prompt."""
        self.child.sendline(text)
        if expect is not None:
            self.child.expect(expect)
        self.prompt()
        return self.child.before

    def learn_host(self):
        """The host id of the IPython in the terminal (the regex cannot match the echoed input)."""
        self.child.sendline('print("HOST=" + __import__("hostconsole").get_host().host_id)')
        self.child.expect(r"HOST=([0-9a-f]{8})")
        self.host_id = self.child.match.group(1)
        self.prompt()
        return self.host_id

    def close(self):
        if self.child.isalive():
            self.child.close(force=True)
        self.child.logfile_read.close()


@pytest.fixture
def terminal(tmp_path):
    made = []

    def start(*args, console=False):
        argv = ([PY, "-m", "hostconsole", "console"] if console else [PY, "-m", "IPython", "--ext", "hostconsole"])
        t = Terminal(argv + ["--colors=NoColor", *args], tmp_path)
        made.append(t)
        return t

    yield start
    for t in made:
        t.close()
        if t.host_id:
            wait_until(lambda: not marked(t.host_id), timeout=15, what="the terminal's providers to end")


def test_ctrl_c_interrupts_only_waiting_and_ctrl_d_leaves_nothing(terminal):
    t = terminal()
    t.prompt()
    t.line("%host run a -- sleep 300", r"Provider 'a': running")
    host_id = t.learn_host()
    a = next(i for i, m in marked(host_id).items() if m.get("HOSTCONSOLE_PROVIDER") == "a")

    # Ctrl-C at the prompt: a key press that drops the line (else the next line would
    # append to it, and fail).
    t.child.send("%host purge")
    t.child.expect("purge")
    t.child.sendcontrol("c")

    # Ctrl-C while a magic waits (SIGINT to IPython's group): the wait ends, the oneshot goes on.
    t.child.sendline("%host run slow --oneshot -- sleep 30")
    t.child.expect(r"\rslow: waiting for exit 0 \(\d+\.\ds\)\x1b\[K")  # the progress line, in place
    t.child.sendcontrol("c")
    t.child.expect("KeyboardInterrupt: interrupted the waiting only")
    shown = t.child.before  # what came between the progress line and that line
    t.prompt()
    assert "Traceback" not in shown and "File " not in shown and shown.count("\n") <= 2, "one line, not a traceback"
    assert providers_of(host_id) == {"a", "slow"} and alive(a)

    # Ctrl-C ends `logs --follow`, quietly, and only that.
    t.line("%host run ticker -- bash -c 'while :; do echo tick; sleep 0.1; done'", "Provider 'ticker'")
    t.child.sendline("%host logs ticker --follow")
    t.child.expect("tick\r\n(.*)tick\r\n")
    t.child.sendcontrol("c")
    t.prompt()
    assert "Traceback" not in t.child.before and "KeyboardInterrupt" not in t.child.before
    assert providers_of(host_id) == {"a", "slow", "ticker"}

    # Ctrl-D, and yes at the confirmation: atexit runs the shutdown before the process ends.
    t.child.sendcontrol("d")
    t.child.expect(r"Do you really want to exit \(\[y\]/n\)\?")
    t.child.sendline("y")
    t.child.expect(pexpect.EOF)
    t.child.close()
    assert t.child.exitstatus == 0
    assert not marked(host_id), "nothing outlives the terminal session"


def test_exit_in_the_terminal_leaves_nothing(terminal):
    t = terminal("--no-confirm-exit")
    t.prompt()
    t.line("%host run a --stop-timeout 1 -- bash -c \"trap '' TERM; sleep 300 & wait\"", "Provider 'a'")
    host_id = t.learn_host()
    t.child.sendline("exit")
    t.child.expect(pexpect.EOF)
    t.child.close()
    assert t.child.exitstatus == 0 and not marked(host_id)


def test_closing_the_terminal_leaves_nothing(terminal, tmp_path):
    t = terminal()
    t.prompt()
    t.line("%host run a -- sleep 300", "Provider 'a'")
    t.line("%host run b -- bash -c 'setsid sleep 300 & wait'", "Provider 'b'")
    host_id = t.learn_host()
    wait_until(lambda: len(marked(host_id)) == 4, what="a, b, b's escapee and the watchdog")
    t.child.close(force=True)  # the pty's master goes away: the kernel SIGHUPs IPython
    assert t.child.signalstatus == signal.SIGHUP, "IPython dies of the hang-up as usual: no hook ran"
    wait_until(lambda: not marked(host_id), timeout=10, interval=0.01, what="the watchdog to stop everything")


def test_hostconsole_console_starts_the_host_and_ctrl_d_leaves_nothing(terminal):
    t = terminal("--no-confirm-exit", console=True)
    t.child.expect(r"hostconsole: host ([0-9a-f]{8}) started")
    host_id = t.host_id = t.child.match.group(1)
    t.prompt()
    assert len(marked(host_id)) == 1, "the host (its watchdog) is up before the first magic"
    t.line("%host run web -- sleep 300", "Provider 'web': running")
    t.line("%host status", "hooks +atexit, exit_now")
    assert t.learn_host() == host_id, "the magics use the host the console started"
    t.child.sendcontrol("d")
    t.child.expect(pexpect.EOF)
    t.child.close()
    assert t.child.exitstatus == 0 and not marked(host_id)
