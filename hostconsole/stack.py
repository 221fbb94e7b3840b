"""Stacks: a set of providers described in one file, read into ``ProviderSpec``s.

``load(path)`` reads ``hostconsole.toml`` (the native format: the keys are exactly
``run``'s options), ``process-compose.yaml``/``.yml`` (as far as it maps onto them; every
key it cannot honour is named in one warning line) or a ``Procfile`` (``name: command``);
without a path it looks in the current directory for those, in that order.  Everything
is checked before anything starts: bad syntax, an unknown key, a wrong type, a bad value,
a dependency that is not in the file, a cycle, a missing env file, a name that breaks the
name rule -- each is one ``StackError`` line naming the file, the provider and the key
(and the line, where it can be found).

``Stack.levels()`` orders the providers by their requirements (what needs nothing first).
Pure: reads files, starts nothing; ``Host.up``/``down`` act on what it returns.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._statedir import read_text
from .errors import InvalidSpec, plain, shown
from .spec import NAME_RE, STACK_KEYS, ProviderSpec

FILES = ("hostconsole.toml", "process-compose.yaml", "process-compose.yml", "Procfile")
MAX_BYTES = 4 * 1024 * 1024


class StackError(InvalidSpec):
    """A stack file that cannot be used (the message names the file, provider and key)."""


@dataclass
class Stack:
    path: Path
    specs: Dict[str, ProviderSpec]  # in the file's order
    warnings: List[str] = field(default_factory=list)

    def select(self, names: Sequence[str]) -> List[str]:
        """``names`` and everything they require, in the file's order (all, if none named)."""
        if not names:
            return list(self.specs)
        for n in names:
            if n not in self.specs:
                raise StackError(f"{plain(self.path)}: no provider {shown(n)} in this stack "
                                 f"(it has {', '.join(self.specs)})")
        want = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n not in want:
                want.add(n)
                todo.extend(self.specs[n].requires)
        return [n for n in self.specs if n in want]

    def levels(self, names: Optional[Sequence[str]] = None) -> List[List[str]]:
        """Providers grouped by dependency depth: level 0 requires nothing of the stack."""
        chosen = list(self.specs) if names is None else list(names)
        depth: Dict[str, int] = {}

        def d(n: str) -> int:
            if n not in depth:
                reqs = [r for r in self.specs[n].requires if r in self.specs]
                depth[n] = 1 + max((d(r) for r in reqs), default=-1)
            return depth[n]

        out: List[List[str]] = []
        for n in chosen:
            k = d(n)
            while len(out) <= k:
                out.append([])
            out[k].append(n)
        return out


def find(directory: Union[str, "os.PathLike[str]", None] = None) -> Path:
    """The stack file of ``directory`` (default: the current one)."""
    base = Path(directory) if directory is not None else Path.cwd()
    for name in FILES:
        if (base / name).is_file():
            return base / name
    raise StackError(f"no stack file in {plain(base)}: looked for {', '.join(FILES)}")


def load(path: Union[str, "os.PathLike[str]", None] = None) -> Stack:
    """Read and check a stack file (see the module's docstring)."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise StackError(f"a stack file is a path, not {shown(path)}")
    try:
        p = find() if path is None else Path(path)
    except TypeError:  # (an os.PathLike of bytes)
        raise StackError(f"a stack file is a path (a string), not {shown(path)}") from None
    if p.is_dir():
        p = find(p)
    try:
        text = read_text(p, MAX_BYTES)
    except ValueError as e:
        raise StackError(f"{plain(p)} {e}") from None
    warnings: List[str] = []
    origins: Dict[str, Dict[str, str]] = {}  # what a key is called in the file, where not ours
    if p.name == "Procfile" or p.suffix == "" and p.name.lower().startswith("procfile"):
        raw = _procfile(p, text)
    elif p.suffix in (".yaml", ".yml"):
        raw, warnings, origins = _process_compose(p, text)
    elif p.suffix == ".toml":
        raw = _toml(p, text)
    else:
        raise StackError(f"{plain(p)}: not a stack file (hostconsole.toml, process-compose.yaml or Procfile)")
    specs: Dict[str, ProviderSpec] = {}
    base = str(p.parent.resolve())
    for name, options in raw.items():
        where = f"{plain(p)}: provider {shown(name)}"
        line = _line_of(text, name)
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise StackError(f"{plain(p)}{_at(line)}: invalid provider name {shown(name)}: "
                             f"use 1-64 letters, digits, '.', '_' "
                             f"or '-', starting with a letter or digit")
        named = origins.get(name, {})

        def called(key: str) -> str:
            return named.get(key, key)

        unknown = sorted(set(options) - STACK_KEYS)
        if unknown:
            raise StackError(f"{where}{_at(_line_of(text, name, unknown[0]))}: unknown key {shown(unknown[0])} "
                             f"(a provider takes {', '.join(sorted(STACK_KEYS))})")
        if "command" not in options:
            raise StackError(f"{where}{_at(line)}: key 'command' is missing")
        for key, value in options.items():
            _check_type(where + _at(_line_of(text, name, called(key))), called(key), key, value)
        opts = dict(options)
        command = opts.pop("command")
        shell = opts.pop("shell", False)
        try:
            specs[name] = ProviderSpec.build(name, command, shell=shell, base_dir=base, **opts)
        except InvalidSpec as e:
            bad = _key_in(str(e), options)
            raise StackError(f"{where}{_at(_line_of(text, name, called(bad)) if bad else line)}"
                             f"{f': key {shown(called(bad))}' if bad else ''}: {e}") from None
    for name, spec in specs.items():
        for r in spec.requires:
            if r not in specs:
                key = origins.get(name, {}).get("requires", "requires")
                raise StackError(f"{plain(p)}: provider {shown(name)}{_at(_line_of(text, name, key))}: "
                                 f"key {shown(key)}: "
                                 f"{shown(r)} is not a provider of this stack")
    cycle = _cycle(specs)
    if cycle:
        raise StackError(f"{plain(p)}: provider {shown(cycle[0])}: key 'requires': "
                         f"a dependency cycle: {' -> '.join(cycle)}")
    return Stack(p, specs, warnings)


# --- formats ------------------------------------------------------------------------------


def _toml(path: Path, text: str) -> Dict[str, Dict[str, Any]]:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StackError(f"{plain(path)}: bad TOML: {e}") from None
    except (ValueError, RecursionError) as e:  # (the parser's own limits: a 5000-digit int, deep nesting)
        what = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0]
        raise StackError(f"{plain(path)}: bad TOML: {what}") from None
    extra = sorted(set(data) - {"providers"})
    if extra:
        raise StackError(f"{plain(path)}{_at(_line_of(text, None, extra[0]))}: unknown key {shown(extra[0])} "
                         f"(providers go in [providers.NAME] tables)")
    provs = data.get("providers")
    if not isinstance(provs, dict) or not provs:
        raise StackError(f"{plain(path)}: no providers: describe each in a [providers.NAME] table")
    for name, options in provs.items():
        if not isinstance(options, dict):
            raise StackError(f"{plain(path)}{_at(_line_of(text, name))}: provider {shown(name)} must be a table "
                             f"([providers.{name}])")
    return provs


def _procfile(path: Path, text: str) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        name, sep, command = s.partition(":")
        name = name.strip()
        if not sep or not command.strip():
            raise StackError(f"{plain(path)}: line {n}: expected 'name: command', not {shown(s[:60])}")
        if not NAME_RE.match(name):
            raise StackError(f"{plain(path)}: line {n}: invalid provider name {shown(name)}: "
                             f"use 1-64 letters, digits, '.', "
                             f"'_' or '-', starting with a letter or digit")
        if name in out:
            raise StackError(f"{plain(path)}: line {n}: provider {shown(name)} is defined twice")
        out[name] = {"command": command.strip(), "shell": True}  # (foreman runs each line with sh -c)
    if not out:
        raise StackError(f"{plain(path)}: no providers: a Procfile has 'name: command' lines")
    return out


# process-compose's keys that map onto ours, and how.
_PC_SIGNALS = {1: "HUP", 2: "INT", 3: "QUIT", 9: "KILL", 10: "USR1", 12: "USR2", 15: "TERM"}
_PC_RESTART = {"no": "no", "always": "always", "on_failure": "on-failure", "exit_on_failure": "no"}


def _process_compose(path: Path, text: str) -> Tuple[Dict[str, Dict[str, Any]], List[str],
                                                     Dict[str, Dict[str, str]]]:
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]
    except ModuleNotFoundError:
        raise StackError(f"{plain(path)}: reading YAML needs PyYAML: pip install pyyaml "
                         f"(or pip install 'hostconsole[yaml]')") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise StackError(f"{plain(path)}: bad YAML{where}: {problem}") from None
    except (ValueError, RecursionError) as e:  # (a 5000-digit int, nesting deeper than Python recurses)
        what = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0]
        raise StackError(f"{plain(path)}: bad YAML: {what}") from None
    if not isinstance(data, dict) or not isinstance(data.get("processes"), dict) or not data["processes"]:
        raise StackError(f"{plain(path)}: no processes: a process-compose file has a 'processes' mapping")
    ignored = [k for k in data if k not in ("processes", "version")]
    out: Dict[str, Dict[str, Any]] = {}
    origins: Dict[str, Dict[str, str]] = {}
    loose: List[str] = []  # depends_on conditions honoured more strictly than they say
    completed: List[str] = []  # required with process_completed_successfully: oneshots
    for name, p in data["processes"].items():
        where = f"{plain(path)}: process {shown(name)}"
        if not isinstance(p, dict):
            raise StackError(f"{where}: must be a mapping")
        o: Dict[str, Any] = {}
        origins[str(name)] = {"cwd": "working_dir", "env": "environment", "requires": "depends_on",
                                       "ready": "readiness_probe", "restart": "availability.restart",
                                       "stop_signal": "shutdown.signal", "stop_timeout": "shutdown.timeout_seconds"}
        for key, value in p.items():
            if key == "command":
                o["command"], o["shell"] = value, True  # (process-compose runs it with a shell)
            elif key == "working_dir":
                o["cwd"] = value
            elif key == "environment":
                o["env"] = value
            elif key == "depends_on":
                if not isinstance(value, dict):
                    raise StackError(f"{where}: key 'depends_on' must be a mapping")
                o["requires"] = list(value)
                for dep, cond in value.items():
                    c = (cond or {}).get("condition", "process_started") if isinstance(cond, dict) else None
                    if c == "process_completed_successfully":
                        completed.append(str(dep))
                    elif c == "process_started":
                        loose.append(f"{name}->{dep}")
                    elif c != "process_healthy":
                        ignored.append(f"processes.{name}.depends_on.{dep}.condition={c}")
            elif key == "readiness_probe" and isinstance(value, dict):
                for k, v in value.items():
                    if k == "http_get" and isinstance(v, dict):
                        scheme = v.get("scheme", "http")
                        o["ready"] = f"{scheme}://{v.get('host', '127.0.0.1')}:{v.get('port', 80)}{v.get('path', '/')}"
                    elif k == "exec" and isinstance(v, dict) and v.get("command"):
                        o["ready"] = f"cmd:{v['command']}"
                    elif k == "timeout_seconds":
                        pass  # one probe's timeout: ours are bounded by themselves
                    else:
                        ignored.append(f"processes.{name}.readiness_probe.{k}")
            elif key == "availability" and isinstance(value, dict):
                for k, v in value.items():
                    if k == "restart" and v in _PC_RESTART:
                        o["restart"] = _PC_RESTART[v]
                    else:
                        ignored.append(f"processes.{name}.availability.{k}")
            elif key == "shutdown" and isinstance(value, dict):
                for k, v in value.items():
                    if k == "signal":
                        o["stop_signal"] = _PC_SIGNALS.get(v, v) if isinstance(v, int) else v
                    elif k == "timeout_seconds":
                        o["stop_timeout"] = v
                    else:
                        ignored.append(f"processes.{name}.shutdown.{k}")
            else:
                ignored.append(f"processes.{name}.{key}")
        out[str(name)] = o
    for dep in completed:
        if dep in out:
            out[dep]["oneshot"] = True
    said = ([f"not honoured: {', '.join(ignored)}"] if ignored else []) + (
        [f"depends_on process_started is honoured as process_healthy (a dependent starts once what it requires "
         f"is ready): {', '.join(loose)}"] if loose else [])
    warnings = [f"{plain(path)}: {'; '.join(said)}"] if said else []  # (one line, whatever it has to say)
    return out, warnings, origins


# --- checks -------------------------------------------------------------------------------

_TYPES: Mapping[str, Tuple[type, ...]] = {
    "shell": (bool,), "oneshot": (bool,), "ready": (str,), "restart": (str,), "cwd": (str,), "env_file": (str,),
    "ready_timeout": (int, float), "stop_timeout": (int, float), "stop_signal": (str, int),
    "requires": (list, str), "env": (dict, list),
}


def _check_type(where: str, called: str, key: str, value: Any) -> None:
    want = _TYPES.get(key)
    if want is None:
        return
    if isinstance(value, bool) and bool not in want or not isinstance(value, want):
        words = {"bool": "true or false", "str": "a string", "int": "a number", "float": "a number",
                 "list": "a list", "dict": "a table"}
        names = " or ".join(dict.fromkeys(words[t.__name__] for t in want))
        raise StackError(f"{where}: key {shown(called)} must be {names}, not {shown(value)}")


def _key_in(message: str, options: Mapping[str, Any]) -> Optional[str]:
    """The key an ``InvalidSpec`` message is about, when it says (to name it)."""
    words = {"stop timeout": "stop_timeout", "ready timeout": "ready_timeout", "signal": "stop_signal",
             "ready check": "ready", "restart policy": "restart", "oneshot": "oneshot", "env file": "env_file",
             "working directory": "cwd", "environment": "env", "dependency": "requires", "require": "requires",
             "executable": "command", "command": "command", "script": "command"}
    for phrase, key in words.items():
        if phrase in message and (key in options or key == "command"):
            return key
    return None


def _cycle(specs: Mapping[str, ProviderSpec]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(n: str) -> List[str]:
        state[n] = 1
        stack.append(n)
        for r in specs[n].requires:
            if state.get(r) == 1:
                return stack[stack.index(r):] + [r]
            if r in specs and r not in state:
                found = visit(r)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in specs:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def _line_of(text: str, name: Optional[str], key: Optional[str] = None) -> Optional[int]:
    """Best effort: the line of provider ``name``'s table (or of its ``key``)."""
    lines = text.splitlines()
    start = 0
    if name is not None:
        pat = re.compile(r"^\s*(\[\s*providers\.\"?" + re.escape(name) + r"\"?\s*\]|" + re.escape(name) + r"\s*:)")
        for i, line in enumerate(lines):
            if pat.match(line):
                start = i
                break
        else:
            return None
        if key is None:
            return start + 1
    if key is None:
        return None
    kpat = re.compile(r"^\s*" + re.escape(key) + r"\s*[=:]")
    for i in range(start, len(lines)):
        if i > start and name is not None and re.match(r"^\s*\[", lines[i]):
            break
        if kpat.match(lines[i]):
            return i + 1
    return None


def _at(line: Optional[int]) -> str:
    return f" (line {line})" if line else ""

