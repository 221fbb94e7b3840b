"""``ProviderSpec``: everything a user can say about a provider, in one frozen value.

The magic, the Python API, stack files, the registry, the watchdog and reap all speak it:

* ``ProviderSpec.build(name, command, **options)`` is the only place user input is checked
  (types, ranges, names, the executable, the working directory, the env file); it raises
  one-line ``InvalidSpec`` errors and never touches a process.
* ``OPTIONS`` lists the options (``run`` keywords, ``%host run`` flags, ``hostconsole.toml``
  keys) with their help text; the magic's parser and the stack loader are built from it.
* ``to_wire`` / ``from_wire`` is its one JSON form: the spawn and adopt messages, the
  registry entry and reap read and write exactly this.
* Equality is what "the same spec" means: re-running a cell with an equal spec changes
  nothing, a different one is refused (or, with ``replace``, restarted); ``differences``
  names what changed.

Adding a field means: a dataclass field, a line in ``OPTIONS`` (if users set it), its
check in ``build``, its wire form, and the code that uses it.  Nothing else.

Pure: no threads, no locks, no processes.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import signal
from dataclasses import dataclass, fields
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from . import _ready
from .errors import ExecutableNotFound, InvalidSpec, plain, shown

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
RESTART_POLICIES = ("no", "on-failure", "always")
ENV_FILE_MAX = 1024 * 1024


@dataclass(frozen=True)
class Option:
    """One user-facing option of a provider: keyword, flag, stack-file key."""

    key: str
    flag: str
    help: str
    metavar: Optional[str] = None
    kind: str = "value"  # "value", "flag" (boolean switch) or "list" (repeatable)


OPTIONS: Tuple[Option, ...] = (
    Option("requires", "--requires", "start only after providers A and B are ready", "A,B", "list"),
    Option("ready", "--ready", "port:8000, http://127.0.0.1:8000/health, log:REGEX, cmd:SHELL or none (default)",
           "SPEC"),
    Option("ready_timeout", "--ready-timeout", "give up waiting for readiness after S seconds, and stop it "
           "(default 30)", "S"),
    Option("stop_signal", "--stop-signal", "first signal sent on stop: TERM, INT, HUP, QUIT, USR1, ... "
           "(default TERM)", "SIG"),
    Option("stop_timeout", "--stop-timeout", "seconds between the stop signal and SIGKILL (default 5)", "S"),
    Option("restart", "--restart", "no (default), on-failure or always", "POLICY"),
    Option("oneshot", "--oneshot", "run to completion; ready when it exits 0", kind="flag"),
    Option("cwd", "--cwd", "working directory (default: the current one)", "DIR"),
    Option("env", "--env", "extra environment variable (repeatable)", "K=V", "list"),
    Option("env_file", "--env-file", "read K=V lines (dotenv format) into the environment; --env wins", "PATH"),
)
OPTION_KEYS = frozenset(o.key for o in OPTIONS)
# What a stack file may say of a provider: the command, how to run it, and every option.
STACK_KEYS = frozenset({"command", "shell"}) | OPTION_KEYS

DEFAULTS: Dict[str, Any] = {
    "requires": (), "ready": None, "ready_timeout": 30.0, "stop_signal": "TERM", "stop_timeout": 5.0,
    "restart": "no", "oneshot": False, "cwd": None, "env": None, "env_file": None,
}
DEFAULT_STOP_TIMEOUT = float(DEFAULTS["stop_timeout"])


# --- checks of single values (also used by Host for its own settings) ----------------------


def check_name(name: object, what: str = "provider name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidSpec(f"invalid {what} {shown(name)}: use 1-64 letters, digits, '.', '_' or '-', "
                          f"starting with a letter or digit")
    return name


def parse_signal(sig: object) -> int:
    """'TERM', 'SIGTERM', 'term', '15', 15 or signal.SIGTERM -> 15."""
    if isinstance(sig, signal.Signals):
        return int(sig)
    if isinstance(sig, int) and not isinstance(sig, bool):
        try:
            return int(signal.Signals(sig))
        except ValueError:
            pass
    elif isinstance(sig, str):
        s = sig.strip().upper()
        if s.isdigit() and s.isascii() and len(s) <= 3:
            return parse_signal(int(s))
        if not s.startswith("SIG"):
            s = "SIG" + s
        if s in signal.Signals.__members__:
            return int(signal.Signals[s])
    raise InvalidSpec(f"unknown signal {shown(sig)}: use a name such as TERM, INT, HUP, QUIT or USR1")


def check_seconds(what: str, value: object) -> float:
    if isinstance(value, (bool, bytes, bytearray)):  # (a number, or its text: "1.5" is what the magic has)
        raise InvalidSpec(f"{what}: {shown(value)} is not a number of seconds")
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InvalidSpec(f"{what}: {shown(value)} is not a number of seconds") from None
    if math.isnan(v) or math.isinf(v) or v < 0:
        raise InvalidSpec(f"{what} must be a non-negative number of seconds, not {shown(value)}")
    return v


def check_flag(what: str, value: object) -> bool:
    """A yes/no argument: True or False, nothing that merely looks like one (``"no"`` is true)."""
    if not isinstance(value, bool):
        raise InvalidSpec(f"{what} must be True or False, not {shown(value)}")
    return value


def check_callback(what: str, value: object) -> None:
    if value is not None and not callable(value):
        raise InvalidSpec(f"{what} must be a function (or None), not {shown(value)}")


def check_names(value: object, what: str = "names") -> List[str]:
    """A list of provider names: one name, or an iterable of them (None: none)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidSpec(f"{what} must be a provider name or a list of names, not {shown(value)}")
    names = list(value)
    for n in names:
        if not isinstance(n, str):
            raise InvalidSpec(f"provider names are strings, not {shown(n)}")
    return names


def check_poll(value: object) -> float:
    """How long to wait between two looks: more than 0, at most a minute."""
    v = check_seconds("poll", value)
    if not 0 < v <= 60:
        raise InvalidSpec(f"poll must be more than 0 and at most 60 seconds, not {shown(value)}")
    return v


def check_timeout(what: str, value: object, allow_none: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    return check_seconds(what, value)


def _path(value: object, what: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\0" in value:
        raise InvalidSpec(f"{what} must be a path (a non-empty string), not {shown(value)}")
    return value


def _check_env(env: object) -> Dict[str, str]:
    if env is None:
        return {}
    if isinstance(env, (list, tuple)):  # ["K=V", ...], as the magic and stack files may give it
        pairs: Dict[str, str] = {}
        for item in env:
            if not isinstance(item, str) or "=" not in item or item.startswith("="):
                raise InvalidSpec(f"environment entries must be NAME=VALUE, not {shown(item)}")
            k, _, v = item.partition("=")
            pairs[k] = v
        env = pairs
    if not isinstance(env, Mapping):
        raise InvalidSpec(f"env must be a mapping of names to strings, not {type(env).__name__}")
    out: Dict[str, str] = {}
    for k, v in env.items():
        if not isinstance(k, str) or not k or "=" in k or "\0" in k:
            raise InvalidSpec(f"invalid environment variable name {shown(k)}")
        if not isinstance(v, str) or "\0" in v:
            raise InvalidSpec(f"environment variable {plain(k)} must be a string without NUL bytes")
        if k.startswith("HOSTCONSOLE_"):
            raise InvalidSpec(f"{plain(k)} is set by the host; it cannot be overridden")
        out[k] = v
    return out


def _check_requires(requires: object, name: str) -> Tuple[str, ...]:
    if requires is None:
        return ()
    if isinstance(requires, str):
        items: List[object] = [r.strip() for r in requires.split(",") if r.strip()]
    elif isinstance(requires, Iterable) and not isinstance(requires, (bytes, Mapping)):
        items = []
        for r in requires:
            # The magic's --requires is repeatable, and each may hold a comma list.
            items.extend([x.strip() for x in r.split(",") if x.strip()] if isinstance(r, str) else [r])
    else:
        raise InvalidSpec(f"requires must be a provider name, a comma-separated string or a list of names, "
                          f"not {shown(requires)}")
    out = []
    for r in items:
        check_name(r, "dependency name")
        assert isinstance(r, str)
        if r == name:
            raise InvalidSpec(f"provider {shown(name)} cannot require itself")
        if r not in out:
            out.append(r)
    return tuple(out)


# The kernel's limit for one argument (MAX_ARG_STRLEN, with its NUL): a shell script is one
# argument of bash's; a longer command line is refused before shlex spends seconds on it.
MAX_COMMAND_BYTES = 131072 - 1


def _split_command(command: object, shell: bool) -> List[str]:
    if isinstance(command, str) and len(command) > MAX_COMMAND_BYTES // 4 and \
            len(command.encode("utf-8", "surrogatepass")) > MAX_COMMAND_BYTES:
        raise InvalidSpec(f"the command is longer than {MAX_COMMAND_BYTES} bytes, the most the kernel "
                          f"takes in one argument")
    if shell:
        if not isinstance(command, str):
            raise InvalidSpec("with shell=True the command must be a string (a bash script)")
        if not command.strip():
            raise InvalidSpec("missing command: the script is empty")
        if "\0" in command:
            raise InvalidSpec("the script contains a NUL byte")
        return ["bash" if shutil.which("bash") else "sh", "-c", command]
    if isinstance(command, str):
        if "\0" in command:
            raise InvalidSpec("the command contains a NUL byte")
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise InvalidSpec(f"cannot split command {shown(command)}: {e}") from None
    elif isinstance(command, (list, tuple)):
        argv = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in command]
        if not all(isinstance(a, str) and "\0" not in a for a in argv):
            raise InvalidSpec("every command argument must be a string without NUL bytes")
    else:
        raise InvalidSpec(f"command must be a string or a list of strings, not {type(command).__name__}")
    if not argv or not argv[0]:
        raise InvalidSpec("missing command")
    return argv


def resolve_executable(argv0: str, cwd: str, path_var: Optional[str]) -> str:
    if os.sep in argv0:
        path = argv0 if os.path.isabs(argv0) else os.path.join(cwd, argv0)
        if not os.path.exists(path):
            raise ExecutableNotFound(f"executable {shown(argv0)} does not exist")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise ExecutableNotFound(f"{shown(argv0)} is not an executable file")
        return path
    path_var = path_var if path_var is not None else os.defpath
    key = (argv0, path_var)
    found = _which_cache.get(key)
    if found is None or not os.access(found, os.X_OK):  # (a hit is checked again: one syscall)
        found = shutil.which(argv0, path=path_var)
        if found is None:
            raise ExecutableNotFound(f"executable {shown(argv0)} not found on PATH")
        if len(_which_cache) > 256:
            _which_cache.clear()
        _which_cache[key] = found
    return found


_which_cache: Dict[Tuple[str, str], str] = {}


# --- env files (dotenv) -------------------------------------------------------------------

_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(path: str) -> Dict[str, str]:
    """``K=V`` lines, as docker compose and python-dotenv read them: ``export`` allowed,
    ``#`` comments, blank lines, 'single' (literal) and "double" (escapes) quotes.  No
    ``${VAR}`` interpolation: a value is what the file says.  One clear error per bad line."""
    from ._statedir import read_text

    try:
        text = read_text(path, ENV_FILE_MAX, "utf-8-sig")  # (a byte-order mark, as editors write one, is no name)
    except ValueError as e:
        raise InvalidSpec(f"env file {plain(path)} {e}") from None
    out: Dict[str, str] = {}
    # Lines end at \n (and \r\n) only, as dotenv reads them: a form feed or a Unicode line
    # separator inside a value is part of the value.
    for n, line in enumerate(text.split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if re.match(r"export[ \t]", s):
            s = s[len("export"):].lstrip()
        key, sep, value = s.partition("=")
        key = key.strip()
        if not sep or not ENV_NAME_RE.match(key):
            raise InvalidSpec(f"env file {plain(path)} line {n}: expected NAME=VALUE, not {shown(line.strip()[:60])}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            q = value[0]
            end = _closing_quote(value, q)
            if end < 0:
                raise InvalidSpec(f"env file {plain(path)} line {n}: unterminated {q}quote{q}")
            rest = value[end + 1:].strip()
            if rest and not rest.startswith("#"):
                raise InvalidSpec(f"env file {plain(path)} line {n}: unexpected text after the closing quote")
            body = value[1:end]
            if q == '"':
                body = re.sub(r"\\(.)", lambda m: _DQ_ESCAPES.get(m.group(1), "\\" + m.group(1)), body)
            value = body
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
        if "\0" in value:
            raise InvalidSpec(f"env file {plain(path)} line {n}: NUL byte in the value of {key}")
        if key.startswith("HOSTCONSOLE_"):
            raise InvalidSpec(f"env file {plain(path)} line {n}: {key} is set by the host; it cannot be overridden")
        out[key] = value
    return out


def _closing_quote(value: str, q: str) -> int:
    i = 1
    while i < len(value):
        if q == '"' and value[i] == "\\":
            i += 2
            continue
        if value[i] == q:
            return i
        i += 1
    return -1


# --- the spec -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderSpec:
    """Everything that defines a provider.  Build it with ``ProviderSpec.build``."""

    name: str
    argv: Tuple[str, ...]
    shell: bool = False
    env: Tuple[Tuple[str, str], ...] = ()  # sorted; what env_file and env add to the host's environment
    env_file: Optional[str] = None  # absolute path; its contents are already in ``env``
    cwd: str = "/"
    requires: Tuple[str, ...] = ()
    ready: _ready.ReadySpec = _ready.NONE
    ready_timeout: float = float(DEFAULTS["ready_timeout"])
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    restart: str = "no"
    oneshot: bool = False

    # --- building ----------------------------------------------------------------------

    @classmethod
    def build(cls, name: object, command: object, *, shell: object = False, base_dir: Optional[str] = None,
              **options: Any) -> "ProviderSpec":
        """Check user input and make the spec; raise ``InvalidSpec`` (one line) if it is bad.

        ``command``: an argv list, or a string split like a shell line (with ``shell``,
        a bash script).  ``options``: the keys of ``OPTIONS``.  Relative ``cwd`` and
        ``env_file`` are taken relative to ``base_dir`` (default: the current directory).
        """
        unknown = sorted(set(options) - OPTION_KEYS)
        if unknown:
            raise InvalidSpec(f"unknown option {shown(unknown[0])}: use {', '.join(o.key for o in OPTIONS)}")
        o = {**DEFAULTS, **{k: v for k, v in options.items()}}
        name = check_name(name)
        if not isinstance(shell, bool):
            raise InvalidSpec(f"shell must be True or False, not {shown(shell)}")
        if not isinstance(o["oneshot"], bool):
            raise InvalidSpec(f"oneshot must be True or False, not {shown(o['oneshot'])}")
        base = os.path.abspath(_path(base_dir, "base directory")) if base_dir is not None else os.getcwd()
        cwd = base if o["cwd"] is None else os.path.normpath(os.path.join(base, os.path.expanduser(
            _path(o["cwd"], "cwd"))))
        if not os.path.isdir(cwd):
            raise InvalidSpec(f"working directory {shown(cwd)} does not exist")
        env: Dict[str, str] = {}
        env_file = None
        if o["env_file"] is not None:
            env_file = os.path.normpath(os.path.join(base, os.path.expanduser(_path(o["env_file"], "env_file"))))
            env.update(parse_env_file(env_file))
        env.update(_check_env(o["env"]))  # --env wins over the file
        requires = _check_requires(o["requires"], name)
        stop_signal = parse_signal(o["stop_signal"])
        stop_timeout = check_seconds("stop timeout", o["stop_timeout"])
        ready_timeout = check_seconds("ready timeout", o["ready_timeout"])
        ready = _ready.parse(o["ready"])
        restart = o["restart"]
        if restart not in RESTART_POLICIES:
            raise InvalidSpec(f"unknown restart policy {shown(restart)}: use no, on-failure or always")
        if o["oneshot"] and restart == "always":
            raise InvalidSpec("a oneshot runs to completion, so restart 'always' would run it for ever: "
                              "use on-failure (retry until it exits 0) or drop oneshot")
        argv = _split_command(command, shell)
        path_var = env.get("PATH", os.environ.get("PATH", os.defpath))
        exe = resolve_executable(argv[0], cwd, path_var)
        if shell:
            argv[0] = exe
        return cls(name=name, argv=tuple(argv), shell=shell, env=tuple(sorted(env.items())), env_file=env_file,
                   cwd=cwd, requires=requires, ready=ready, ready_timeout=ready_timeout, stop_signal=stop_signal,
                   stop_timeout=stop_timeout, restart=restart, oneshot=o["oneshot"])

    # --- reading ------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return "oneshot" if self.oneshot else "provider"

    @property
    def env_dict(self) -> Dict[str, str]:
        return dict(self.env)

    @property
    def script(self) -> Optional[str]:
        """The bash script of a shell provider, else None."""
        return self.argv[2] if self.shell and len(self.argv) > 2 else None

    def executable(self) -> str:
        """The path ``argv[0]`` names now (on the provider's PATH)."""
        env = dict(self.env)
        return resolve_executable(self.argv[0], self.cwd, env.get("PATH", os.environ.get("PATH", os.defpath)))

    def command_line(self) -> str:
        """The command as a user would type it (the script, for a shell provider)."""
        script = self.script
        return script if script is not None else shlex.join(self.argv)

    def differences(self, other: "ProviderSpec") -> List[str]:
        """Names of what differs, as the user knows them (``command``, ``--ready``, ...)."""
        flags = {o.key: o.flag for o in OPTIONS}
        out = []
        for f in fields(self):
            if getattr(self, f.name) != getattr(other, f.name):
                label = "command" if f.name in ("argv", "shell") else flags.get(f.name, f.name)
                if label == "--env-file" and "--env" in out:
                    continue
                if label not in out:
                    out.append(label)
        return out

    # --- the wire form ------------------------------------------------------------------

    def to_wire(self) -> Dict[str, Any]:
        return {
            "name": self.name, "argv": list(self.argv), "shell": self.shell, "env": dict(self.env),
            "env_file": self.env_file, "cwd": self.cwd, "requires": list(self.requires),
            "ready": self.ready.text, "ready_timeout": self.ready_timeout, "stop_signal": self.stop_signal,
            "stop_timeout": self.stop_timeout, "restart": self.restart, "oneshot": self.oneshot,
        }

    @classmethod
    def from_wire(cls, d: object) -> "ProviderSpec":
        """The spec a ``to_wire`` dict describes; ``InvalidSpec`` if it is malformed.

        Checks shape and values, not the file system: the spec may be a dead host's."""
        if not isinstance(d, Mapping):
            raise InvalidSpec(f"a provider spec must be an object, not {type(d).__name__}")
        try:
            name = check_name(d["name"])
            argv = d["argv"]
            if not isinstance(argv, list) or not argv or not argv[0] or \
                    not all(isinstance(a, str) and "\0" not in a for a in argv):
                raise InvalidSpec("argv must be a non-empty list of strings without NUL bytes")
            env = _check_env(d.get("env") or {})
            cwd = _path(d.get("cwd") or "/", "cwd")
            env_file = d.get("env_file")
            if env_file is not None:
                env_file = _path(env_file, "env_file")
            shell, oneshot = d.get("shell", False), d.get("oneshot", False)
            if not isinstance(shell, bool) or not isinstance(oneshot, bool):
                raise InvalidSpec("shell and oneshot must be booleans")
            restart = d.get("restart", "no")
            if restart not in RESTART_POLICIES:
                raise InvalidSpec(f"unknown restart policy {shown(restart)}")
            if oneshot and restart == "always":
                raise InvalidSpec("a oneshot cannot restart 'always'")
            return cls(
                name=name, argv=tuple(argv), shell=shell, env=tuple(sorted(env.items())), env_file=env_file,
                cwd=cwd, requires=_check_requires(d.get("requires") or [], name),
                ready=_ready.parse(d.get("ready")), ready_timeout=check_seconds("ready timeout",
                                                                                d.get("ready_timeout", 30.0)),
                stop_signal=parse_signal(d.get("stop_signal", int(signal.SIGTERM))),
                stop_timeout=check_seconds("stop timeout", d.get("stop_timeout", DEFAULT_STOP_TIMEOUT)),
                restart=restart, oneshot=oneshot,
            )
        except KeyError as e:
            raise InvalidSpec(f"a provider spec needs {shown(e.args[0])}") from None

