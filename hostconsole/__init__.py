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
# Eager, and light: `reap` the function must shadow `reap` the submodule of the same name.
from .reap import ReapReport, reap

# The rest is imported on first use (PEP 562): the watchdog process imports this package
# too, and must start fast and small; `import hostconsole` in a kernel stays cheap.
_LAZY = {
    "Host": ".host", "get_host": ".host", "Provider": ".provider", "ProviderSpec": ".spec", "State": ".state",
    "PsTable": "._table", "StopReport": "._table",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

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
    "ProviderSpec",
    "State",
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
