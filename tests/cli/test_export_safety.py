"""``file get -o`` (and ``-r -o DIR``) never write outside the destination the user named.

The daemon writes these files itself, as its own user (often root): a symlink stored in the
repo, or planted in the destination, must never lead a write elsewhere, and no name of a
temporary file can be guessed and planted in advance. Existing files are replaced (never
written through a link); a link in the way of a directory is a one-line error.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from pfsmount import Client


def victim(tmp_path: Path) -> Path:
    """A file some other program owns: it must keep its bytes and mode."""
    path = tmp_path / "victim.txt"
    path.write_text("VICTIM\n")
    path.chmod(0o600)
    return path


def unchanged(path: Path) -> None:
    assert path.read_text() == "VICTIM\n", "a write went through a symlink to the victim"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "the victim's mode changed"


def test_a_symlink_named_like_a_temporary_is_never_written_through(pfsd, repo,
                                                                   tmp_path: Path) -> None:
    target = victim(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / ".x.pfsmount-tmp").symlink_to(target)  # the name the old export wrote to
    (src / "x").write_text("ATTACKER\n")
    pfsd.ok("file", "put", "-r", f"{repo}@master:/", src)
    out = tmp_path / "out"
    pfsd.ok("file", "get", "-r", f"{repo}@master:/", "-o", out)
    unchanged(target)
    assert (out / "x").read_text() == "ATTACKER\n" and not (out / "x").is_symlink()
    assert os.readlink(out / ".x.pfsmount-tmp") == str(target)  # kept as the link it is
    assert sorted(os.listdir(out)) == [".x.pfsmount-tmp", "x"]  # no temporary left


def test_a_symlinked_directory_in_the_target_is_not_followed(pfsd, client: Client, repo,
                                                             tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "d").symlink_to(elsewhere)  # planted before the export
    client.put_file(f"{repo}@master:/d/f", b"data")
    r = pfsd.fails("file", "get", "-r", f"{repo}@master:/", "-o", out)
    assert re.search(rf"cannot write {re.escape(str(out / 'd'))}.*symbolic link", r.err), r.err
    assert list(elsewhere.iterdir()) == []
    assert os.readlink(out / "d") == str(elsewhere)
    pfsd.ok("file", "get", f"{repo}@master:/d/f", "-o", out / "d" / "g")  # the caller's path
    assert list(elsewhere.iterdir()) == [elsewhere / "g"]  # ...is followed as given


def test_a_reexport_over_a_link_the_repo_made_is_not_followed(pfsd, client: Client, repo,
                                                              tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "d").symlink_to(elsewhere)
    pfsd.ok("file", "put", "-r", f"{repo}@master:/", src)
    out = tmp_path / "out"
    pfsd.ok("file", "get", "-r", f"{repo}@master:/", "-o", out)
    assert os.readlink(out / "d") == str(elsewhere)
    # The next commit has a directory where the link was; exporting it again into `out`.
    client.delete_file(f"{repo}@master:/d")
    client.put_file(f"{repo}@master:/d/f", b"data")
    pfsd.fails("file", "get", "-r", f"{repo}@master:/", "-o", out, match="symbolic link")
    assert list(elsewhere.iterdir()) == []


def test_existing_files_and_links_are_replaced_never_written_through(pfsd, client: Client,
                                                                      repo,
                                                                      tmp_path: Path) -> None:
    target = victim(tmp_path)
    client.put_file(f"{repo}@master:/x", b"new x\n")
    client.put_file(f"{repo}@master:/y", b"new y\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("old x\n")
    (out / "y").symlink_to(target)
    (out / "z").symlink_to(target)
    pfsd.ok("file", "get", "-r", f"{repo}@master:/", "-o", out)
    pfsd.ok("file", "get", f"{repo}@master:/x", "-o", out / "z")
    unchanged(target)
    for name, data in (("x", "new x\n"), ("y", "new y\n"), ("z", "new x\n")):
        assert not (out / name).is_symlink() and (out / name).read_text() == data
    assert sorted(os.listdir(out)) == ["x", "y", "z"]
