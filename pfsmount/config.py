"""Where things live, and what one daemon serves.

``Layout``: the root directory, its socket, lock, log and store, path arithmetic shared by
the daemon (which creates these) and the client (which finds them), reading only environment
variables. ``DaemonConfig``: everything the composition root (``pfsmount.daemon``) builds a
daemon from. ``private_root``: the one place that makes the root directory (store and
socket) private to its user. Nothing here opens a store or starts anything.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

from pfsmount.errors import PfsError

log = logging.getLogger("pfsmount.config")


def default_root() -> Path:
    """``$PFSMOUNT_ROOT``, else ``$XDG_DATA_HOME/pfsmount`` (``~/.local/share/pfsmount``)."""
    env = os.environ.get("PFSMOUNT_ROOT")
    if env:
        return Path(env).expanduser().absolute()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data, "pfsmount").absolute()


def default_mount() -> Path:
    """``/pfs`` for root, ``~/pfs`` for everyone else."""
    return Path("/pfs") if os.geteuid() == 0 else Path.home() / "pfs"


class _InRoot:
    """A path of the root directory, named once (``Layout.socket`` and the like)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, layout: Layout, owner: type | None = None) -> Path:
        return layout.root / self.name


@dataclass(frozen=True)
class Layout:
    root: Path
    socket: ClassVar = _InRoot("pfsmount.sock")
    lock: ClassVar = _InRoot("daemon.lock")
    pidfile: ClassVar = _InRoot("daemon.pid")
    log: ClassVar = _InRoot("daemon.log")
    store: ClassVar = _InRoot("store")
    mount_staging: ClassVar = _InRoot("mount-staging")  # files open for writing in the mount


class DaemonConfig(NamedTuple):
    """One daemon: its root, its mount (None: the API alone), where its packs live (an
    ``ObjectStore`` URL; "" is ``file://<root>/store/packs``) and what runs its datums."""

    root: Path
    mountpoint: Path | None = None
    allow_other: bool = False
    storage: str = ""
    executor: str = "local"

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    @property
    def storage_url(self) -> str:
        return self.storage or (self.layout.store / "packs").as_uri()


def layout(root: Path | str | None = None) -> Layout:
    return Layout(Path(root).expanduser().absolute() if root else default_root())


def private_root(root: Path) -> None:
    """Make ``root`` (made as needed) a 0700 directory of this user: the socket in it is
    0600, and the directory too keeps everyone else from the socket and the store. A root
    owned by another user is refused, since its owner could swap the socket."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.stat(root)
    if st.st_uid != os.geteuid():
        raise PfsError(f"{root} belongs to uid {st.st_uid}, not to uid {os.geteuid()} "
                       "(the daemon's user); pick a --root of your own")
    if stat.S_IMODE(st.st_mode) != 0o700:
        log.info("making %s private (mode %o -> 700)", root, stat.S_IMODE(st.st_mode))
        os.chmod(root, 0o700)
