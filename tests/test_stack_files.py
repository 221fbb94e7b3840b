"""Stack files: process-compose.yaml and Procfile brought up for real, the order in which
a directory's stack file is found, and every kind of bad file -- refused with one line
naming the file (and the provider and key where there is one), through the API, the
magic and the command line, with nothing started and nothing running disturbed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request

import pytest
from IPython.core.error import UsageError

import hostconsole
from hostconsole.errors import HostconsoleError

from helpers import alive, free_port, marked, wait_until
from test_stacks import SCRIPT, Up, stamps, write_stack


def get(url):
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.read().decode()


def answers(url):
    try:
        return get(url)
    except OSError:
        return None


# --- process-compose.yaml -----------------------------------------------------------------


def process_compose(d, port):
    return f"""\
version: "0.5"
log_level: debug
processes:
  setup:
    command: "date +%s.%N >> {d}/setup.start; echo setup ran >> {d}/setup.runs; sleep 0.3"
  web:
    command: "date +%s.%N >> {d}/web.start; exec python3 -m http.server {port} --bind 127.0.0.1"
    working_dir: ./www
    readiness_probe:
      http_get:
        host: 127.0.0.1
        port: {port}
        path: /index.html
        scheme: http
      initial_delay_seconds: 0
      period_seconds: 1
    depends_on:
      setup:
        condition: process_completed_successfully
    availability:
      restart: on_failure
      max_restarts: 3
    shutdown:
      signal: 2
      timeout_seconds: 3
  worker:
    command: >-
      trap 'echo got USR1 >> {d}/worker.signals; exit 0' USR1;
      date +%s.%N >> {d}/worker.start; echo "greeting=$GREETING cwd=$PWD";
      sleep 0.3; touch {d}/worker.ready; sleep 300 & wait
    environment:
      - "GREETING=hello world"
    readiness_probe:
      exec:
        command: "test -f {d}/worker.ready"
    depends_on:
      web:
        condition: process_healthy
    shutdown:
      signal: 10
  tail:
    command: "echo tail says $WHO; exec sleep 300"
    environment:
      WHO: tail
    log_location: {d}/tail.log
    depends_on:
      worker:
        condition: process_started
"""


def test_process_compose_file_is_brought_up_with_every_key_that_maps_and_one_warning_naming_the_rest(
        host, tmp_path):
    port = free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("served from www\n")
    (tmp_path / "process-compose.yaml").write_text(process_compose(tmp_path, port))

    report = host.up(tmp_path)  # a directory: its stack file

    assert {r["name"]: (r["action"], r["state"]) for r in report.records} == {
        "setup": ("started", "exited"), "web": ("started", "running"), "worker": ("started", "running"),
        "tail": ("started", "running")}
    assert len(report.notes) == 1 and "\n" not in report.notes[0]
    note = report.notes[0]
    assert str(tmp_path / "process-compose.yaml") in note
    for key in ("log_level", "processes.web.readiness_probe.initial_delay_seconds",
                "processes.web.readiness_probe.period_seconds", "processes.web.availability.max_restarts",
                "processes.tail.log_location"):
        assert key in note, note
    assert "! " + note in repr(report)
    # depends_on: completed successfully (a oneshot, run once), healthy (after its probe)
    assert (tmp_path / "setup.runs").read_text() == "setup ran\n"
    assert stamps(tmp_path, "web")[0] >= stamps(tmp_path, "setup")[0] + 0.3
    assert stamps(tmp_path, "worker")[0] >= stamps(tmp_path, "web")[0]
    # working_dir (relative to the file), readiness_probe.http_get: it answered before up returned
    assert get(f"http://127.0.0.1:{port}/index.html") == "served from www\n"
    # environment (a list and a mapping), readiness_probe.exec
    assert (tmp_path / "worker.ready").exists()
    assert f"greeting=hello world cwd={tmp_path}" in host.logs("worker")
    # (tail has no readiness check: it counts as ready once spawned, so its line may come later)
    wait_until(lambda: "tail says tail" in host.logs("tail"), what="tail's line, with its environment")
    # availability.restart: on_failure
    web = host.provider("web")
    old = web.pid
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: host.provider("web").state == "running" and host.provider("web").pid != old
               and answers(f"http://127.0.0.1:{port}/index.html"), timeout=15, what="web restarted on failure")
    assert host.provider("web").restarts == 1
    # shutdown.signal / timeout_seconds
    assert host.provider("web").spec.stop_signal == signal.SIGINT and host.provider("web").spec.stop_timeout == 3
    host.down(tmp_path)
    assert (tmp_path / "worker.signals").read_text() == "got USR1\n"
    assert "Keyboard interrupt received" in host.logs("web"), "web was stopped with SIGINT"
    assert {r["state"] for r in host.ps(all=True).records} <= {"stopped", "exited"}


def test_cli_up_of_a_process_compose_yml_says_what_it_does_not_honour_in_one_stderr_line(tmp_path):
    (tmp_path / "process-compose.yml").write_text(
        "processes:\n"
        "  one:\n"
        "    command: 'echo one; exec sleep 300'\n"
        "    namespace: mine\n"
        "    readiness_probe:\n"
        "      exec:\n"
        "        command: 'true'\n"
        "      failure_threshold: 3\n")
    up = Up(tmp_path, state_dir=tmp_path / "state")
    try:
        up.wait_ready()
        warned = [line for line in up.stderr().splitlines() if "not honoured" in line]
        assert len(warned) == 1, up.stderr()
        assert "process-compose.yml" in warned[0] and "processes.one.namespace" in warned[0]
        assert "processes.one.readiness_probe.failure_threshold" in warned[0]
        up.proc.send_signal(signal.SIGINT)
        assert up.wait() == 0
    finally:
        up.close()


# --- Procfile -----------------------------------------------------------------------------


def test_procfile_is_brought_up_for_real_each_line_a_provider_run_by_a_shell(host, tmp_path):
    port = free_port()
    (tmp_path / "index.html").write_text("procfile web\n")
    (tmp_path / "Procfile").write_text(
        "# the web server and a worker\n"
        "\n"
        f"web: exec python3 -m http.server {port} --bind 127.0.0.1\n"
        "worker: echo worker $((40 + 2)) in $PWD; exec sleep 300\n")

    report = host.up(tmp_path / "Procfile")

    assert {r["name"]: (r["action"], r["state"]) for r in report.records} == {
        "web": ("started", "running"), "worker": ("started", "running")}
    assert report.notes == []
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/"), what="the Procfile's web server")
    assert get(f"http://127.0.0.1:{port}/index.html") == "procfile web\n", "run in the Procfile's directory"
    wait_until(lambda: f"worker 42 in {tmp_path}" in host.logs("worker"), what="the worker's line")
    pids = [host.provider(n).pid for n in ("web", "worker")]
    assert {r["name"] for r in host.down(tmp_path / "Procfile").records} == {"web", "worker"}
    assert not any(alive(p) for p in pids)


def test_a_directory_s_stack_file_is_hostconsole_toml_then_process_compose_yaml_then_yml_then_procfile(
        host, tmp_path):
    files = [
        ("hostconsole.toml", '[providers.from-toml]\ncommand = "sleep 300"\n', "from-toml"),
        ("process-compose.yaml", "processes:\n  from-yaml:\n    command: sleep 300\n", "from-yaml"),
        ("process-compose.yml", "processes:\n  from-yml:\n    command: sleep 300\n", "from-yml"),
        ("Procfile", "from-procfile: sleep 300\n", "from-procfile"),
    ]
    for name, text, _ in files:
        (tmp_path / name).write_text(text)
    for name, _, provider in files:
        report = host.up(tmp_path)
        assert [r["name"] for r in report.records] == [provider]
        assert host.provider(provider).state == "running"
        (tmp_path / name).unlink()
    assert {r["name"] for r in host.ps().records} == {p for _, _, p in files}


# --- bad files: one line, nothing started, nothing disturbed ------------------------------

# A good provider before the bad one: it must never start.
OK = '[providers.ok]\ncommand = "sleep 300"\n\n'
A = '[providers.a]\ncommand = "sleep 1"\n'

# (id, file name, content, words the message holds besides the file's path, names to bring up)
BAD_FILES = [
    ("toml-syntax", "hostconsole.toml", OK + '[providers.a\ncommand = "sleep 1"\n', ["bad TOML", "line 4"]),
    ("yaml-syntax", "process-compose.yaml", "processes:\n  ok:\n    command: sleep 300\n  a:\n    command: [oops\n",
     ["bad YAML"]),
    ("unknown-key", "hostconsole.toml", OK + A + 'readyy = "none"\n', ["provider 'a'", "unknown key 'readyy'"]),
    ("unknown-top-level-key", "hostconsole.toml", "version = 1\n" + OK, ["unknown key 'version'"]),
    ("stop_timeout-soon", "hostconsole.toml", OK + A + 'stop_timeout = "soon"\n',
     ["provider 'a'", "key 'stop_timeout'", "'soon'"]),
    ("requires-5", "hostconsole.toml", OK + A + "requires = 5\n", ["provider 'a'", "key 'requires'", "5"]),
    ("oneshot-yes", "hostconsole.toml", OK + A + 'oneshot = "yes"\n', ["provider 'a'", "key 'oneshot'", "'yes'"]),
    ("shell-no", "hostconsole.toml", OK + A + 'shell = "no"\n', ["provider 'a'", "shell", "'no'"]),
    ("env-number", "hostconsole.toml", OK + A + "env = { A = 1 }\n", ["provider 'a'", "key 'env'"]),
    ("command-number", "hostconsole.toml", OK + '[providers.a]\ncommand = 5\n', ["provider 'a'", "key 'command'"]),
    ("cycle", "hostconsole.toml",
     OK + A + 'requires = ["b"]\n[providers.b]\ncommand = "sleep 1"\nrequires = ["a"]\n',
     ["key 'requires'", "cycle", "a -> b -> a"]),
    ("yaml-cycle", "process-compose.yaml",
     "processes:\n  a:\n    command: sleep 1\n    depends_on:\n      b: {}\n"
     "  b:\n    command: sleep 1\n    depends_on:\n      a: {}\n", ["cycle", "a -> b -> a"]),
    ("missing-dependency", "hostconsole.toml", OK + A + 'requires = ["ok", "nosuch"]\n',
     ["provider 'a'", "key 'requires'", "'nosuch'"]),
    ("yaml-missing-dependency", "process-compose.yaml",
     "processes:\n  ok:\n    command: sleep 300\n  a:\n    command: sleep 1\n    depends_on:\n"
     "      nosuch:\n        condition: process_healthy\n", ["'a'", "'nosuch'"]),
    ("bad-ready", "hostconsole.toml", OK + A + 'ready = "bogus:1"\n', ["provider 'a'", "key 'ready'", "bogus:1"]),
    ("bad-ready-port", "hostconsole.toml", OK + A + 'ready = "port:http"\n', ["provider 'a'", "key 'ready'"]),
    ("missing-env-file", "hostconsole.toml", OK + A + 'env_file = "nope.env"\n',
     ["provider 'a'", "key 'env_file'", "nope.env"]),
    ("missing-cwd", "hostconsole.toml", OK + A + 'cwd = "nodir"\n', ["provider 'a'", "key 'cwd'", "nodir"]),
    ("bad-restart", "hostconsole.toml", OK + A + 'restart = "sometimes"\n', ["provider 'a'", "key 'restart'"]),
    ("bad-stop-signal", "hostconsole.toml", OK + A + 'stop_signal = "BOGUS"\n',
     ["provider 'a'", "key 'stop_signal'"]),
    ("missing-command", "hostconsole.toml", OK + '[providers.a]\nready = "none"\n', ["provider 'a'", "'command'"]),
    ("missing-executable", "hostconsole.toml", OK + '[providers.a]\ncommand = "/nonexistent/prog --flag"\n',
     ["provider 'a'", "key 'command'", "/nonexistent/prog"]),
    ("bad-name", "hostconsole.toml", OK + '[providers."bad name"]\ncommand = "sleep 1"\n',
     ["invalid provider name 'bad name'"]),
    ("name-too-long", "hostconsole.toml", OK + f'[providers.{"x" * 65}]\ncommand = "sleep 1"\n',
     ["invalid provider name"]),
    ("procfile-bad-name", "Procfile", "ok: sleep 300\nbad name: sleep 1\n", ["line 2", "'bad name'"]),
    ("procfile-no-colon", "Procfile", "ok: sleep 300\njust words\n", ["line 2", "name: command"]),
    ("procfile-twice", "Procfile", "ok: sleep 300\nok: sleep 1\n", ["line 2", "'ok'", "twice"]),
    ("not-utf8", "hostconsole.toml", OK.encode() + b'[providers.a]\ncommand = "sleep \xff"\n', ["UTF-8"]),
    ("no-providers", "hostconsole.toml", "# nothing here\n", ["no providers"]),
    # the running provider, edited, and a bad one after it: keeper is not restarted
    ("edits-the-running-provider-and-is-bad", "hostconsole.toml",
     '[providers.keeper]\ncommand = "sleep 299"\n\n' + A + 'requires = ["nosuch"]\n', ["provider 'a'", "'nosuch'"]),
]

# Cases that are not a file's content: prepare(d) -> (FILE argument or None, names, path in the message)
def _dir_as_file(d):
    (d / "hostconsole.toml").mkdir()
    return d / "hostconsole.toml", [], d / "hostconsole.toml"


def _no_stack_file(d):
    (d / "README").write_text("not a stack\n")
    return None, [], d


def _missing_file(d):
    return d / "nosuch.toml", [], d / "nosuch.toml"


def _unknown_name(d):
    (d / "hostconsole.toml").write_text(OK)
    return d / "hostconsole.toml", ["nosuch"], d / "hostconsole.toml"


BAD_OTHER = [
    ("directory-where-the-file-should-be", _dir_as_file, ["no stack file"]),
    ("no-stack-file-here", _no_stack_file, ["no stack file", "hostconsole.toml", "Procfile"]),
    ("missing-file", _missing_file, ["does not exist"]),
    ("name-not-in-the-stack", _unknown_name, ["no provider 'nosuch' in this stack"]),
]

CASES = [(c[0], c) for c in BAD_FILES] + [(c[0], c) for c in BAD_OTHER]


def prepare(case, d):
    d.mkdir(parents=True, exist_ok=True)
    if len(case) == 4:
        _, fname, content, words = case
        path = d / fname
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path, [], path, words
    _, make, words = case
    arg, names, where = make(d)
    return arg, names, where, words


@pytest.fixture(scope="class")
def busy(shell, tmp_path_factory):  # noqa: F811
    """The process-wide host (what the magics use) with a provider running, shared by
    TestBadStackFiles: no bad file may disturb it."""
    state = tmp_path_factory.mktemp("bad-stack-state")
    shell.run_line_magic("load_ext", "hostconsole")
    try:
        shell.run_line_magic("host", f"start --state-dir {state}")
        shell.run_line_magic("host", "run keeper -- sleep 300")
        yield shell
    finally:
        host_id = hostconsole.get_host().host_id
        shell.run_line_magic("unload_ext", "hostconsole")
        wait_until(lambda: not marked(host_id), timeout=15, what="the bad-stack host to end")


def snapshot():
    return {r["name"]: (r["state"], r["pid"]) for r in hostconsole.get_host().ps(all=True).records}


def check_message(message, where, words):
    assert "\n" not in message.strip(), f"one line: {message!r}"
    assert str(where) in message, f"names the file: {message!r}"
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[i for i, _ in CASES])
class TestBadStackFiles:
    """Each bad file: one line naming it, nothing started, nothing running disturbed."""

    def test_the_api_raises_one_line(self, busy, case, tmp_path, monkeypatch):
        arg, names, where, words = prepare(case, tmp_path / "stack")
        monkeypatch.chdir(tmp_path / "stack")
        before = snapshot()
        host = hostconsole.get_host()
        with pytest.raises(HostconsoleError) as e:
            host.up(arg, names)
        check_message(str(e.value), where, words)
        assert snapshot() == before and before["keeper"][0] == "running"
        if arg is not None:
            with pytest.raises(HostconsoleError):
                host.down(arg, names)
            assert snapshot() == before

    def test_the_magic_refuses_it_in_one_line_without_a_traceback(self, busy, case, tmp_path, monkeypatch, capsys):
        arg, names, where, words = prepare(case, tmp_path / "stack")
        monkeypatch.chdir(tmp_path / "stack")
        before = snapshot()
        capsys.readouterr()
        result = busy.run_cell(" ".join(["%host up", *([str(arg)] if arg else []), *names]))
        err = capsys.readouterr().err
        assert type(result.error_in_exec) is UsageError, (result.error_in_exec, err)
        message = str(result.error_in_exec)
        check_message(message, where, words)
        assert err == f"UsageError: {message}\n", "one line, no traceback"
        assert snapshot() == before

    def test_the_cli_exits_non_zero_with_one_line_on_stderr(self, busy, case, tmp_path):
        arg, names, where, words = prepare(case, tmp_path / "stack")
        state = tmp_path / "cli-state"
        before = snapshot()
        env = dict(os.environ, HOSTCONSOLE_STATE_DIR=str(state))
        r = subprocess.run([SCRIPT, "up", *([str(arg)] if arg else []), *names], cwd=tmp_path / "stack", env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert r.stderr.count("\n") == 1, r.stderr
        check_message(r.stderr, where, words)
        assert r.stdout == ""
        assert not list(state.rglob("*.log")) if state.exists() else True, "nothing was started"
        assert snapshot() == before


# --- known bugs ---------------------------------------------------------------------------


def _call_past_a_fifo(fn, fifo, patience):
    """``fn()`` in a thread; if it is still blocked after ``patience`` seconds (opening
    ``fifo`` for reading waits for a writer), open the FIFO's other end so that it carries
    on.  Returns (seconds fn took, the exception it raised)."""
    out = {}

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 (reported to the test)
            out["error"] = e

    t0 = time.monotonic()
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(patience)
    deadline = time.monotonic() + 10
    while t.is_alive() and time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer that writes nothing: EOF
        except OSError:
            pass  # (no reader yet)
        t.join(0.05)
    assert not t.is_alive(), "still blocked"
    return time.monotonic() - t0, out.get("error")




@pytest.mark.parametrize("what", ["stack-file", "env-file"])
def test_a_fifo_is_refused_at_once_through_the_api(host, tmp_path, what):
    if what == "stack-file":
        fifo = tmp_path / "hostconsole.toml"
        os.mkfifo(fifo)
        where = fifo
    else:
        fifo = tmp_path / "env.fifo"
        os.mkfifo(fifo)
        where = write_stack(tmp_path, {"a": {"command": "sleep 1", "env_file": "env.fifo"}})
    took, error = _call_past_a_fifo(lambda: host.up(where), fifo, patience=2.0)
    assert took < 2.0, f"blocked for {took:.1f}s on the FIFO"
    assert isinstance(error, HostconsoleError) and "\n" not in str(error) and str(where) in str(error)
    assert "a" not in host


def test_a_fifo_is_refused_at_once_by_the_cli(tmp_path):
    os.mkfifo(tmp_path / "stack.toml")
    env = dict(os.environ, HOSTCONSOLE_STATE_DIR=str(tmp_path / "state"))
    r = subprocess.run([SCRIPT, "up", "stack.toml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=3)  # (a hang raises TimeoutExpired, and subprocess.run kills it)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "stack.toml" in r.stderr


@pytest.mark.parametrize("body, key", [
    ("    shutdown:\n      timeout_seconds: soon\n", "timeout_seconds"),
    ("    shutdown:\n      signal: 99\n", "shutdown.signal"),
    ("    depends_on:\n      nosuch: {}\n", "depends_on"),
], ids=["timeout_seconds", "signal", "depends_on"])
def test_a_process_compose_error_names_the_key_as_written_in_the_file(host, tmp_path, body, key):
    f = tmp_path / "process-compose.yaml"
    f.write_text("processes:\n  a:\n    command: sleep 1\n" + body)
    with pytest.raises(HostconsoleError) as e:
        host.up(f)
    assert key in str(e.value), str(e.value)


def test_a_wrong_type_message_names_the_expected_type_once(host, tmp_path):
    f = write_stack(tmp_path, {"a": {"command": "sleep 1", "stop_timeout": "soon"}})
    with pytest.raises(HostconsoleError) as e:
        host.up(f)
    assert "must be a number, not 'soon'" in str(e.value), str(e.value)
