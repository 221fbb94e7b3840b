"""Readiness checks, and who holds a port.

A ready spec is parsed (and refused, if malformed) before anything starts:

    port:8000                         a TCP connect to localhost:8000 succeeds
    http://127.0.0.1:8000/health      the URL answers 2xx or 3xx (https too; certificates
                                      are not verified: this is a local health probe)
    log:REGEX                         a line of the provider's output matches REGEX
    cmd:SHELL                         the shell command exits 0
    none                              ready as soon as it runs
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import urllib.parse
from pathlib import Path
from typing import Callable, Optional

from . import _proc
from .errors import InvalidSpec, shown

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""}


class ReadySpec:
    """A readiness check.  Equal when its kind and text are: part of "the same spec"."""

    kind = "none"
    text = "none"
    port: Optional[int] = None
    # How often a probe is worth making, at the most: a log line or a port is cheap to look
    # at (and a stack waits on each level's readiness); an HTTP request or a command less so.
    poll_max = 0.05

    def describe(self) -> str:
        return "nothing"

    def check(self, log_path: Optional[Path], log_offset: int, deadline_left: float) -> bool:
        return True

    def probe(self, log_path: Optional[Path], log_offset: int) -> "Callable[[float], bool]":
        """A probe for one incarnation: ``probe(seconds_left)`` says whether it is ready."""
        return lambda left: self.check(log_path, log_offset, left)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<ready {self.text}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReadySpec) and (self.kind, self.text) == (other.kind, other.text)

    def __hash__(self) -> int:
        return hash((self.kind, self.text))


NONE = ReadySpec()


class PortReady(ReadySpec):
    kind = "port"
    port: int

    def __init__(self, text: str, port: int):
        self.text, self.port = text, port

    def describe(self) -> str:
        return f"port {self.port} to accept connections (on localhost, or a listening socket on any address)"

    def check(self, log_path: Optional[Path], log_offset: int, deadline_left: float) -> bool:
        # A server bound to one non-loopback address refuses localhost: then a socket that
        # listens on the port, on whatever address, is its readiness.
        return port_open(self.port) or self.port in _proc.listening_sockets().values()


class HttpReady(ReadySpec):
    kind = "http"
    poll_max = 0.25

    def __init__(self, text, url, port):
        self.text, self.url, self.port = text, url, port

    def describe(self):
        return f"{self.url} to answer 2xx/3xx"

    def check(self, log_path, log_offset, deadline_left):
        import ssl
        import urllib.error
        import urllib.request  # here: costly to import, and only HTTP checks need it

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None  # a 3xx is an answer: ready

        handlers = [NoRedirect(), urllib.request.HTTPSHandler(context=ssl._create_unverified_context())]
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(self.url, timeout=max(0.2, min(2.0, deadline_left))) as r:
                return 200 <= r.status < 400
        except urllib.error.HTTPError as e:
            return 300 <= e.code < 400
        except (OSError, ValueError):
            return False


class LogReady(ReadySpec):
    kind = "log"
    # Looking is a read of what is new since the last look (~20 µs): every 10 ms, so a
    # stack's levels wait for each other by at most that (a 50 ms poll cost an `up` of 3
    # levels ~90 ms).
    poll_max = 0.01

    def __init__(self, text, regex):
        self.text, self.regex = text, regex

    def describe(self):
        return f"a line of output matching {shown(self.regex.pattern)}"

    def check(self, log_path, log_offset, deadline_left):
        return self.probe(log_path, log_offset)(deadline_left)

    def probe(self, log_path: Optional[Path], log_offset: int) -> "Callable[[float], bool]":
        """Matches what this incarnation wrote (from its offset in the log), line by line,
        reading only what is new at each look (a chatty provider's log is not read again
        and again from its start)."""
        pos, rest = [log_offset], [b""]

        def probe(deadline_left: float) -> bool:
            if log_path is None:
                return False
            try:
                with open(log_path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < pos[0]:  # rotated meanwhile: what is left starts at the top
                        pos[0], rest[0] = 0, b""
                    f.seek(pos[0])
                    data = f.read(8 * 1024 * 1024)
            except OSError:
                return False
            pos[0] += len(data)
            lines = (rest[0] + data).split(b"\n")
            rest[0] = lines[-1]  # (a line still being written: looked at again, whole, next time)
            return any(self.regex.search(line.decode("utf-8", errors="replace")) for line in lines)

        return probe


class CmdReady(ReadySpec):
    kind = "cmd"
    poll_max = 0.25

    def __init__(self, text, command):
        self.text, self.command = text, command

    def describe(self):
        return f"`{self.command}` to exit 0"

    def check(self, log_path, log_offset, deadline_left):
        # In the kernel's own process group on purpose: a probe dies with the kernel's
        # group, and it is always reaped here, so it never outlives its wait.
        try:
            proc = subprocess.Popen(["bash", "-c", self.command], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            return False
        try:
            return proc.wait(timeout=max(0.1, min(5.0, deadline_left))) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def parse(spec) -> ReadySpec:
    """Parse a ready spec, raising InvalidSpec with one line if it is malformed."""
    if spec is None:
        return NONE
    if isinstance(spec, ReadySpec):
        return spec
    if not isinstance(spec, str):
        raise InvalidSpec(f"ready check must be a string such as 'port:8000', not {shown(spec)}")
    text = spec.strip()
    kind, sep, arg = text.partition(":")
    kind = kind.lower()
    if text.lower() == "none":
        return NONE
    if kind == "port" and sep:
        arg = arg.strip()
        if not (arg.isascii() and arg.isdigit()) or len(arg) > 5 or not 1 <= int(arg) <= 65535:
            raise InvalidSpec(f"malformed ready check {shown(spec)}: port must be a number from 1 to 65535")
        return PortReady(text, int(arg))
    if kind in ("http", "https") and sep:
        try:
            u = urllib.parse.urlsplit(text)
            hostname = u.hostname
        except ValueError as e:
            raise InvalidSpec(f"malformed ready check {shown(spec)}: {e}") from None
        if not hostname:
            raise InvalidSpec(f"malformed ready check {shown(spec)}: the URL has no host")
        try:
            port = u.port
        except ValueError:
            raise InvalidSpec(f"malformed ready check {shown(spec)}: bad port in URL") from None
        if port == 0:
            raise InvalidSpec(f"malformed ready check {shown(spec)}: port must be a number from 1 to 65535")
        port = port or (443 if kind == "https" else 80)
        return HttpReady(text, text, port if hostname in LOCAL_HOSTS else None)
    if kind == "log" and sep:
        if not arg:
            raise InvalidSpec(f"malformed ready check {shown(spec)}: log: needs a regular expression")
        try:
            return LogReady(text, re.compile(arg))
        except (re.error, OverflowError, ValueError, RecursionError) as e:
            raise InvalidSpec(f"malformed ready check {shown(spec)}: bad regular expression ({e})") from None
    if kind == "cmd" and sep:
        if not arg.strip():
            raise InvalidSpec(f"malformed ready check {shown(spec)}: cmd: needs a shell command")
        return CmdReady(text, arg)
    raise InvalidSpec(
        f"malformed ready check {shown(spec)}: use port:N, http://HOST:PORT/PATH, log:REGEX, cmd:SHELL or none"
    )


def port_open(port: int, timeout: float = 0.25) -> bool:
    for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                if s.connect_ex((addr, port)) == 0:
                    return True
        except OSError:
            continue
    return False


def port_holders(port: int):
    """Processes listening on TCP ``port``: [(pid or None, command line)]."""
    import psutil

    out = []
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        conns = []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            cmd = ""
            if c.pid:
                try:
                    cmd = " ".join(" ".join(psutil.Process(c.pid).cmdline()).split())[:120]  # (one line)
                except psutil.Error:
                    pass
            if (c.pid, cmd) not in out:
                out.append((c.pid, cmd))
    return out
