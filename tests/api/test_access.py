"""Who may talk to the daemon: its own user and root, in its own user namespace, nobody else.

The socket is 0600 in a 0700 root, whatever mode the root had before ``up``; and even when a
mistake opens the socket to everyone, the daemon checks each connection's peer
(``SO_PEERCRED``) and closes it, with a line in its log, unless the peer is the daemon's
user or root in the daemon's user namespace. So no other user can make the daemon read
(``local=``) or write (export) a path for it. The other user is a real one, made by the
fixture (tests/confine.py), running the real command.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

from tests.conftest import (
    PFSMOUNT,
    Other,
    Pfsmount,
    Result,
    error_line,
    running,
    short_root,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_root_is_made_0700_and_the_socket_is_0600() -> None:
    daemon = Pfsmount(short_root("pfac"))
    daemon.root.chmod(0o755)  # made open beforehand, as a PFSMOUNT_ROOT might be
    with running(daemon):
        sock = daemon.root / "pfsmount.sock"
        assert stat.S_ISSOCK(sock.lstat().st_mode)
        assert (mode(daemon.root), mode(sock)) == (0o700, 0o600)


def test_a_root_owned_by_another_user_is_refused(other: Other) -> None:
    daemon = Pfsmount(short_root("pfac"))
    try:
        shutil.chown(daemon.root, other.user.uid, other.user.gid)
        r = daemon.run("up", "--no-mount")
        error_line(r, "up in another user's root", match=f"belongs to uid {other.user.uid}")
        assert not (daemon.root / "pfsmount.sock").exists()
    finally:
        daemon.cleanup()


def test_another_user_or_namespace_is_refused_even_through_an_open_socket(
        other: Other, tmp_path: Path) -> None:
    with running(Pfsmount(short_root("pfac"))) as daemon:
        daemon.ok("repo", "create", "data")
        status: list[str | Path] = [PFSMOUNT, "--root", daemon.root, "status"]
        shadow: list[str | Path] = [PFSMOUNT, "--root", daemon.root, "file", "put",
                                    "data@master:/s", "/etc/shadow"]
        # As shipped, the other user cannot even enter the root.
        error_line(other.run(*status), "status as another user", match="is not readable")
        root_only = "belongs to uid 0; only that user and root may use it"
        # A mistake opens the root and the socket to everyone: the daemon still refuses.
        daemon.root.chmod(0o755)
        (daemon.root / "pfsmount.sock").chmod(0o666)
        error_line(other.run(*status), "status as another user", match=root_only)
        error_line(other.run(*shadow), "a put of /etc/shadow by another user", match=root_only)
        assert f"refused a connection: uid {other.user.uid} " in daemon.log_text()
        # Root, but in a user namespace of its own (as a sandbox is): refused as well.
        p = subprocess.run(["unshare", "--user", "--map-root-user", *map(str, status)],
                           capture_output=True, text=True, timeout=60)
        error_line(Result(p.returncode, p.stdout, p.stderr), "status from another namespace")
        assert "not in the daemon's user namespace" in daemon.log_text()
        # The daemon's own user is served, and nothing was put.
        assert "data" in daemon.ok("status") + daemon.ok("repo", "list")
        assert daemon.json("commit", "list", "data") == []
        daemon.root.chmod(0o700)
        (daemon.root / "pfsmount.sock").chmod(0o600)
