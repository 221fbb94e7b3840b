"""The exceptions hostconsole raises.

Every error a user can cause is a ``HostconsoleError`` with a one-line message; the
IPython layer turns them into ``UsageError``.  Subclasses also derive from the builtin
exception a Python user would try first (``ValueError``, ``KeyError``, ``RuntimeError``).

A message quotes what the user gave with ``shown`` (never a bare ``repr``: the repr of a
5000-digit int raises, of a deeply nested list recurses, and either would escape in place
of the error) and paths with ``plain`` (as they are, unless a line break or another
control character would split the one line).
"""

import os
import reprlib

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 80, 60, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


def shown(value: object) -> str:
    """A short, one-line repr of a user's value, whatever it is."""
    try:
        text = _REPR.repr(value)
    except Exception:  # (a huge int, a repr that raises or recurses without end)
        if isinstance(value, int):
            return f"<an integer of {value.bit_length()} bits>"
        return f"<a {type(value).__name__}>"
    return text if text.isprintable() else _REPR.repr(text)


def plain(value: object) -> str:
    """A path or a name as it is, if it prints on one line; otherwise its ``shown`` form."""
    try:
        text = os.fspath(value) if isinstance(value, os.PathLike) else value
    except Exception:
        text = value
    if isinstance(text, str) and text.isprintable():
        return text
    return shown(text)


class HostconsoleError(Exception):
    """Base class of every error hostconsole raises on purpose."""


class InvalidSpec(HostconsoleError, ValueError):
    """A provider's definition is malformed (name, signal, timeout, env, cwd, command)."""


class ExecutableNotFound(InvalidSpec):
    """The command's executable does not exist or is not executable."""


class DuplicateProvider(HostconsoleError, ValueError):
    """A provider with this name is already active on this host."""


class UnknownProvider(HostconsoleError, KeyError):
    """No provider with this name exists on this host."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownDependency(UnknownProvider):
    """A provider requires a name this host does not know."""


class ProviderFailed(HostconsoleError, RuntimeError):
    """A provider could not be started, or ended before it became ready."""


class PortInUse(HostconsoleError, RuntimeError):
    """The port a readiness check names is already taken (the message says by whom)."""


class HostError(HostconsoleError, RuntimeError):
    """The host itself cannot do what was asked (shut down, state dir unusable...)."""


class PlatformNotSupported(HostError):
    """This operating system lacks the mechanisms hostconsole's guarantees need."""
