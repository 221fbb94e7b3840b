"""The live view and the columns that answer questions, through a real kernel's messages
(no browser: tests/test_browser.py renders them in one)."""

from __future__ import annotations

import re
import sys
import time

import pytest

import hostconsole
from hostconsole._table import PsTable

from helpers import free_port, marked, wait_until
from test_kernel import Kernel

PY = sys.executable


@pytest.fixture(scope="module")
def watched(tmp_path_factory, kernels_dir):
    k = Kernel(tmp_path_factory.mktemp("watch-kernel"), kernels_dir)
    try:
        k.run("%load_ext hostconsole\nimport hostconsole._live as _live\n_live.widgets_available = lambda: False")
        yield k
    finally:
        k.close()


def run(kernel, code, timeout=60, ok=True):
    """Execute a cell, keeping every display message of any cell that arrives meanwhile
    (jupyter_client's execute_interactive drops other cells' messages: a live view's
    updates are its cell's, whichever cell runs)."""
    msg_id = kernel.kc.execute(code)
    deadline = time.monotonic() + timeout
    while True:
        msg = kernel.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        kernel.note_display(msg)
        if (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
                and msg["parent_header"].get("msg_id") == msg_id):
            break
    reply = kernel.kc.get_shell_msg(timeout=timeout)
    if ok:
        assert reply["content"]["status"] == "ok", reply["content"]
    return msg_id


def watch_updates(kernel, msg_id, until, timeout=20):
    """The HTML of the display a cell made (and of its updates, whichever cell's messages
    carried them) until ``until(html)``."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:  # (what arrives while no cell runs)
            kernel.note_display(kernel.kc.get_iopub_msg(timeout=0.2))
        except Exception:
            pass
        ids = {d for kind, parent, d, _ in kernel.displays if kind == "display_data" and parent == msg_id}
        seen = [data.get("text/html", "") for _, _, d, data in kernel.displays if d in ids]
        if seen and until(seen[-1]):
            return seen
    raise AssertionError(f"the view never showed what was waited for; it showed {len(seen)} updates: "
                         f"{seen[-1][:300] if seen else None}")


def test_the_watched_table_updates_as_providers_start_fail_and_stop(watched):
    k = watched
    port = free_port()
    msg_id = run(k, "%host ps --watch")
    t0 = time.monotonic()
    run(k, "1 + 1")  # the next cell runs at once: the view does not hold the kernel
    assert time.monotonic() - t0 < 1.0
    run(k, f"%host run web --ready port:{port} -- {PY} -m http.server {port} --bind 127.0.0.1")
    html = watch_updates(k, msg_id, lambda h: "web" in h and "running" in h)[-1]
    assert f"<a href='http://127.0.0.1:{port}/' target='_blank'>{port}</a>" in html
    run(k, "%host run broken --oneshot --restart no -- bash -c 'exit 3'", ok=False)
    html = watch_updates(k, msg_id, lambda h: "broken" in h and "exit 3" in h)[-1]
    assert "REASON" in html and "failed" in html
    run(k, "%host stop web")
    watch_updates(k, msg_id, lambda h: ">web<" not in h)
    run(k, "%host purge")


def test_the_view_ends_when_its_host_shuts_down(watched):
    k = watched
    msg_id = run(k, "%host ps --watch")
    run(k, "%host shutdown")
    watch_updates(k, msg_id, lambda h: "shut down" in h)
    wait_until(lambda: "hostconsole-watch" not in k.eval("[t.name for t in __import__('threading').enumerate()]"),
               what="every view's thread to end")


def test_a_refresh_of_100_providers_costs_the_kernel_little(watched):
    k = watched
    k.run("for i in range(100): _hc_h = __import__('hostconsole').get_host().run(f'p{i}', ['sleep', '300'])",
          timeout=120)
    k.run("_view = _live.LiveView(__import__('hostconsole').get_host(), interval=0.2).show()")
    wait_until(lambda: k.eval("_view.refreshes") >= 10, timeout=30, what="ten refreshes")
    per_refresh = k.eval("_view.cpu_seconds / _view.refreshes")
    k.run("_view.close()\n%host purge", timeout=60)
    print(f"\nlive view, 100 providers: {per_refresh * 1000:.1f} ms of kernel CPU per refresh")
    assert per_refresh < 0.05  # (the target is 20 ms; the figure goes in the notes, measured here)


def test_a_run_handle_shows_a_one_row_table(watched):
    k = watched
    reply, text = k.run("%host run one -- sleep 300")
    html = k.eval("_hc.get_host().provider('one')._repr_html_()")
    assert "<table>" in html and ">one<" in html and html.count("<tr>") == 2  # the header, and its row
    k.run("%host stop one")


def test_status_inspects_every_provider_without_noise(state_dir):
    with hostconsole.Host(state_dir) as h:
        h.run("db", ["sleep", "300"], stop_signal="INT", stop_timeout=7, ready="none")
        s = h.status()
        assert "started" not in s
        [db] = s["inspect"]
        assert db["command"] == "sleep 300" and db["stop"] == "SIGINT, SIGKILL after 7s"
        assert db["membership"].startswith("cgroup ") or db["membership"] == s["fence"]
        from hostconsole._display import HostStatus

        text = repr(HostStatus(s))
        assert "MEMBERSHIP" in text and "SIGINT, SIGKILL after 7s" in text and "{" not in text


def test_failure_reasons_are_short_and_in_the_table(state_dir):
    with hostconsole.Host(state_dir, restart_backoff=0.01, restart_limit=1, restart_window=30) as h:
        port = free_port()
        with pytest.raises(hostconsole.ProviderFailed):
            h.run("late", ["sleep", "300"], ready=f"port:{port}", ready_timeout=0.3)
        h.run("crash", ["bash", "-c", "kill -SEGV $$"], wait=False)
        h.run("again", ["bash", "-c", "exit 2"], restart="on-failure")
        wait_until(lambda: h.provider("again").state == "failed" and h.provider("crash").state == "failed",
                   what="both to fail")
        t = h.ps(all=True)
        assert t["late"]["reason"] == "not ready after 0.3s"
        assert t["crash"]["reason"] == "killed by SIGSEGV"
        assert t["again"]["reason"] == "restart limit reached"
        assert "REASON" in repr(t) and "killed by SIGSEGV" in repr(t)


def test_restarts_show_when_the_next_one_comes(state_dir):
    with hostconsole.Host(state_dir, restart_backoff=5, restart_limit=5) as h:
        h.run("flaky", ["bash", "-c", "exit 1"], restart="on-failure")
        wait_until(lambda: h.provider("flaky").state == "restarting", what="a restart to be pending")
        rec = h.ps()["flaky"]
        assert 0 < rec["next_restart_in"] <= 5
        assert re.search(r"1 \(next in \d\.\ds\)", repr(h.ps()))


def test_port_links_go_through_jupyterhubs_proxy_when_there_is_one(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    t = PsTable([{"name": "web", "state": "running", "ports": [8000]}])
    assert "<a href='/user/ada/proxy/8000/' target='_blank'>8000</a>" in t._repr_html_()
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX")
    assert "href='http://127.0.0.1:8000/'" in t._repr_html_()


def test_no_widgets_no_error(watched):
    """Without ipywidgets the view is the HTML table, and nothing complains."""
    k = watched
    reply, text = k.run("%host ps --watch")
    assert "Error" not in text and "Traceback" not in text
    k.run("%host purge")


def test_nothing_is_left(watched):
    k = watched
    host_id = k.eval("_hc.get_host().host_id")
    k.run("%host shutdown")
    if host_id:
        wait_until(lambda: not marked(host_id), what="the kernel's providers to end")
