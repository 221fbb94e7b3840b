"""The exceptions hostconsole raises.

Every error a user can cause is a ``HostconsoleError`` with a one-line message; the
IPython layer turns them into ``UsageError``.  Subclasses also derive from the builtin
exception a Python user would try first (``ValueError``, ``KeyError``, ``RuntimeError``).
"""


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
