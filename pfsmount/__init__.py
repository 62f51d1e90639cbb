"""pfsmount: Git for data on one machine.

``pfsmount.Client`` is the Python API of a running daemon (``pfsmount up``). It is imported on
first use, so that ``import pfsmount.store ...`` (the daemon, its reader processes) does not
load the client's HTTP transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pfsmount.api.client import Client

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from pfsmount.api.client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
