"""Who may talk to the daemon: the peer check every connection passes before it is served.

The socket is owner-only (0600 in a 0700 root), and the kernel's word on the peer
(``SO_PEERCRED``) is checked as well: only the daemon's own uid and root may connect, and
only from the daemon's own user namespace (a process in a sandbox's namespace, whatever uid
it maps to, is refused even if the socket were visible to it). That is what makes the
host-path operations (``local=`` on put, export) safe to run in the daemon: a caller is
the daemon's user or root, so the daemon never reaches a path the caller could not.
Must not know about HTTP, routes or the model.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
from typing import Protocol

_UCRED = struct.Struct("3i")  # pid, uid, gid


def _userns(pid: int | str) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/user")
    return st.st_dev, st.st_ino


@functools.cache
def _own_userns() -> tuple[int, int]:
    """The daemon's user namespace: it never changes, so it is looked up once."""
    return _userns("self")


class _Socket(Protocol):
    def getsockopt(self, level: int, option: int, buflen: int) -> bytes: ...


def refusal(sock: _Socket) -> str | None:
    """Why the peer of connected Unix socket ``sock`` may not be served, or None."""
    pid, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                _UCRED.size))
    if uid not in (os.geteuid(), 0):
        return f"uid {uid} (pid {pid}) is not the daemon's user"
    try:
        same = pid > 0 and _userns(pid) == _own_userns()
    except OSError:
        same = False
    if not same:
        return f"pid {pid} (uid {uid}) is not in the daemon's user namespace"
    return None
