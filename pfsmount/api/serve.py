"""Serving the ASGI app over the daemon's listening socket, one contained task per connection.

Owns the accept loop and how a connection ends. It runs hypercorn's own HTTP/1.1 protocol per
connection, with two differences from ``hypercorn.trio.serve``:

- Closing a connection takes the connection's send lock. Hypercorn's ``TCPServer._close``
  sends EOF without it, so when a client disconnects mid-body, the reading task (sending its
  400 for the truncated body) and the app task (ending its own response, which closes the
  connection) both send at once, and trio raises ``BusyResourceError`` (hypercorn issue
  #203). Sends are not shielded from cancellation as hypercorn's are, so that a client
  that never reads its answer cannot keep the daemon from shutting down.
- Whatever still goes wrong in one connection is logged on one line and ends that
  connection only; it never reaches the nursery that serves the others, the mount and the
  scheduler.

It knows nothing of routes or of the model.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from pfsmount.api.peer import refusal

log = logging.getLogger("pfsmount.api")
CLOSE_TIMEOUT = 5.0  # seconds a close waits for a send in progress before it cuts it


class _Connection(TCPServer):
    """Hypercorn's connection, with sends and the close serialized by one lock."""

    async def protocol_send(self, event: Event) -> None:
        if not isinstance(event, RawData | Closed):
            await super().protocol_send(event)
            return
        if isinstance(event, RawData):
            # Not shielded (hypercorn shields it): a client that stops reading (a pager)
            # may hold its answer as long as it likes, and shutdown still cancels the send.
            async with self.send_lock:
                try:
                    await self.stream.send_all(event.data)
                    return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        await self._close()
        await self.protocol.handle(Closed())

    async def _close(self) -> None:
        # Shielded and bounded: it runs in ``finally`` blocks of cancelled tasks too.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT
            async with self.send_lock:
                with contextlib.suppress(trio.BrokenResourceError, trio.BusyResourceError,
                                         trio.ClosedResourceError, AttributeError):
                    await self.stream.send_eof()  # unless the peer or the stream is gone
        await self.stream.aclose()  # a send still waiting on the peer fails now


async def serve(app: Any, config: Config, sock: socket.socket,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept connections on ``sock`` (listening already) until cancelled."""
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    state = ConnectionState({})
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))

    async def handle(stream: trio.SocketStream) -> None:
        why = refusal(stream.socket)  # before a byte is read: see pfsmount.api.peer
        if why is not None:
            log.warning("refused a connection: %s", why)
            await stream.aclose()
            return
        try:
            await _Connection(wrapped, config, context, state, stream)  # type: ignore[arg-type]
        except Exception as e:  # contained: this connection ends, the daemon serves on
            log.warning("a connection failed and was closed: %s", _describe(e))
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, [listener])
        task_status.started()


def _describe(e: BaseException) -> str:
    """One line for an error, naming each error of a group."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_describe(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"
