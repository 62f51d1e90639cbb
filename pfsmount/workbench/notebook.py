"""``pfsmount notebook``: JupyterLab in a sandbox where ``/pfs/<repo>`` is one exact commit.

Each commit named, and every commit in its provenance, is bound read-only at ``/pfs/<repo>``
(from the mount's ``/pfs/<repo>/<commit-id>``, which never changes, or, without a mount, an
export into a temp dir); ``/pfs/out`` is a new temp dir, or a branch on the mount, writable.
The sandbox is the datums' own (``SandboxRunner.argv``: a root from nothing, the host's
programs read-only, uid 65534, no capabilities) plus this Python's prefix read-only, the
notebook directory writable, and the host's network: the browser on the host must reach the
server on 127.0.0.1, which a network namespace of its own would hide. No Docker, no
privilege. Client side: the daemon is reached through the ``Client`` only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from pfsmount.api.client import Client
from pfsmount.errors import Conflict, InvalidArgument, NotFound
from scheduler.runners import PATH, RunnerError, SandboxRunner, Task, sandboxed

START = 90.0  # seconds JupyterLab may take to answer
STOP = 20.0  # seconds it may take to shut its kernels down


def pins(c: Client, refs: list[str]) -> dict[str, str]:
    """repo -> commit id: each ref's commit and its provenance; a repo pinned to two
    different commits is refused (one ``/pfs/<repo>`` cannot show both)."""
    pinned: dict[str, str] = {}
    for ref in refs:
        commit = c.inspect_commit(ref)
        if commit.is_open:
            raise Conflict(f"commit {commit.repo}@{commit.id} is open; finish it first")
        for key in [f"{commit.repo}@{commit.id}", *commit.provenance]:
            repo, commit_id = key.split("@", 1)
            if repo == "out":
                raise InvalidArgument("a repo named out cannot show at /pfs/out")
            if pinned.setdefault(repo, commit_id) != commit_id:
                raise Conflict(f"repo {repo} is in the provenance twice, as {pinned[repo]} "
                               f"and {commit_id}; name commits that agree")
    return pinned


def out_branch(c: Client, ref: str, mount: Path | None) -> Path:
    """The mount's directory of ``REPO@BRANCH`` (or ``REPO/BRANCH``), to write to."""
    repo, sep, branch = ref.replace("/", "@", 1).partition("@")
    if not sep or not repo or not branch:
        raise InvalidArgument(f"--out {ref}: give REPO@BRANCH")
    if mount is None:
        raise InvalidArgument("--out REPO@BRANCH writes through the mount: not with "
                              "--no-mount, nor with a daemon that has none")
    if c.inspect_repo(repo).kind != "input":
        raise InvalidArgument(f"--out {ref}: {repo} is a pipeline's output, read-only")
    if not any(b.name == branch for b in c.list_branches(repo)):
        raise NotFound(f"branch {repo}@{branch} not found")
    return mount / repo / branch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop JupyterLab as its own SIGTERM does (kernels shut down, then the server); bwrap
    ends with it, and its pid namespace takes every process left. Forcibly after STOP."""
    pid = sandboxed(proc.pid)
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(STOP)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _ready(url: str, token: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise RunnerError(f"JupyterLab exited {proc.returncode}: {tail[0]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/status", params={"token": token}, timeout=2).is_success:
                return
        time.sleep(0.2)
    raise RunnerError(f"JupyterLab did not answer within {START:.0f} s (its log: {log})")


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGTERM stops us as Ctrl-C does."""
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def serve(c: Client, refs: list[str], out: str | None, no_mount: bool, notebooks: Path,
          say: Callable[[str], None]) -> None:
    """Serve JupyterLab over the pinned commits until Ctrl-C (or SIGTERM)."""
    if shutil.which("bwrap") is None:
        raise RunnerError("bubblewrap (bwrap) is not installed; the notebook runs in it")
    if importlib.util.find_spec("jupyterlab") is None:
        raise RunnerError("JupyterLab is not installed: install pfsmount[notebook]")

    status = c.status()
    mount = None if no_mount or "mount" not in status else Path(status["mount"])
    pinned = pins(c, refs)
    notebooks = notebooks.resolve()
    if notebooks == Path("/"):
        raise InvalidArgument("the notebook directory cannot be /; give --notebooks DIR")
    home = Path(tempfile.mkdtemp(prefix="pfsmount-notebook-"))
    done = False
    try:
        binds: list[tuple[Path, str]] = []
        for repo, commit_id in sorted(pinned.items()):
            if mount is not None:
                binds.append((mount / repo / commit_id, f"/pfs/{repo}"))
            else:
                c.export(f"{repo}@{commit_id}", home / "pins" / repo)
                binds.append((home / "pins" / repo, f"/pfs/{repo}"))
        prefixes = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
        binds += [(p, str(p)) for p in sorted(prefixes) if not str(p).startswith("/usr")]
        writable = out_branch(c, out, mount) if out else home / "out"
        writable.mkdir(exist_ok=True)
        port, token = _free_port(), secrets.token_hex(24)
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", "--ServerApp.root_dir=/",
               f"--ServerApp.preferred_dir={notebooks}",
               "--LabApp.extension_manager=readonly"]  # this Python is read-only in here
        env = {"PATH": f"{Path(sys.executable).parent}:{PATH}", "PFS_MOUNT": "/pfs",
               "PFS_OUT": "/pfs/out", "JUPYTER_PLATFORM_DIRS": "1"}
        task = Task(cmd=cmd, stdin="", env=env, binds=binds, out=writable, log=home / "log",
                    working_dir=str(notebooks))
        runner = SandboxRunner(hidden=tuple(Path(p) for k in ("root", "mount")
                                            if (p := status.get(k))))
        argv = runner.argv(task, network=True, writable=((notebooks, str(notebooks)),))
        with _interrupts():
            with open(task.log, "ab") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            try:
                _ready(url, token, proc, task.log)
                for repo, commit_id in sorted(pinned.items()):
                    say(f"/pfs/{repo}  {repo}@{commit_id}  read-only")
                say(f"/pfs/out  {out or writable}  writable")
                say(f"JupyterLab: {url}/lab?token={token}")
                say("Ctrl-C stops it")
                sys.stdout.flush()
                proc.wait()
                raise RunnerError(f"JupyterLab exited {proc.returncode} (its log: {task.log})")
            except KeyboardInterrupt:
                _stop(proc)
            except BaseException:
                _stop(proc)
                raise
        if not out:
            say(f"stopped; what it wrote to /pfs/out is in {writable}")
        else:
            say(f"stopped; finish what it wrote with `pfsmount commit finish {out}`")
        done = True
    finally:
        shutil.rmtree(home / "pins", ignore_errors=True)
        if done:  # else its log stays, for the error that names it
            (home / "log").unlink(missing_ok=True)
            if out:
                shutil.rmtree(home, ignore_errors=True)
