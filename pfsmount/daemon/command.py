"""The daemon's command line, both ways: ``argv`` writes a ``DaemonConfig`` as the command
that starts a daemon process (``python -m pfsmount.daemon ...``, in ``environ``), ``parse``
reads it back, and ``main`` runs it. ``serve`` runs a config in the calling process
(``pfsmount up --foreground``). Light to import: the parts are loaded only by ``serve``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import pfsmount
from pfsmount.config import DaemonConfig
from pfsmount.daemon import preflight
from pfsmount.errors import PfsError


def argv(config: DaemonConfig) -> list[str]:
    """The command that runs a daemon of ``config`` with this Python. ``-P``: the user's
    working directory is not searched for modules (a ``trio.py`` there must not load)."""
    where = ["--mount", str(config.mountpoint)] if config.mountpoint else ["--no-mount"]
    return [sys.executable, "-P", "-m", "pfsmount.daemon", "--root", str(config.root), *where,
            *(["--allow-other"] if config.allow_other else []),
            *(["--storage", config.storage] if config.storage else []),
            "--executor", config.executor]


def environ() -> dict[str, str]:
    """The environment of the daemon process: this one's, with the source root of the
    running ``pfsmount`` first on ``PYTHONPATH``, so the daemon runs the code of the CLI that
    started it (not whichever checkout is installed in a venv both share)."""
    env = dict(os.environ)
    source = str(Path(pfsmount.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, env.get(
        "PYTHONPATH", "").split(os.pathsep))])
    return env


def parse(args: list[str] | None = None) -> DaemonConfig:
    p = argparse.ArgumentParser(prog="python -m pfsmount.daemon",
                                description="Run a pfsmount daemon in the foreground.")
    p.add_argument("--root", type=Path, required=True, help="data and socket directory")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mount", type=Path, help="where to mount the repos")
    where.add_argument("--no-mount", action="store_true", help="serve the API only")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users use the mount, as its mode bits allow")
    p.add_argument("--storage", default="",
                   help="ObjectStore URL of the packs [default: file://ROOT/store/packs]")
    p.add_argument("--executor", default="local", help="what runs datums [default: local]")
    a = p.parse_args(args)
    return DaemonConfig(a.root.absolute(), None if a.no_mount else a.mount.absolute(),
                        a.allow_other and not a.no_mount, a.storage, a.executor)


def serve(config: DaemonConfig) -> None:
    """Run the daemon of ``config`` in this process, logging to stderr, until it stops."""
    from pfsmount.daemon.compose import run  # the whole daemon: loaded only to run one

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(config)


def main(args: list[str] | None = None) -> int:
    """``python -m pfsmount.daemon``: an error is one line on stderr and its exit code."""
    config = parse(args)
    try:
        problem = preflight.problem(config)
        if problem:
            raise PfsError(problem)
        serve(config)
    except PfsError as e:
        sys.stderr.write(f"error: {e.message}\n")
        return e.exit_code
    return 0
