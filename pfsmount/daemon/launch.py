"""Starting a daemon in the background and stopping it, from a client process.

``start`` spawns the daemon's own command (``python -m pfsmount.daemon``, see ``command``)
detached from the terminal, with its output in the root's log, and returns once the daemon
answers on its socket, or raises with the last message of the log if it died first.
``stop`` asks it to shut down and waits for its pid to go away.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from pfsmount.api.client import Client
from pfsmount.config import DaemonConfig, Layout
from pfsmount.daemon.command import argv, environ
from pfsmount.errors import DaemonNotRunning, DaemonRunning, PfsError

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _last_message(tail: str) -> str:
    """The last line of ``tail`` that says something: a traceback of an exception group ends
    in box-drawing lines (``+-----``), and the error sits above them behind ``| ``."""
    for line in reversed(tail.splitlines()):
        text = line.strip().lstrip("|+- ").strip()
        if any(c.isalnum() for c in text):
            return text
    return ""


def start(config: DaemonConfig) -> dict[str, Any]:
    """Spawn the daemon of ``config`` and wait until it serves."""
    layout = config.layout
    client = Client(layout.root)
    try:
        status = client.status()
    except DaemonNotRunning:
        pass
    else:
        raise DaemonRunning(f"a pfsmount daemon (pid {status['pid']}) already serves "
                            f"{layout.root}")
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(layout.log, "ab") as log, open(os.devnull, "rb") as null:
        proc = subprocess.Popen(
            argv(config), stdin=null, stdout=log, stderr=log, start_new_session=True,
            close_fds=True, env=environ())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            last = _last_message(_log_tail(layout.log)) or f"exit code {code}"
            raise PfsError(f"the daemon did not start: {last} (log: {layout.log})")
        try:
            return client.status()
        except DaemonNotRunning:
            time.sleep(0.05)
    proc.terminate()
    raise PfsError(f"the daemon did not answer within {START_TIMEOUT:.0f} s; see {layout.log}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


def stop(layout: Layout) -> int:
    """Shut the daemon down cleanly; returns its pid. SIGKILL only if it will not stop."""
    client = Client(layout.root)
    pid = int(client.status()["pid"])
    with contextlib.suppress(DaemonNotRunning):
        client.shutdown()
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return pid
