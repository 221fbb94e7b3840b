"""The live view in a real browser: a real JupyterLab server and headless Chromium.

``%host ps --watch`` must keep its output up to date in the page from the view's thread
(the HTML view), and the widget view's buttons must act on the host.  The server runs with
everything of its own in a temp dir (config, data, runtime, IPython dir, the hostconsole
state dir the suite's leak guard judges), on 127.0.0.1 with a token; the kernels it starts
import this repository's hostconsole.  Chromium and chromedriver come from
tests/install-system-packages: without them these tests skip with one loud line (under
CI=true they fail).

Every wait polls with a bound.  Every process started here is stopped by pid at the end:
the kernels through the server's REST API, then the server (terminate, kill after a bound),
the browser and its driver (quit, then any survivor of theirs killed by pid).

Screenshots go to ``test-artifacts/screenshots/`` (see the README); ``live-view.png`` there
(the live table with a running provider and its port link, 1000x500) replaces
``docs/live-view.png`` when HOSTCONSOLE_UPDATE_DOCS_SHOT=1 (otherwise a test run leaves
committed files alone).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from helpers import free_port, marked, require_binary, wait_until

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "test-artifacts" / "screenshots"
DOCS_SHOT = REPO / "docs" / "live-view.png"
TOKEN = "hostconsole-browser-" + uuid.uuid4().hex
DOM_TIMEOUT = 20.0  # what the page shows must show within this


def _binary(default, *names):
    def find():
        if os.access(default, os.X_OK):
            return default
        return next(filter(None, map(shutil.which, names)), None)
    return find


@pytest.fixture(scope="module")
def chromium():
    return require_binary("chromium", _binary("/usr/bin/chromium", "chromium", "chromium-browser"), package="chromium")


@pytest.fixture(scope="module")
def chromedriver():
    return require_binary("chromedriver", _binary("/usr/bin/chromedriver", "chromedriver"), package="chromium-driver")


# --- processes: stopped by pid, survivors killed by pid ----------------------------------


def _descendants(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _end(procs, what, timeout=10.0):
    """Wait (bounded) for ``procs`` (psutil handles: identity-checked) to be gone; kill
    by pid any that is not, and say so."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            print(f"[browser tests] {what}: pid {p.pid} ({p.name()}) still alive after {timeout}s: killed")
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return alive


# --- the JupyterLab server ---------------------------------------------------------------


class Lab:
    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.root = self.tmp / "root"
        self.state_dir = self.tmp / "state"
        self.log_path = self.tmp / "jupyter-lab.log"
        self.proc = None
        self.port = None
        self.kernels = {}  # kernel id -> its process (psutil: pid and start time), as each started

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def env(self):
        env = dict(os.environ)
        for var in ("JUPYTERHUB_SERVICE_PREFIX", "JUPYTERHUB_API_TOKEN", "JUPYTER_PATH", "JUPYTER_TOKEN",
                    "JUPYTER_PREFER_ENV_PATH", "JUPYTER_CONFIG_PATH"):
            env.pop(var, None)
        dirs = {"JUPYTER_CONFIG_DIR": "config", "JUPYTER_DATA_DIR": "data", "JUPYTER_RUNTIME_DIR": "runtime",
                "IPYTHONDIR": "ipython"}
        for var, sub in dirs.items():
            (self.tmp / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(self.tmp / sub)
        env["HOSTCONSOLE_STATE_DIR"] = str(self.state_dir)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env["JUPYTER_PLATFORM_DIRS"] = "1"
        return env

    def command(self):
        script = Path(sys.executable).parent / "jupyter-lab"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "jupyterlab"]
        cmd += [
            "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
            f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={self.root}",
            # (the machine's network is closed: nothing to fetch, nothing to wait for)
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        return cmd

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        # No "get notified about Jupyter news?" toast over the page.
        settings = self.tmp / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        for attempt in range(3):  # (a free port may be taken between the check and the bind)
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(self.command(), cwd=self.root, env=self.env(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
            log.close()
            try:
                wait_until(lambda: self.proc.poll() is not None or self._answers(), timeout=60, interval=0.1,
                           what="jupyter lab to answer on its HTTP API")
            except AssertionError:
                self.stop()
                raise AssertionError("jupyter lab did not answer within 60s:\n" + self.log_tail())
            if self.proc.poll() is None:
                return self
        raise AssertionError("jupyter lab would not start:\n" + self.log_tail())

    def _answers(self):
        try:
            return self.api("GET", "/api/status") is not None
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def api(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw else {}

    def start_session(self, path):
        """A session (and its kernel) for the notebook at ``path``, through the API; its
        kernel's process is recorded (to be sure it ends, even if the server does not)."""
        session = self.api("POST", "/api/sessions", {"path": path, "name": path, "type": "notebook",
                                                     "kernel": {"name": "python3"}})
        kid = session["kernel"]["id"]

        def found():
            for p in _descendants(self.proc.pid):
                if any(part.endswith(f"kernel-{kid}.json") for part in _cmdline(p)):
                    return p
            return None

        self.kernels[kid] = wait_until(found, timeout=30, interval=0.1, what=f"the process of kernel {kid}")
        return kid

    def shutdown_kernels(self, path=None):
        """Shut down through the API the sessions of ``path`` (every session and kernel
        when None); wait (bounded) for their kernels' processes to end, kill any left."""
        ids = []
        for s in self.api("GET", "/api/sessions"):
            if path is None or s.get("path") == path:
                ids.append(s["kernel"]["id"])
                self.api("DELETE", f"/api/sessions/{s['id']}")
        if path is None:
            for k in self.api("GET", "/api/kernels"):
                ids.append(k["id"])
                self.api("DELETE", f"/api/kernels/{k['id']}")
        _end([self.kernels[i] for i in ids if i in self.kernels], "kernel", timeout=20)

    def stop(self):
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                try:
                    self.shutdown_kernels()
                except (OSError, urllib.error.URLError, ValueError) as e:
                    print(f"[browser tests] could not shut the kernels down through the API: {e}")
            children = _descendants(self.proc.pid) + list(self.kernels.values())
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"[browser tests] jupyter lab (pid {self.proc.pid}) ignored SIGTERM for 15s: killed")
                self.proc.kill()
                self.proc.wait(timeout=10)
            _end(children, "a process of jupyter lab or a kernel", timeout=15)
        finally:
            self.proc = None


def _cmdline(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.fixture(scope="module")
def lab(chromium, chromedriver, tmp_path_factory):
    # (after the loud skip for a missing browser: no server for tests that cannot run)
    pytest.importorskip("selenium", reason="selenium is in the test extras: pip install -e '.[test]'")
    t0 = time.monotonic()
    server = Lab(tmp_path_factory.mktemp("jupyterlab")).start()
    print(f"\n[browser tests] jupyter lab (pid {server.proc.pid}) answered after {time.monotonic() - t0:.1f}s")
    try:
        yield server
    finally:
        server.stop()
    # (the suite's leak guard judges the hosts' own processes: their state dir is under
    # the session's temp dir)
    wait_until(lambda: not _ours(server.state_dir), timeout=20, what="every process the notebooks started to end")


def _ours(state_dir, provider=None):
    return {i: m for i, m in marked().items()
            if m.get("HOSTCONSOLE_STATE_DIR", "").startswith(str(state_dir))
            and (provider is None or m.get("HOSTCONSOLE_PROVIDER") == provider)}


# --- the browser ---------------------------------------------------------------------------


@pytest.fixture
def browser(chromium, chromedriver, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1200,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver_pid = service.process.pid
    try:
        yield driver
    finally:
        family = [psutil.Process(driver_pid)] if psutil.pid_exists(driver_pid) else []
        family += _descendants(driver_pid)  # chromium and its helpers
        try:
            for entry in driver.get_log("browser"):
                if entry.get("level") in ("SEVERE", "WARNING") and "favicon.ico" not in entry.get("message", ""):
                    print(f"[browser console] {entry.get('level')} {entry.get('message')}")
        except Exception as e:  # (the log is for the reader; quitting is what matters)
            print(f"[browser tests] no browser log: {e}")
        try:
            driver.quit()
        finally:
            _end(family, "chromium/chromedriver", timeout=10)


# --- driving JupyterLab ---------------------------------------------------------------------


def notebook(cells):
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
                     "language_info": {"name": "python"}},
        "cells": [{"cell_type": "code", "id": f"cell-{i}", "metadata": {}, "outputs": [], "execution_count": None,
                   "source": source} for i, source in enumerate(cells)],
    }


class Page:
    """A notebook open in JupyterLab, its cells run from the keyboard."""

    def __init__(self, driver, lab, name, cells):
        from selenium.webdriver.common.by import By

        self.By = By
        self.driver = driver
        self.lab = lab
        self.name = name
        self.path = f"{name}.ipynb"
        lab.api("PUT", f"/api/contents/{self.path}", {"type": "notebook", "format": "json", "content": notebook(cells)})
        # The notebook's session and kernel first, through the API: the page finds them
        # there (no "Select Kernel" dialog, no keystroke sent before a kernel is there).
        self.kernel_id = lab.start_session(self.path)
        # A workspace of its own: nothing restored from another test's page.
        driver.get(f"{lab.base}/lab/workspaces/{name}/tree/{self.path}?token={TOKEN}")
        self.count = len(cells)
        wait_until(lambda: len(self._cells()) == self.count, timeout=60, interval=0.2,
                   what=f"JupyterLab to show the {self.count} cells of {self.path}")
        wait_until(lambda: self.kernel_status() == "idle", timeout=60, interval=0.2,
                   what="the page to show the notebook's kernel idle")

    def settle_kernel_dialog(self):
        """JupyterLab sometimes asks "Select Kernel" although the notebook's session is
        there (its session list can come in late): answer with that session's kernel."""
        from selenium.webdriver.support.ui import Select

        for dialog in self.driver.find_elements(self.By.CSS_SELECTOR, ".jp-Dialog"):
            if "Select Kernel" not in (dialog.text or ""):
                continue
            choice = Select(dialog.find_element(self.By.CSS_SELECTOR, "select"))
            ours = [o.text for o in choice.options if self.kernel_id[:8] in o.text]
            if not ours:
                raise AssertionError(f"JupyterLab asks for a kernel and does not offer this notebook's "
                                     f"({self.kernel_id}): {[o.text for o in choice.options]}")
            choice.select_by_visible_text(ours[0])
            dialog.find_element(self.By.CSS_SELECTOR, ".jp-mod-accept").click()
            print(f"[browser tests] answered JupyterLab's 'Select Kernel' dialog with {ours[0]!r}")
            wait_until(lambda: not self.driver.find_elements(self.By.CSS_SELECTOR, ".jp-Dialog"), timeout=10,
                       interval=0.1, what="the kernel dialog to close")

    def _cells(self):
        return self.driver.find_elements(self.By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")

    def kernel_status(self):
        return self.driver.execute_script(
            "const s = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');"
            "return s ? s.getAttribute('data-status') : null;")

    def prompt(self, i):
        """The cell's execution prompt: '' (never ran), '*' (running) or its count."""
        return self.driver.execute_script(
            "const c = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')[arguments[0]];"
            "const p = c && c.querySelector('.jp-InputPrompt');"
            "return p ? p.textContent.trim().replace(/^\\[/, '').replace(/\\]:$/, '').trim() : null;", i)

    def run_cell(self, i, timeout=60):
        """Select cell ``i`` (command mode), Ctrl+Enter (run it, stay there: no cell is added
        after the last), wait for its execution count."""
        from selenium.common.exceptions import ElementClickInterceptedException
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        for attempt in range(3):
            self.settle_kernel_dialog()
            cell = self._cells()[i]
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", cell)
            try:
                cell.find_element(self.By.CSS_SELECTOR, ".jp-InputPrompt").click()
            except ElementClickInterceptedException as e:  # (a dialog came up meanwhile: see above)
                print(f"[browser tests] the click on cell {i} was intercepted (attempt {attempt}): {e.msg}")
                continue
            wait_until(lambda: "jp-mod-active" in (self._cells()[i].get_attribute("class") or ""), timeout=10,
                       what=f"cell {i} to be the active cell")
            ActionChains(self.driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
            try:
                # '*' (queued or running) or a count: the keystroke reached the notebook
                wait_until(lambda: self.prompt(i), timeout=5, interval=0.05, what=f"cell {i} to start")
                break
            except AssertionError:
                info = self.driver.execute_script(
                    "const a = document.activeElement;"
                    "return {active: a ? a.tagName + '.' + a.className : null,"
                    " mode: document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook').className,"
                    " dialogs: [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText)};")
                shot = self.shot(f"debug-{self.name}-cell{i}-attempt{attempt}")
                print(f"[browser tests] Ctrl+Enter on cell {i} did not start it (attempt {attempt}): {info}; {shot}")
        last = {}

        def finished():
            last["p"] = self.prompt(i)
            return (last["p"] or "").isdigit() and last["p"]

        try:
            count = wait_until(finished, timeout=timeout, interval=0.1, what=f"cell {i} of {self.path} to finish")
        except AssertionError as e:
            raise AssertionError(f"{e} (its prompt: {last.get('p')!r}; its output: {self.output_text(i)!r})") from None
        return int(count)

    def output_text(self, i):
        return self.driver.execute_script(
            "const c = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')[arguments[0]];"
            "const o = c && c.querySelector('.jp-OutputArea');"
            "return o ? o.innerText : '';", i)

    def table(self, i):
        """The ps table in cell ``i``'s output, read in one go (it is replaced every second):
        {'rows': {NAME: {HEADING: text}}, 'links': {NAME: [href]}, 'stamp': 'updated ...'}."""
        return self.driver.execute_script("""
            const c = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')[arguments[0]];
            const out = c && c.querySelector('.jp-OutputArea');
            if (!out) return null;
            const t = out.querySelector('table');
            const res = {rows: {}, links: {}, stamp: null, text: out.innerText};
            for (const p of out.querySelectorAll('p')) if (p.textContent.startsWith('updated')) res.stamp = p.textContent;
            if (!t) return res;
            const heads = [...t.querySelectorAll('thead th')].map(th => th.textContent.trim());
            for (const tr of t.querySelectorAll('tbody tr')) {
                const tds = [...tr.querySelectorAll('td')];
                const row = {};
                tds.forEach((td, k) => row[heads[k]] = td.textContent.replace('\u25cf', '').trim());
                res.rows[row.NAME] = row;
                res.links[row.NAME] = [...tr.querySelectorAll('a')].map(a => a.getAttribute('href'));
            }
            return res;""", i)

    def wait_table(self, i, predicate, what):
        last = {}

        def check():
            last["t"] = self.table(i)
            return last["t"] is not None and predicate(last["t"])

        try:
            wait_until(check, timeout=DOM_TIMEOUT, interval=0.2, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}; the cell's output shows: {last.get('t')!r}") from None
        return last["t"]

    def shot(self, name, size=None):
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        if size is not None:
            self.driver.set_window_size(*size)
        self.driver.save_screenshot(str(path))
        return path

    def follow_link(self, i, href):
        """Click the link to ``href`` in cell ``i``'s output (it opens a tab) and return the
        title of the page it leads to; the tab is closed again."""
        from selenium.common.exceptions import WebDriverException

        before = set(self.driver.window_handles)
        home = self.driver.current_window_handle

        def click():
            try:  # (the output is drawn again every second: a link found may be replaced)
                cell = self._cells()[i]
                link = cell.find_element(self.By.CSS_SELECTOR, f".jp-OutputArea a[href='{href}']")
                link.click()
                return True
            except WebDriverException:
                return False

        wait_until(click, timeout=DOM_TIMEOUT, interval=0.2, what=f"a click on the link to {href}")
        tab = wait_until(lambda: set(self.driver.window_handles) - before, timeout=DOM_TIMEOUT,
                         what=f"the link to {href} to open a tab").pop()
        self.driver.switch_to.window(tab)
        try:
            return wait_until(lambda: self.driver.current_url.startswith(href) and self.driver.title,
                              timeout=DOM_TIMEOUT, interval=0.2, what=f"{href} to load")
        finally:
            self.driver.close()
            self.driver.switch_to.window(home)

    def _left_sidebar_open(self):
        return self.driver.execute_script(
            "const s = document.querySelector('#jp-left-stack');"
            "return !!s && !s.classList.contains('lm-mod-hidden') && s.offsetWidth > 0;")

    def _toggle_left_sidebar(self):
        # (clicking the current tab of the left side bar folds it, or opens it again)
        tab = self.driver.find_element(self.By.CSS_SELECTOR, ".jp-SideBar.jp-mod-left .lm-TabBar-tab")
        was = self._left_sidebar_open()
        tab.click()
        wait_until(lambda: self._left_sidebar_open() != was, timeout=10, what="the left side bar to fold/unfold")

    def set_viewport(self, width, height):
        """Size the window so that the page itself (what a screenshot holds) is width x height."""
        self.driver.set_window_size(width, height)
        extra = self.driver.execute_script("return [window.outerWidth - window.innerWidth, "
                                           "window.outerHeight - window.innerHeight];")
        if any(extra):
            self.driver.set_window_size(width + extra[0], height + extra[1])
        wait_until(lambda: self.driver.execute_script("return [window.innerWidth, window.innerHeight];")
                   == [width, height], timeout=10, what=f"a {width}x{height} page")

    def docs_shot(self, i, name):
        """A small picture of cell ``i`` and its output (the side bar folded, a 1000x500
        window); with HOSTCONSOLE_UPDATE_DOCS_SHOT=1 it also becomes ``docs/live-view.png``
        (the suite leaves committed files alone otherwise)."""
        size = self.driver.get_window_size()
        if self._left_sidebar_open():
            self._toggle_left_sidebar()
        self.set_viewport(1000, 500)
        try:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", self._cells()[i])
            stamp = self.table(i)["stamp"]
            self.wait_table(i, lambda t: t["stamp"] != stamp, "the table to be drawn again at the new size")
            path = self.shot(name)
            if os.environ.get("HOSTCONSOLE_UPDATE_DOCS_SHOT") == "1":
                DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, DOCS_SHOT)
            return path
        finally:
            self.driver.set_window_size(size["width"], size["height"])
            if not self._left_sidebar_open():
                self._toggle_left_sidebar()


def _timed(name):
    t0 = time.monotonic()

    def done():
        print(f"\n[browser tests] {name}: {time.monotonic() - t0:.1f}s wall")
    return done


# --- the tests ---------------------------------------------------------------------------------


def test_the_live_view_follows_providers_in_a_real_browser(lab, browser):
    done = _timed("test_the_live_view_follows_providers_in_a_real_browser")
    port = free_port()
    cells = [
        # ipywidgets made unavailable in this kernel: the view is the HTML table.
        "import sys\nsys.modules['ipywidgets'] = None\n%load_ext hostconsole",
        "%host ps --watch",
        # ({sys.executable}: expanded by IPython, the kernel's own interpreter)
        f"%host run web --ready port:{port} -- {{sys.executable}} -m http.server {port} --bind 127.0.0.1",
        "%host stop web",
    ]
    page = Page(browser, lab, "live-view", cells)
    try:
        page.run_cell(0)
        watch_count = page.run_cell(1)  # returns: the view runs on a thread of its own
        first = page.wait_table(1, lambda t: t["stamp"], "the watch cell to show the table")
        assert "(no providers)" in first["text"], first
        assert not page.driver.find_elements(page.By.CSS_SELECTOR, ".jp-NotebookPanel .jupyter-widgets"), \
            "a widget view, though ipywidgets was made unavailable"

        run_count = page.run_cell(2)
        assert run_count > watch_count
        t = page.wait_table(1, lambda t: t["rows"].get("web", {}).get("STATE") == "running",
                            "the watch cell's table to show web running")
        t = page.wait_table(1, lambda t: t["rows"]["web"].get("PORTS") == str(port),
                            f"the watch cell's table to show web's port {port}")
        assert t["links"]["web"] == [f"http://127.0.0.1:{port}/"], t
        # ... and it leads to the server (http.server's page for its directory)
        title = page.follow_link(1, f"http://127.0.0.1:{port}/")
        assert "Directory listing" in title, title
        # The view keeps updating after the cells that followed it ran.
        stamp = t["stamp"]
        page.wait_table(1, lambda t: t["stamp"] != stamp, "the watch cell's table to update again")
        page.shot("01-live-view-web-running")
        page.docs_shot(1, "live-view")

        page.run_cell(3)
        t = page.wait_table(1, lambda t: t["rows"].get("web", {}).get("STATE") in ("stopped", None),
                            "the watch cell's table to show web stopped (or gone)")
        page.shot("02-live-view-web-stopped")
        assert not _ours(lab.state_dir, "web"), "web's processes outlived %host stop"
    finally:
        lab.shutdown_kernels(page.path)
        wait_until(lambda: not _ours(lab.state_dir, "web"), timeout=20,
                   what="web's processes to end with its kernel")
        done()


def test_a_stop_button_in_the_widget_view_stops_the_provider(lab, browser):
    done = _timed("test_a_stop_button_in_the_widget_view_stops_the_provider")
    cells = [
        "%load_ext hostconsole",
        "%host ps --watch",
        "%host run sleeper -- sleep 600",
    ]
    page = Page(browser, lab, "widget-view", cells)
    try:
        page.run_cell(0)
        page.run_cell(1)
        page.run_cell(2)
        wait_until(lambda: _ours(lab.state_dir, "sleeper"), timeout=DOM_TIMEOUT, what="sleeper to run")
        t = page.wait_table(1, lambda t: t["rows"].get("sleeper", {}).get("STATE") == "running",
                            "the widget's table to show sleeper running")
        pid = int(t["rows"]["sleeper"]["PID"])
        process = psutil.Process(pid)  # (identity: pid and start time, checked by is_running)
        assert any(i.pid == pid for i in _ours(lab.state_dir, "sleeper")), (pid, _ours(lab.state_dir, "sleeper"))
        assert page.driver.find_elements(page.By.CSS_SELECTOR, ".jp-NotebookPanel .jupyter-widgets"), \
            "no widget view, though ipywidgets is installed"
        page.shot("03-widget-view-sleeper-running")
        button = wait_until(lambda: _button(page, "stop sleeper"), timeout=DOM_TIMEOUT, what="the 'stop sleeper' button")
        button.click()
        # (``ps`` without --all leaves out what the user stopped: stopped, or gone)
        t = page.wait_table(1, lambda t: t["rows"].get("sleeper", {}).get("STATE") in ("stopped", None),
                            "the widget's table to show sleeper stopped (or gone)")
        page.wait_table(1, lambda t: "stop sleeper: done" in t["text"], "the widget to say 'stop sleeper: done'")
        wait_until(lambda: not _ours(lab.state_dir, "sleeper") and not process.is_running(), timeout=DOM_TIMEOUT,
                   what="sleeper's process to be gone after the click")
        page.shot("04-widget-view-sleeper-stopped")
    finally:
        lab.shutdown_kernels(page.path)
        wait_until(lambda: not _ours(lab.state_dir, "sleeper"), timeout=20,
                   what="sleeper's processes to end with its kernel")
        done()


def _button(page, text):
    for b in page.driver.find_elements(page.By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) button"):
        try:
            if b.text.strip() == text:
                return b
        except Exception:  # (replaced meanwhile)
            continue
    return None
