"""pfsmount: Git for data on one machine.

``pfsmount.Client`` is the Python API of a running daemon (``pfsmount up``).
"""

from pfsmount.api.client import Client

__all__ = ["Client"]
