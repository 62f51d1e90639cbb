"""Where things live: the root directory, its socket, lock, log and store, the default mount.

Pure path arithmetic shared by the daemon (which creates these) and the client (which finds
them). Reads only environment variables; touches nothing on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


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


class Layout(NamedTuple):
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "pfsmount.sock"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def pidfile(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def store(self) -> Path:
        return self.root / "store"


def layout(root: Path | str | None = None) -> Layout:
    return Layout(Path(root).expanduser().absolute() if root else default_root())
