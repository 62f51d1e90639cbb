"""Change notifications from the versioning model to whoever watches it (mount, scheduler).

Listeners are called synchronously in the thread that made the change, after its
transaction committed; they must only hand the event on (e.g. to a trio token), never block.
Waiters use ``wait_for`` to sleep until a predicate over the model holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, NamedTuple

EventKind = Literal[
    "repo_created",
    "repo_deleted",
    "branch_changed",  # head or open commit moved, or the branch was created/deleted
    "commit_started",
    "commit_finished",
    "commit_deleted",
    "files_changed",  # an open commit's tree changed
]


class Event(NamedTuple):
    kind: EventKind
    repo: str
    branch: str | None = None
    commit: str | None = None
    root: str | None = None  # the tree a file change produced, so its writer can know it


Listener = Callable[[Event], None]


class Events:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._cond = threading.Condition()
        self._generation = 0

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        with self._cond:
            self._listeners.append(listener)
        return lambda: self._unsubscribe(listener)

    def _unsubscribe(self, listener: Listener) -> None:
        with self._cond:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def emit(self, *events: Event) -> None:
        with self._cond:
            listeners = list(self._listeners)
            self._generation += 1
            self._cond.notify_all()
        for event in events:
            for listener in listeners:
                listener(event)

    def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block until ``predicate()`` is true, re-checking after every change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(timeout=1.0 if left is None else min(left, 1.0))
        return True
