"""What would stop a daemon of a given config from mounting here, said before it starts.

Checked by ``pfsmount up`` in the client, and by the daemon's own command, so that the user
reads one line with what to do instead of libfuse's "fuse_session_mount failed" from the
daemon's log (an ordinary user mounts through the setuid ``fusermount3``, which opens
``/dev/fuse`` as that user). Light on purpose: it imports neither pyfuse3 nor the mount,
which every ``up`` would otherwise pay for before it even starts the daemon.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pfsmount.config import DaemonConfig


def problem(config: DaemonConfig) -> str | None:
    """Why this user cannot mount where ``config`` says, with what to do; None if it can
    (or if the config has no mount)."""
    if config.mountpoint is None:
        return None
    what = f"cannot mount {config.mountpoint}"
    uid = os.getuid()
    if not os.path.exists("/dev/fuse"):
        return (f"{what}: /dev/fuse does not exist (load the fuse kernel module: "
                "modprobe fuse); use --no-mount to serve without a mount")
    if uid != 0:
        if shutil.which("fusermount3") is None:
            return (f"{what}: fusermount3 is not installed (Debian package fuse3); "
                    "use --no-mount to serve without a mount")
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            return (f"{what}: /dev/fuse is not accessible to uid {uid}; use --no-mount, or "
                    "add the user to the fuse group / chmod 0666 /dev/fuse")
        if config.allow_other and not _user_allow_other():
            return (f"{what} with --allow-other: /etc/fuse.conf does not set "
                    "user_allow_other; add it there, or mount without --allow-other")
    return None


def _user_allow_other() -> bool:
    try:
        lines = Path("/etc/fuse.conf").read_text().splitlines()
    except OSError:
        return False
    return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in lines)
