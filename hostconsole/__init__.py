"""hostconsole: turn an IPython REPL or Jupyter kernel into a process host console.

    import hostconsole
    host = hostconsole.get_host()
    web = host.run("web", ["python", "-m", "http.server", "8000"])
    host.ps(); host.logs("web"); host.purge()

No provider outlives the process that hosts it.  See README.md.
"""

from .errors import (
    DuplicateProvider,
    ExecutableNotFound,
    HostconsoleError,
    HostError,
    InvalidSpec,
    PlatformNotSupported,
    PortInUse,
    ProviderFailed,
    UnknownDependency,
    UnknownProvider,
)
from .host import Host, Provider, get_host
from ._table import PsTable, StopReport
from .reap import ReapReport, reap

__version__ = "0.1.0"


def load_ipython_extension(ipython):
    """``%load_ext hostconsole``: the ``%host`` magics and the shutdown hooks."""
    from . import ipython as _ipython  # here, so that `import hostconsole` needs no IPython

    _ipython.load_ipython_extension(ipython)


def unload_ipython_extension(ipython):
    """``%unload_ext hostconsole`` (and ``%reload_ext``): shut the host down, remove the hooks."""
    from . import ipython as _ipython

    _ipython.unload_ipython_extension(ipython)


__all__ = [
    "Host",
    "Provider",
    "PsTable",
    "StopReport",
    "ReapReport",
    "reap",
    "get_host",
    "HostconsoleError",
    "HostError",
    "InvalidSpec",
    "ExecutableNotFound",
    "DuplicateProvider",
    "UnknownProvider",
    "UnknownDependency",
    "ProviderFailed",
    "PlatformNotSupported",
    "PortInUse",
]
