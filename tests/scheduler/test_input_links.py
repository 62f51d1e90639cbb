"""A symlink stored in an input repo never brings a file of this machine into a datum.

A datum's input that is itself a symlink (glob ``/*`` over a repo holding ``s -> /etc/x``)
used to be the source of the runner's read-only bind: bubblewrap and Docker resolve a bind's
source, so the datum read whatever the link named on the host (``/etc/shadow`` for a root
daemon). The datum must see the link itself, resolving inside its own sandbox, in both
runners, with the inputs read through the mount as well as from copies.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.scheduler.conftest import Pfsd

IMAGE = "pfsmount-test/busybox:latest"
READ = ('for f in /pfs/links_in/*; do cat "$f"; readlink "$f"; done '
        '> /pfs/out/$PACH_DATUM_ID 2>&1; true')


def test_a_symlink_input_shows_the_link_not_the_host_file(pfsd: Pfsd,
                                                          docker_ready: None) -> None:
    host = Path(tempfile.mkdtemp(prefix="pfslinks", dir="/tmp"))
    try:
        (host / "secret").write_text("HOST SECRET\n")
        os.chmod(host, 0o755)  # readable by a datum's uid too, were it ever reached
        src = host / "src"
        src.mkdir()
        (src / "s").symlink_to(host / "secret")
        (src / "plain").write_text("plain\n")
        pfsd.repos("links_in")
        pfsd.ok("file", "put", "-r", "links_in@master:/", src)
        pfsd.create(pfsd.spec("links_bwrap", READ, pfsd.pin("links_in")),
                    pfsd.spec("links_docker", READ, pfsd.pin("links_in"), image=IMAGE))
        out = pfsd.wait("links_in@master")
        assert set(out) == {"links_bwrap", "links_docker"}
        for name in out:
            seen = b"".join(pfsd.tree(name).values()).decode()
            assert "HOST SECRET" not in seen, f"{name}: a datum read the host file:\n{seen}"
            assert str(host / "secret") in seen, seen  # the link itself is there
            assert "plain" in seen, seen
    finally:
        shutil.rmtree(host, ignore_errors=True)
