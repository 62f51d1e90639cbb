"""The daemon process's lifetime: one trio nursery running the API server and the services.

Owns the exclusive lock on the root (one daemon per root), the owner-only Unix socket, the
pid file, signal handling, and an orderly shutdown in which every service is cancelled. What
it serves (the ASGI app, the mount, the scheduler) is built by ``compose`` and handed in:
this module imports neither the model nor any layer that serves it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio
from hypercorn.config import Config

from pfsmount.api.serve import serve
from pfsmount.config import Layout, private_root
from pfsmount.errors import DaemonRunning

log = logging.getLogger("pfsmount.daemon")

Service = Callable[[trio.Nursery], Awaitable[None]]  # starts its tasks, returns when ready


class Daemon:
    """Everything one daemon process runs, from lock to shutdown; ``info`` adds to status."""

    def __init__(self, layout: Layout, info: dict[str, Any] | None = None) -> None:
        self.layout = layout
        self.info = info or {}
        self.started = time.time()
        self._stop = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    def _lock(self) -> int:
        private_root(self.layout.root)
        fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.layout.pidfile.read_text().strip() if self.layout.pidfile.exists() else "?"
            raise DaemonRunning(
                f"a pfsmount daemon (pid {pid}) already serves {self.layout.root}"
            ) from None
        return fd

    def _socket(self) -> socket.socket:
        path = self.layout.socket
        path.unlink(missing_ok=True)  # left by a daemon that died; we hold the lock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.set_inheritable(True)
        return sock

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "root": str(self.layout.root),
            "socket": str(self.layout.socket),
            "started": self.started,
            **self.info,
        }

    def stop(self) -> None:
        """Ask the daemon to shut down; safe from any thread."""
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._stop.set)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the root's lock (the store may be opened only inside); on the way out the
        socket and pid file go, and the lock last."""
        lock_fd = self._lock()
        try:
            yield
        finally:
            self.layout.socket.unlink(missing_ok=True)
            self.layout.pidfile.unlink(missing_ok=True)
            os.close(lock_fd)

    def serve(self, app: Any, services: list[Service]) -> None:
        """Start ``services`` in order, then answer on the socket until stopped."""
        trio.run(self._main, app, services)

    async def _main(self, app: Any, services: list[Service]) -> None:
        self._token = trio.lowlevel.current_trio_token()
        sock = self._socket()
        config = Config()
        config.accesslog = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._signals)
            for service in services:  # the API answers only once every service is up
                await service(nursery)
            await nursery.start(serve, app, config, sock)
            self.layout.pidfile.write_text(f"{os.getpid()}\n")
            log.info("serving %s on %s", self.layout.root, self.layout.socket)
            await self._stop.wait()
            log.info("shutting down")
            nursery.cancel_scope.cancel()
        sock.close()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for signum in sigs:
                log.info("received %s", signal.Signals(signum).name)
                self._stop.set()
