"""Starting the daemon: ``up`` stays a client that starts the daemon's own process, the
daemon is built from its config alone, and when it dies while starting ``up`` says the
error, not the traceback's frame."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pfsmount
from pfsmount import Client
from pfsmount.config import DaemonConfig
from pfsmount.daemon import launch
from pfsmount.daemon.launch import _last_message
from pfsmount.errors import PfsError
from tests.conftest import PFSMOUNT, Pfsmount, env

# What ``up`` must leave to the daemon process: loading any of it made every ``up`` slower.
DAEMON_ONLY = ("pyfuse3", "lmdb", "trio", "starlette", "pfsmount.pfs.system",
               "pfsmount.fuse", "pfsmount.api.server", "pfsmount.daemon.compose", "scheduler")


def test_up_is_a_client_that_starts_the_daemon_process(no_daemon: Pfsmount,
                                                       tmp_path: Path) -> None:
    # Started from a directory whose modules must not stand in for the daemon's own.
    (tmp_path / "trio.py").write_text("raise SystemExit('the trio.py of the working dir')\n")
    p = subprocess.run([sys.executable, "-X", "importtime", str(PFSMOUNT), "--root",
                        str(no_daemon.root), "up", "--no-mount"],
                       capture_output=True, text=True, env=env(), timeout=90, cwd=tmp_path)
    said = [line for line in p.stderr.splitlines() if not line.startswith("import time:")]
    assert p.returncode == 0, "\n".join(said)
    pid = int(p.stdout.split("(pid ")[1].split(")")[0])
    no_daemon.pids.add(pid)
    loaded = {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines()
              if line.startswith("import time:") and "|" in line}
    assert not {m for m in loaded if m.startswith(DAEMON_ONLY)}
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [os.fsdecode(a) for a in cmdline[1:]] == [
        "-P", "-m", "pfsmount.daemon", "--root", str(no_daemon.root), "--no-mount",
        "--executor", "local"]
    no_daemon.ok("repo", "create", "data")  # it serves
    no_daemon.teardown()


def test_the_daemon_keeps_its_packs_where_its_storage_url_says(no_daemon: Pfsmount) -> None:
    packs = no_daemon.root / "elsewhere" / "packs"
    config = DaemonConfig(no_daemon.root, storage=packs.as_uri())
    no_daemon.pids.add(int(launch.start(config)["pid"]))
    with Client(no_daemon.root) as c:
        c.create_repo("data")
        c.put_file("data@master", b"apple\n" * 1000, path="sales")
        assert b"".join(c.get_file("data@master:/sales")) == b"apple\n" * 1000
    launch.stop(config.layout)
    assert any(packs.iterdir()), "no pack in the storage URL's directory"
    assert not any((no_daemon.root / "store" / "packs").glob("*")), "a pack in the default"
    no_daemon.check_log()


def test_a_bad_config_is_one_line_from_up(no_daemon: Pfsmount) -> None:
    for config, said in [
        (DaemonConfig(no_daemon.root, storage="nope://x"), "unknown object store 'nope://x'"),
        (DaemonConfig(no_daemon.root, executor="cloud"), "unknown executor 'cloud'"),
    ]:
        try:
            launch.start(config)
        except PfsError as e:
            assert said in e.message and "Traceback" not in e.message, e.message
        else:
            raise AssertionError(f"a daemon started with {config}")


def test_a_daemon_that_dies_in_an_exception_group_is_reported_by_its_error() -> None:
    # A real traceback of an exception group, as a trio nursery prints one: its last lines
    # are box drawing, which is what `up` used to report.
    code = ("raise ExceptionGroup('nursery', "
            "[ValueError('the mount point /x is not a directory')])")
    tail = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stderr
    assert tail.splitlines()[-1].strip().startswith("+--")
    assert _last_message(tail) == "ValueError: the mount point /x is not a directory"


def test_an_empty_log_says_nothing() -> None:
    assert _last_message("") == ""
    assert _last_message("  +------\n  |\n") == ""


def test_the_daemon_runs_the_code_of_the_cli_that_started_it(no_daemon: Pfsmount,
                                                               tmp_path: Path) -> None:
    """A second checkout sharing a venv: its CLI must start a daemon of its own code, not
    of the ``pfsmount`` the venv has installed."""
    here = Path(pfsmount.__file__).resolve().parents[1]
    copy = tmp_path / "checkout"
    for part in ("pfsmount", "scheduler"):
        shutil.copytree(here / part, copy / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(here / "cli.py", copy / "cli.py")
    clean = {k: v for k, v in env().items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, str(copy / "cli.py"), "--root", str(no_daemon.root),
                        "up", "--no-mount"], capture_output=True, text=True, env=clean,
                       timeout=90, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    pid = int(p.stdout.split("(pid ")[1].split(")")[0])
    no_daemon.pids.add(pid)
    environ = dict(line.split(b"=", 1) for line in
                   Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in line)
    assert os.fsdecode(environ[b"PYTHONPATH"]).split(os.pathsep)[0] == str(copy)
    no_daemon.ok("repo", "create", "data")  # it serves
    no_daemon.teardown()
