"""The systems under comparison, behind one small interface.

    s.open(programs)   untimed: what must exist before starting (a host, a daemon)
    s.start_all()      timed: start every program, return once all report running
    s.pids()           untimed: the main process of every program
    s.stop_all()       timed: stop every program (the caller then waits until all are gone)
    s.kill_supervisor() SIGKILL whatever supervises the programs (crash scenario)
    s.close()          untimed: stop what is left, verify it is gone, remove files

honcho (a Procfile runner: no dependency order, no readiness) takes part in the ``up``
scenario only, through its own interface (``HonchoSystem.up``).

Peers are driven through their own control interfaces on unix sockets (supervisord's
XML-RPC, the transport ``supervisorctl`` uses; circus's ZeroMQ ``ipc://`` endpoint, the
client ``circusctl`` uses), in-process, so that a client interpreter's start-up is not
counted against them.  pm2's client is JavaScript: a long-lived node process (``_pm2.js``)
holds pm2's programmatic API, the one its CLI calls, and takes requests over a pipe.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional

from ._common import (
    CRASH_VAR,
    Ident,
    alive,
    ident,
    kill_all,
    log,
    scan,
    send,
    stat,
    stop_child,
    wait_gone,
    wait_until,
)

DAEMON_START_TIMEOUT = 30.0
RPC_TIMEOUT = 120.0


class Program(NamedTuple):
    name: str
    argv: List[str]
    stop_timeout: float = 5.0
    env: Dict[str, str] = {}


def _bin(name: str) -> List[str]:
    """A console script of this interpreter's environment."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(path):
        return [path]
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(name)
    return [found]


def _abs_argv(argv: List[str]) -> List[str]:
    exe = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
    return [exe] + list(argv[1:])


class System:
    name = "?"
    label = "?"
    only: Optional[tuple] = None  # the scenarios it takes part in, if not all of them

    def __init__(self, tmp: str):
        self.tmp = tmp
        self.programs: List[Program] = []
        self.seen: List[Ident] = []

    @staticmethod
    def available() -> Optional[str]:
        """None if usable here, else why not."""
        return None

    def version(self) -> str:
        return ""

    def open(self, programs: List[Program]) -> None:
        self.programs = list(programs)

    def pids(self) -> List[Ident]:
        raise NotImplementedError

    def cpu_pids(self) -> List[int]:
        """The processes whose CPU a start costs (the benchmark's own, where it runs in it)."""
        return [os.getpid()]

    def remember(self) -> List[Ident]:
        ids = self.pids()
        self.seen.extend(ids)
        return ids

    def _finish(self) -> None:
        """Whatever we saw of this system's programs must be gone."""
        left = kill_all([i for i in self.seen if alive(i)])
        if left:
            raise RuntimeError(f"{self.name}: processes {[i.pid for i in left]} would not die")
        self.seen = []


# --- the baseline ----------------------------------------------------------------------


class PopenSystem(System):
    name = "popen"
    label = "Popen"

    def version(self):
        return f"Python {sys.version.split()[0]}"

    def open(self, programs):
        super().open(programs)
        self.procs: List[subprocess.Popen] = []

    def start_all(self):
        for p in self.programs:
            env = dict(os.environ, **p.env) if p.env else None
            self.procs.append(subprocess.Popen(p.argv, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def pids(self):
        return [i for i in (ident(p.pid) for p in self.procs) if i is not None]

    def stop_all(self):
        """SIGTERM each; wait each until the stop timeout; SIGKILL what is left; wait."""
        timeout = max(p.stop_timeout for p in self.programs)
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        deadline = time.perf_counter() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                pass
        late = [p for p in self.procs if p.returncode is None]
        for p in late:
            p.kill()
        for p in late:
            p.wait(10)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(10)
        self.procs = []
        self._finish()


# --- hostconsole -----------------------------------------------------------------------


def wait_watchdog(host) -> None:
    """Host.start() returns before its watchdog (a fresh interpreter) can answer; the
    first request would pay for its start-up.  Wait for it here, untimed."""
    try:
        host._current_session().request("ping", timeout=30)
    except Exception:  # no such internal request any more: give it time instead
        time.sleep(0.5)


class HostconsoleSystem(System):
    name = "hostconsole"
    label = "hostconsole"

    def version(self):
        import hostconsole

        return f"hostconsole {hostconsole.__version__}"

    fence: Optional[str] = None  # HOSTCONSOLE_FENCE for the host's watchdog (None: what it detects)

    def open(self, programs):
        import hostconsole

        super().open(programs)
        self.state = tempfile.mkdtemp(prefix="hc-", dir=self.tmp)
        saved = os.environ.get("HOSTCONSOLE_FENCE")
        if self.fence is not None:  # the watchdog reads it when it starts, from the environment it inherits
            os.environ["HOSTCONSOLE_FENCE"] = self.fence
        try:
            self.host = hostconsole.Host(self.state).start()
        finally:
            if saved is None:
                os.environ.pop("HOSTCONSOLE_FENCE", None)
            else:
                os.environ["HOSTCONSOLE_FENCE"] = saved
        self.host_id = self.host.host_id
        self.report = None
        wait_watchdog(self.host)
        self.mechanism = self.host.status().get("fence") or "?"

    def start_all(self):
        for p in self.programs:
            self.host.run(p.name, p.argv, stop_timeout=p.stop_timeout, env=p.env or None)

    def cpu_pids(self):
        return [os.getpid(), self.host.status()["watchdog_pid"]]

    def pids(self):
        out = []
        for p in self.programs:
            if p.name in self.host:
                pid = self.host.provider(p.name).pid
                i = ident(pid) if pid else None
                if i is not None:
                    out.append(i)
        return out

    def stop_all(self):
        self.report = self.host.purge()

    def close(self):
        try:
            self.host.shutdown(timeout=10)
        finally:
            gone, left = wait_gone(scan("HOSTCONSOLE_HOST", self.host_id), 10.0, 0.005)
            left = kill_all(left)
            self._finish()
            shutil.rmtree(self.state, ignore_errors=True)
        if left:
            raise RuntimeError(f"hostconsole: processes {[i.pid for i in left]} of host {self.host_id} would not die")


# --- supervisord -----------------------------------------------------------------------


def _supervisor_proxy(sock_path: str, timeout: float):
    import xmlrpc.client

    from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

    class Conn(UnixStreamHTTPConnection):
        def connect(self):  # supervisor's own, with a timeout: every wait is bounded
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(self.socketfile)

    transport = SupervisorTransport(None, None, "unix://" + sock_path)

    def connection():
        c = Conn("localhost")
        c.socketfile = sock_path
        return c

    transport._get_connection = connection
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def _ini_value(s: str) -> str:
    if "\n" in s or "%" in s:
        raise ValueError(f"cannot put {s!r} in an ini file")
    return s


class HostconsoleUnfenced(HostconsoleSystem):
    """hostconsole with no cgroup per provider (``HOSTCONSOLE_FENCE=none``): what the fence costs."""

    name = "hostconsole-unfenced"
    label = "hostconsole, no fence"
    only = ("start", "stop-term")  # recorded as the *_unfenced figures of the hostconsole column
    fence = "none"


class SupervisorSystem(System):
    name = "supervisor"
    label = "supervisord"

    @staticmethod
    def available():
        try:
            import supervisor  # noqa: F401
        except ImportError:
            return "not installed (pip install supervisor)"
        return None

    def version(self):
        from importlib.metadata import version

        return f"supervisor {version('supervisor')}"

    def open(self, programs):
        super().open(programs)
        self.dir = tempfile.mkdtemp(prefix="sup-", dir=self.tmp)
        self.sock = os.path.join(self.dir, "s.sock")
        os.mkdir(os.path.join(self.dir, "logs"))
        lines = [
            "[unix_http_server]", f"file={self.sock}", "chmod=0700", "",
            "[supervisord]", f"logfile={self.dir}/supervisord.log", f"pidfile={self.dir}/supervisord.pid",
            f"childlogdir={self.dir}/logs", "nodaemon=true", "loglevel=warn", "minfds=256", "minprocs=64", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.sock}", "",
        ]
        import shlex

        for p in self.programs:
            lines += [
                f"[program:{p.name}]",
                f"command={_ini_value(shlex.join(_abs_argv(p.argv)))}",
                "autostart=false", "autorestart=false",
                "startsecs=0",  # RUNNING once spawned, as hostconsole's ready=none (default 1 s)
                "startretries=0", "stopsignal=TERM", f"stopwaitsecs={p.stop_timeout:g}",
            ]
            if p.env:
                lines.append("environment=" + ",".join(f'{k}="{_ini_value(v)}"' for k, v in p.env.items()))
            lines.append("")
        conf = os.path.join(self.dir, "supervisord.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines))
        self.out = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = subprocess.Popen(_bin("supervisord") + ["-n", "-c", conf], start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT)
        self.rpc = None

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"supervisord exited with {self.proc.returncode}; see {self.dir}")
            rpc = _supervisor_proxy(self.sock, 1.0)  # a fresh connection per attempt
            try:
                return rpc.supervisor.getState()["statename"] == "RUNNING"
            except OSError:
                return False
            finally:
                rpc("close")()

        try:
            wait_until(up, DAEMON_START_TIMEOUT, 0.02, "supervisord to answer")
        except BaseException:
            self.close()
            raise
        self.rpc = _supervisor_proxy(self.sock, RPC_TIMEOUT)

    @property
    def daemon_pid(self):
        return self.proc.pid

    def start_all(self):
        results = self.rpc.supervisor.startAllProcesses(True)
        bad = [r for r in results if r["status"] != 80]  # Faults.SUCCESS
        if bad:
            raise RuntimeError(f"supervisord could not start: {bad[:3]}")

    def pids(self):
        out = []
        for info in self.rpc.supervisor.getAllProcessInfo():
            if info["pid"]:
                i = ident(info["pid"])
                if i is not None:
                    out.append(i)
        return out

    def stop_all(self):
        self.rpc.supervisor.stopAllProcesses(True)

    def kill_supervisor(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self):
        try:
            if self.proc.poll() is None:
                if self.rpc is not None:
                    try:
                        self.remember()
                        self.rpc.supervisor.stopAllProcesses(True)
                    except Exception:
                        pass
                    self.rpc("close")()
                # Its own SIGTERM shutdown stops programs one at a time; nothing is left.
                stop_child(self.proc, signal.SIGTERM, 30)
        finally:
            self.out.close()
            self._finish()
            shutil.rmtree(self.dir, ignore_errors=True)


# --- circus ----------------------------------------------------------------------------


class CircusSystem(System):
    name = "circus"
    label = "circus"

    @staticmethod
    def available():
        try:
            import circus.client  # noqa: F401
        except ImportError:
            return "not installed (pip install circus)"
        except Exception as e:  # installed, but broken on this Python
            return f"cannot be imported: {e!r}"
        return None

    def version(self):
        from importlib.metadata import version

        return f"circus {version('circus')}"

    def open(self, programs):
        import shlex

        from circus.client import CircusClient

        super().open(programs)
        self.dir = tempfile.mkdtemp(prefix="circus-", dir=self.tmp)
        self.endpoint = f"ipc://{self.dir}/ctl.sock"
        lines = [
            "[circus]", f"endpoint = {self.endpoint}", f"pubsub_endpoint = ipc://{self.dir}/pub.sock",
            "statsd = False", "httpd = False", "check_delay = 5", "",
        ]
        for p in self.programs:
            lines += [
                f"[watcher:{p.name}]", f"cmd = {_ini_value(shlex.join(_abs_argv(p.argv)))}",
                "numprocesses = 1", "autostart = false", "respawn = false", "copy_env = true",
                "stop_signal = TERM", f"graceful_timeout = {p.stop_timeout:g}", "",
            ]
            if p.env:
                lines.append(f"[env:{p.name}]")
                lines += [f"{k} = {_ini_value(v)}" for k, v in p.env.items()]
                lines.append("")
        conf = os.path.join(self.dir, "circus.ini")
        with open(conf, "w") as f:
            f.write("\n".join(lines))
        self.out = open(os.path.join(self.dir, "circusd.log"), "wb")
        self.proc = subprocess.Popen(_bin("circusd") + ["--log-level", "warning", conf], start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
                                     cwd=self.dir)
        self.client = CircusClient(endpoint=self.endpoint, timeout=RPC_TIMEOUT)
        quick = CircusClient(endpoint=self.endpoint, timeout=0.5)

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"circusd exited with {self.proc.returncode}; see {self.dir}")
            try:
                return quick.call({"command": "list"}).get("status") == "ok"
            except Exception:
                return False

        try:
            wait_until(up, DAEMON_START_TIMEOUT, 0.02, "circusd to answer")
        except BaseException:
            self.close()
            raise
        finally:
            quick.stop()

    @property
    def daemon_pid(self):
        return self.proc.pid

    def call(self, command, **props):
        msg = {"command": command}
        if props:
            msg["properties"] = props
        reply = self.client.call(msg)
        if reply.get("status") != "ok":
            raise RuntimeError(f"circus {command}: {reply}")
        return reply

    def start_all(self):
        # `circusctl start` with no name starts only autostart watchers: one per watcher,
        # waiting for each, as a user would.
        for p in self.programs:
            self.call("start", name=p.name, waiting=True, match="simple")

    def pids(self):
        out = []
        for p in self.programs:
            for pid in self.call("list", name=p.name).get("pids", []):
                i = ident(pid)
                if i is not None:
                    out.append(i)
        return out

    def stop_all(self):
        self.call("stop", waiting=True)  # all watchers, concurrently

    def kill_supervisor(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self):
        try:
            if self.proc.poll() is None:
                try:
                    self.remember()
                    self.call("stop", waiting=True)
                except Exception:
                    pass
                stop_child(self.proc, signal.SIGTERM, 30)
        finally:
            self.client.stop()
            self.out.close()
            self._finish()
            shutil.rmtree(self.dir, ignore_errors=True)


# --- pm2 -------------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, ".node")  # git-ignored: npm installs pm2 here, once
PM2_VERSION = "7.0.4"  # pinned: a cached install is reused only if it is this version
NPM_TIMEOUT = 300.0


def _pm2_package() -> str:
    return os.path.join(NODE_DIR, f"pm2-{PM2_VERSION}", "node_modules", "pm2")


def _install_pm2() -> Optional[str]:
    """``npm install pm2`` into benchmarks/.node (never globally); None, or why it failed.

    npm installs into a fresh directory that is then renamed into place, so that a run
    never sees a half-done install, nor two runs one another's."""
    os.makedirs(NODE_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".pm2-{PM2_VERSION}-", dir=NODE_DIR)
    log(f"installing pm2 {PM2_VERSION} with npm into {NODE_DIR}")
    try:
        try:
            r = subprocess.run(["npm", "install", "--prefix", work, "--no-save", "--no-audit", "--no-fund",
                                "--no-update-notifier", "--ignore-scripts", "--loglevel=error",
                                "--fetch-retries=1", f"pm2@{PM2_VERSION}"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"`npm install pm2@{PM2_VERSION}` took over {NPM_TIMEOUT:g} s"
        if r.returncode != 0:
            first = (r.stdout.decode(errors="replace").strip().splitlines() or ["?"])[0]  # npm error code E...
            return f"`npm install pm2@{PM2_VERSION}` failed ({r.returncode}): {first}"
        try:
            os.rename(work, os.path.dirname(os.path.dirname(_pm2_package())))
        except OSError as e:
            if not os.path.exists(_pm2_package()):  # else another run installed it first
                return f"could not move the npm install into place: {e}"
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


class PM2System(System):
    """pm2 in fork mode: one app per program (interpreter "none": the argv itself is
    spawned), autorestart off, kill_timeout = the stop timeout; the daemon's kill signal set
    to SIGTERM (PM2_KILL_SIGNAL; pm2's default is SIGINT) so that programs see what the
    other systems send.  Everything else is pm2's default, as a user gets it: two actions
    at a time (PM2_CONCURRENT_ACTIONS), a stop polls for the exit every 100 ms, and
    treekill looks for the program's children with ``ps`` before signalling."""

    name = "pm2"
    label = "pm2"

    @staticmethod
    def available():
        if shutil.which("npm") is None or shutil.which("node") is None:
            return "npm not found (the benchmark installs pm2 with npm into benchmarks/.node/)"
        if os.path.exists(os.path.join(_pm2_package(), "package.json")):
            return None
        return _install_pm2()

    def version(self):
        with open(os.path.join(_pm2_package(), "package.json")) as f:
            v = json.load(f)["version"]
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        return f"pm2 {v} (node {node})"

    def open(self, programs):
        super().open(programs)
        self.dir = tempfile.mkdtemp(prefix="pm2-", dir=self.tmp)
        self.home = os.path.join(self.dir, "home")  # this run's own daemon, never ~/.pm2's
        apps = []
        for p in self.programs:
            argv = _abs_argv(p.argv)
            app = {"name": p.name, "script": argv[0], "args": argv[1:], "interpreter": "none",
                   "exec_mode": "fork", "autorestart": False, "kill_timeout": round(p.stop_timeout * 1000)}
            if p.env:
                app["env"] = dict(p.env)
            apps.append(app)
        self.conf = os.path.join(self.dir, "ecosystem.config.js")
        with open(self.conf, "w") as f:
            f.write("module.exports = " + json.dumps({"apps": apps}, indent=1) + ";\n")
        self.out = open(os.path.join(self.dir, "client.log"), "wb")
        self.god: Optional[Ident] = None
        self.buf = b""
        r, w = os.pipe()
        try:
            self.client = subprocess.Popen(
                ["node", os.path.join(HERE, "_pm2.js"), _pm2_package(), str(w)], pass_fds=(w,),
                env=dict(os.environ, PM2_HOME=self.home, PM2_KILL_SIGNAL="SIGTERM"), cwd=self.dir,
                start_new_session=True, stdin=subprocess.PIPE, stdout=self.out, stderr=subprocess.STDOUT)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self.replies = r
        try:
            self._reply("connect", DAEMON_START_TIMEOUT)  # the client launches the daemon
            with open(os.path.join(self.home, "pm2.pid")) as f:
                self.god = ident(int(f.read()))
            if self.god is None:
                raise RuntimeError(f"pm2's daemon is not running; see {self.dir}")
        except BaseException:
            self.close()
            raise

    def _call(self, op: str, arg=None, timeout: float = RPC_TIMEOUT):
        self.client.stdin.write(json.dumps({"op": op, "arg": arg}).encode() + b"\n")
        self.client.stdin.flush()
        return self._reply(op, timeout)

    def _reply(self, op: str, timeout: float):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.replies], [], [], left)[0]:
                raise TimeoutError(f"pm2 {op}: no answer within {timeout:g} s")
            chunk = os.read(self.replies, 65536)
            if not chunk:
                raise RuntimeError(f"pm2 {op}: the node client exited ({self.client.wait(10)}); see {self.dir}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        msg = json.loads(line)
        if not msg["ok"]:
            raise RuntimeError(f"pm2 {op}: {msg['error']}")
        return msg["value"]

    @property
    def daemon_pid(self):
        return self.god.pid

    def start_all(self):
        started = self._call("start", self.conf)
        if started != len(self.programs):
            raise RuntimeError(f"pm2 launched {started} of {len(self.programs)} programs; see {self.dir}")

    def pids(self):
        out = []
        for info in self._call("list"):
            if info["pid"]:
                i = ident(info["pid"])
                if i is not None:
                    out.append(i)
        return out

    def stop_all(self):
        self._call("stop", "all")

    def kill_supervisor(self):
        send(self.god, signal.SIGKILL)
        if wait_gone([self.god], 10.0)[1]:
            raise RuntimeError(f"pm2's daemon {self.god.pid} survived SIGKILL")

    def _reaped(self) -> bool:
        st = stat(self.god.pid)
        return st is None or st[3] != self.god.start

    def close(self):
        """`pm2 kill` against this run's PM2_HOME if its daemon is up; then whatever carries
        that PM2_HOME (pm2 puts it in every program's environment) must be gone."""
        try:
            if self.god is not None and alive(self.god):
                try:
                    self.remember()
                    self._call("kill")
                except Exception:
                    pass
                wait_gone([self.god], 10.0)
            if self.god is not None:
                # The daemon is the node client's child: the client must reap it before it
                # exits, or it lingers as a zombie of init.
                try:
                    wait_until(self._reaped, 5.0, 0.005, "pm2's daemon to be reaped")
                except TimeoutError:
                    pass
        finally:
            try:
                self.client.stdin.close()
                self.client.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                stop_child(self.client, signal.SIGKILL)
            os.close(self.replies)
            self.out.close()
            _, left = wait_gone(([self.god] if self.god else []) + scan("PM2_HOME", self.home), 10.0, 0.005)
            left = kill_all(left)
            self._finish()
            shutil.rmtree(self.dir, ignore_errors=True)
        if left:
            raise RuntimeError(f"pm2: processes {[i.pid for i in left]} of {self.home} would not die")


# --- honcho ----------------------------------------------------------------------------


class HonchoSystem(System):
    """honcho, a Python clone of foreman: ``honcho start`` runs every line of a Procfile at
    once (each with ``sh -c``, in its own session) and prefixes its output with the name.
    A Procfile has no dependencies and no readiness, so it takes part in ``up`` only: the
    time is until every process has printed its ready line, seen in honcho's own output.

    ``honcho start``'s own code (``honcho.command.main``) runs in an interpreter started,
    and honcho imported, before timing (``_honcho.py``, which waits for a go on stdin), as
    the other peers' daemons are launched before timing.  Every process of it carries
    ``HCBENCH_HONCHO=<id>``: ``close`` sends honcho SIGTERM (its own shutdown: SIGTERM to
    each process group, SIGKILL after 5 s), then verifies by pid that all of them are gone."""

    name = "honcho"
    label = "honcho"
    only = ("up",)

    @staticmethod
    def available():
        try:
            import honcho.command  # noqa: F401
        except ImportError:
            return "not installed (pip install honcho)"
        return None

    def version(self):
        from importlib.metadata import version

        return f"honcho {version('honcho')}"

    def open(self, procfile: str) -> None:
        import secrets

        self.dir = os.path.dirname(procfile)
        self.id = secrets.token_hex(4)
        self.out = b""
        self.lines: List[tuple] = []  # (perf_counter when read, line)
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "_honcho.py"), procfile],
                                     env=dict(os.environ, HCBENCH_HONCHO=self.id), cwd=self.dir,
                                     start_new_session=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        try:
            self._read_until(lambda: any(line == "armed" for _, line in self.lines), DAEMON_START_TIMEOUT, "armed")
        except BaseException:
            self.close()
            raise
        self.lines = []

    def _read_until(self, done, timeout: float, what: str) -> None:
        fd = self.proc.stdout.fileno()
        deadline = time.perf_counter() + timeout
        while not done():
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"honcho: no {what} within {timeout:g} s; output: {self.out[-300:]!r}")
            chunk = os.read(fd, 65536)
            now = time.perf_counter()
            if not chunk:
                raise RuntimeError(f"honcho exited ({self.proc.wait(10)}) before {what}; output: {self.out[-300:]!r}")
            self.out += chunk
            *complete, rest = self.out.split(b"\n")
            self.out = rest
            self.lines += [(now, line.decode(errors="replace").rstrip("\r")) for line in complete]

    def up(self, names: List[str], ready_line: str, timeout: float = 30.0):
        """Timed: go, then read honcho's output until every program has printed
        ``ready_line``.  Returns (seconds, {name: start seen}, {name: ready seen}, pids), the
        times relative to the go."""
        import re

        started, ready, pids = {}, {}, []
        pat = re.compile(r"^\S+ (\S+?)\s*\| (.*)$")  # "HH:MM:SS name.1 | text"
        seen = 0

        def done():
            nonlocal seen
            for t, line in self.lines[seen:]:
                m = pat.match(line)
                if not m:
                    continue
                who, text = m.group(1), m.group(2)
                if who == "system":
                    s = re.match(r"^(\S+)\.1 started \(pid=(\d+)\)", text)
                    if s:
                        started.setdefault(s.group(1), t - t0)
                        pids.append(int(s.group(2)))
                elif who.endswith(".1") and text == ready_line:
                    ready.setdefault(who[:-2], t - t0)
            seen = len(self.lines)
            return all(n in ready for n in names)

        t0 = time.perf_counter()
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        self._read_until(done, timeout, f"{ready_line!r} from all {len(names)}")
        dt = max(ready.values())
        return dt, started, ready, pids

    def close(self):
        """honcho's own shutdown (SIGTERM), then every process it started must be gone."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.communicate(timeout=15)
                except subprocess.TimeoutExpired:
                    stop_child(self.proc, signal.SIGKILL)
        finally:
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            _, left = wait_gone(scan("HCBENCH_HONCHO", self.id), 10.0, 0.005)
            left = kill_all(left)
            self._finish()
        if left:
            raise RuntimeError(f"honcho: processes {[i.pid for i in left]} would not die")


ALL = [PopenSystem, HostconsoleSystem, SupervisorSystem, CircusSystem, PM2System, HonchoSystem]


def crash_env(crash_id: str) -> Dict[str, str]:
    return {CRASH_VAR: crash_id}
