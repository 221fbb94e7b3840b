"""End to end through a real Jupyter kernel (jupyter_client's KernelManager, this venv's
python): every way a kernel ends leaves no process of its host behind.

The kernels are launched the way Jupyter launches them -- their own session and process
group, signals to that group on shutdown and restart -- with HOSTCONSOLE_STATE_DIR in the
test's tmp dir.  One kernel is shared by the tests that do not end it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

import hostconsole
from hostconsole import _proc

from helpers import alive, free_port, marked, read_pids, wait_until

PY = sys.executable
PKG_PARENT = str(Path(hostconsole.__file__).resolve().parent.parent)  # the code under test


class Kernel:
    """A kernel started by jupyter_client, with helpers to run cells and look at its host."""

    def __init__(self, work: Path, kernels_dir: Path, spec: str = "hostconsole-test"):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.state_dir = work / "state"
        ksm = KernelSpecManager(kernel_dirs=[str(kernels_dir)])
        self.km = KernelManager(kernel_name=spec, kernel_spec_manager=ksm)
        self.km.connection_file = str(work / "connection.json")
        env = dict(os.environ, HOSTCONSOLE_STATE_DIR=str(self.state_dir), IPYTHONDIR=str(work / "ipython"),
                   PYTHONPATH=PKG_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(work / "kernel.log", "ab")
        self.km.start_kernel(env=env, cwd=str(work), stdout=self.log, stderr=self.log)
        self.proc = self.km.provisioner.process
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.displays = []  # (msg_type, parent msg id, display id, data): see note_display

    def run(self, code: str, timeout: float = 60, ok: bool = True, streams_only: bool = False):
        """Execute a cell; (reply content, everything it showed, as text)."""
        shown = []

        def hook(msg):
            c, kind = msg["content"], msg["msg_type"]
            self.note_display(msg)
            if kind == "stream":
                shown.append(c["text"])
            elif streams_only:
                pass  # (a live view's updates arrive during any cell)
            elif kind in ("execute_result", "display_data", "update_display_data"):
                shown.append(f"[{kind}] {c['data'].get('text/plain', '')}\n")
            elif kind == "error":
                shown.append(f"[error] {c['ename']}: {c['evalue']}\n")

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)["content"]
        text = "".join(shown)
        if ok:
            assert reply["status"] == "ok", text
        return reply, text

    def note_display(self, msg):
        """Keep every display (and update) that has a display id: a live view updates its
        display from a thread, while other cells run (their hooks see those messages)."""
        c = msg["content"]
        if msg["msg_type"] in ("display_data", "update_display_data") and c.get("transient", {}).get("display_id"):
            self.displays.append((msg["msg_type"], msg["parent_header"].get("msg_id"),
                                  c["transient"]["display_id"], c.get("data", {})))

    def eval(self, expr: str):
        _, text = self.run(f"import json as _j, hostconsole as _hc; print(_j.dumps({expr}))", streams_only=True)
        return json.loads(text)

    def host_id(self) -> str:
        return self.eval("_hc.get_host().host_id")

    def start_mix(self, port=None) -> dict:
        """The provider mix: plain, a background grandchild, a setsid escapee, a SIGTERM
        ignorer, and a web server with a readiness check.  Returns the host id and pids."""
        d = self.work
        self.run("%load_ext hostconsole")
        self.run("%host run plain -- sleep 300")
        self.run(f"%%host run bg\nsleep 300 & echo $! > {d}/bg.gc\nwait")
        self.run(f"%%host run escape\nsetsid sleep 300 & echo $! > {d}/escape.gc\nwait")
        self.run("%%host run stubborn --stop-timeout 1\ntrap '' TERM\nsleep 300 & wait")
        port = port or free_port()
        self.run(f"%host run web --ready port:{port} -- {PY} -m http.server {port} --bind 127.0.0.1")
        host_id = self.host_id()
        gcs = [read_pids(d / "bg.gc")[0], read_pids(d / "escape.gc")[0]]
        assert os.getsid(gcs[1]) == gcs[1], "the escapee left its provider's session"
        # plain, bg (+child), escape (+child), stubborn (+child), web, and the watchdog
        wait_until(lambda: len(marked(host_id)) == 9, what="the mix's 8 processes and the watchdog")
        return {"host": host_id, "port": port, "grandchildren": gcs}

    def close(self):
        try:
            self.kc.stop_channels()
            if self.km.has_kernel and self.km.is_alive():
                self.km.shutdown_kernel(now=True)  # only this kernel's own process group
            else:
                self.km.cleanup_resources()
        finally:
            self.log.close()


@pytest.fixture
def kernel(tmp_path, kernels_dir):
    k = Kernel(tmp_path / "kernel", kernels_dir)
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory, kernels_dir):
    """One kernel for the tests that do not end it."""
    k = Kernel(tmp_path_factory.mktemp("shared-kernel"), kernels_dir)
    try:
        k.run("%load_ext hostconsole")
        yield k
    finally:
        k.close()


def providers_of(host_id):
    return {m.get("HOSTCONSOLE_PROVIDER") for m in marked(host_id).values()} - {None}


def bindable(port):
    # As a server binds (http.server sets SO_REUSEADDR too).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# --- paths that end the providers, not the kernel ------------------------------------------


def test_purge_stops_every_tree_and_the_host_stays(shared):
    mix = shared.start_mix()
    _, text = shared.run("%host purge")
    assert "stubborn" in text and "killed" in text  # the SIGTERM ignorer, after its 1 s
    assert not providers_of(mix["host"]), "purge returns once every tree is gone"
    assert not any(alive(p) for p in mix["grandchildren"])
    assert bindable(mix["port"])
    shared.run("%host run again -- sleep 300")
    assert shared.host_id() == mix["host"] and providers_of(mix["host"]) == {"again"}
    shared.run("%host purge")


def test_progress_is_shown_and_finalised_in_place(shared):
    _, text = shared.run("%host run slowstart --oneshot -- sleep 1.3")
    lines = text.splitlines()
    assert lines[0].startswith("[display_data] slowstart: waiting for"), text
    assert any(l.startswith("[update_display_data] slowstart: waiting for") for l in lines)
    assert re.search(r"^\[update_display_data\] slowstart: ready after \d+\.\ds$", text, re.M), text
    assert lines[-1].startswith("[execute_result] <Oneshot 'slowstart': exited")
    _, quick = shared.run("%host run quick --oneshot -- true")
    assert "display_data" not in quick, "no indicator for a wait shorter than half a second"


def test_interrupt_during_a_waiting_magic_keeps_providers(shared):
    shared.run("%host start")
    host_id = shared.host_id()
    shared.run("%host run bystander -- sleep 300")
    msg_id = shared.kc.execute("%host run slow --oneshot -- sleep 30")
    wait_until(lambda: "slow" in providers_of(host_id), timeout=20, what="the oneshot to start")
    time.sleep(0.2)  # into the wait for its exit
    shared.km.interrupt_kernel()
    reply = shared.kc.get_shell_msg(timeout=20)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert providers_of(host_id) >= {"slow", "bystander"}, "the interrupt reached no provider"
    records = {r["name"]: r["state"] for r in shared.eval("_hc.get_host().ps().records")}
    assert records["slow"] == "starting" and records["bystander"] == "running"
    shared.run("%host stop slow bystander")


def test_interrupt_ends_logs_follow_only(shared):
    shared.run("%host start")
    shared.run("%host run ticker -- bash -c 'i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done'")
    host_id = shared.host_id()
    msg_id = shared.kc.execute("%host logs ticker --follow")
    deadline = time.monotonic() + 20
    ticks = 0
    while ticks < 5:
        assert time.monotonic() < deadline, "no output from --follow"
        msg = shared.kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            ticks += msg["content"]["text"].count("tick")
    shared.km.interrupt_kernel()
    reply = shared.kc.get_shell_msg(timeout=20)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "ok", "the interrupt ends the streaming, quietly"
    assert "ticker" in providers_of(host_id)
    shared.run("%host stop ticker")


def test_reload_ext_leaves_nothing_and_rewraps_do_shutdown_once(shared):
    shared.run("%host run a -- sleep 300")
    old = shared.host_id()
    assert providers_of(old) >= {"a"}
    shared.run("%reload_ext hostconsole")
    assert not marked(old), "unload shut the host down before returning"
    shared.run("%host run b -- sleep 300")
    new = shared.host_id()
    assert new != old and providers_of(new) == {"b"}
    # One wrapper around the kernel's own do_shutdown: unload restored it, load wrapped it.
    chain = shared.eval(
        "[type(k.do_shutdown.__self__).__name__, k.do_shutdown.__self__.original.__func__ is type(k).do_shutdown]"
        " if (k := get_ipython().kernel) else None")
    assert chain == ["_Hooks", True]
    status = shared.eval("dict(get_ipython().run_line_magic('host', 'status'))")
    assert status["hooks"] == ["atexit", "exit_now", "kernel.do_shutdown"] and status["host"] == new
    shared.run("%host purge")


# --- every way the kernel ends --------------------------------------------------------------


def test_shutdown_request_stops_providers_before_it_returns(kernel):
    mix = kernel.start_mix()
    # Its own stop timeout (3 s) is longer than the manager's patience: the kernel still exits
    # cleanly, before the manager's SIGTERM, and leaves that one stop to its watchdog, which
    # keeps the provider's own stop timeout (a database gets to checkpoint).
    kernel.run("%%host run patient --stop-timeout 3\ntrap '' TERM\necho ready\nsleep 300 & wait")
    wait_until(lambda: "ready" in kernel.eval("_hc.get_host().logs('patient')"), what="the trap")
    patient = kernel.eval("list(_hc.get_host().provider('patient').main)")
    t0 = time.monotonic()
    kernel.km.shutdown_kernel()
    took = time.monotonic() - t0
    print(f"\nshutdown_kernel() with the mix: {took:.2f} s")
    assert kernel.proc.wait(timeout=5) == 0, "a clean exit, not the manager's SIGTERM or SIGKILL"
    assert took < 2.5, "inside jupyter_client's patience"
    left = {m.get("HOSTCONSOLE_PROVIDER") for m in marked(mix["host"]).values()} - {None}
    assert left <= {"patient"}, "every provider that ends on its signal was stopped before the kernel exited"
    wait_until(lambda: not marked(mix["host"]), timeout=10, what="the watchdog to finish the handed-over stop")
    waited = time.monotonic() - t0
    assert 2.9 < waited, "the patient provider kept its own stop timeout (3 s), not the kernel's 1.5 s"
    report = json.loads((kernel.state_dir / "hosts" / mix["host"] / "watchdog-report.json").read_text())
    assert report["handover"] is True
    assert {o["name"]: o["outcome"] for o in report["outcomes"]}.get("patient") == "killed"
    assert not alive(_proc.ProcId(*patient))


def test_extension_loaded_at_kernel_startup_hooks_the_shutdown_too(tmp_path, kernels_dir):
    k = Kernel(tmp_path / "kernel", kernels_dir, spec="hostconsole-test-ext")
    try:
        k.run("%%host run stubborn --stop-timeout 1\ntrap '' TERM\nsleep 300 & wait")
        host_id = k.host_id()
        assert "kernel.do_shutdown" in k.eval("get_ipython().run_line_magic('host', 'status')['hooks']")
        k.km.shutdown_kernel()
        assert k.proc.wait(timeout=5) == 0 and not marked(host_id)
    finally:
        k.close()


def test_restart_frees_the_port_for_the_new_kernel_at_once(kernel):
    mix = kernel.start_mix()
    port = mix["port"]
    old_proc = kernel.proc
    t0 = time.monotonic()
    kernel.km.restart_kernel()
    took = time.monotonic() - t0
    assert bindable(port), "the restarted kernel finds the port free"
    assert not marked(mix["host"])
    assert old_proc.wait(timeout=5) == 0
    print(f"\nrestart_kernel() with the mix: {took:.2f} s")
    kernel.proc = kernel.km.provisioner.process
    kernel.kc.wait_for_ready(timeout=60)
    kernel.run("%load_ext hostconsole")
    _, text = kernel.run(f"%host run web --ready port:{port} -- {PY} -m http.server {port} --bind 127.0.0.1")
    assert "running" in text
    new = kernel.host_id()
    assert new != mix["host"] and providers_of(new) == {"web"}
    kernel.km.shutdown_kernel()
    assert not marked(new)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_to_the_kernel_kills_it_as_usual_and_the_watchdog_stops_everything(kernel, sig):
    mix = kernel.start_mix()
    t0 = time.monotonic()
    os.kill(kernel.proc.pid, sig)
    # No handler of ours: the kernel dies of the signal exactly as it would without us.
    assert kernel.proc.wait(timeout=10) == -sig
    wait_until(lambda: not marked(mix["host"]), timeout=10, interval=0.01, what="every provider to be stopped")
    print(f"\n{sig.name} to the kernel: every marked process gone after {time.monotonic() - t0:.2f} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_the_same_signal_without_the_extension_ends_the_kernel_the_same_way(kernel, sig):
    # The baseline the test above compares with: plain ipykernel, nothing of ours loaded.
    kernel.run("import sys; assert 'hostconsole' not in sys.modules")
    os.kill(kernel.proc.pid, sig)
    assert kernel.proc.wait(timeout=10) == -sig


def test_exit_in_a_cell_stops_providers_before_the_kernel_exits(kernel):
    mix = kernel.start_mix()
    kernel.kc.execute("exit")
    assert kernel.proc.wait(timeout=20) == 0
    assert not marked(mix["host"])


def test_os_exit_runs_no_hook_and_the_watchdog_stops_everything(kernel):
    # What ipykernel's parent poller does when the Jupyter server is SIGKILLed.
    mix = kernel.start_mix()
    kernel.kc.execute("import os; os._exit(1)")
    assert kernel.proc.wait(timeout=10) == 1
    wait_until(lambda: not marked(mix["host"]), timeout=10, interval=0.01, what="every provider to be stopped")
