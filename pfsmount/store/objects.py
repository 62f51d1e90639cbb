"""Immutable named objects (pack files): the seam between pfsmount and its storage backend.

Owns the ``ObjectStore`` contract, the registry that picks a backend by URL
(``open_objects("file:///var/lib/pfsmount/packs")``; ``s3://bucket/prefix`` once that backend
registers), and the local backend. An object is written once, whole, and then only read by
byte range, listed or deleted. Nothing here knows what is inside an object, and this module
imports no backend's client library: a backend in a module of its own is imported only when
a URL names its scheme. ``tests/store/objects_contract.py`` is the contract every backend
passes.

A read that cannot happen for a reason that says nothing about the data (out of
descriptors, an I/O error) is a ``PfsError`` naming the object and the cause; only a missing
or short object is ``Corrupt``.
"""

from __future__ import annotations

import errno
import importlib
import os
import resource
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from pfsmount.errors import Corrupt, PfsError


class ObjectStore(Protocol):
    """What the pack layer needs of a backend. Objects never change once put.

    Names are short ASCII file names (``0123456789abcdef.pack``): no ``/``, never ending in
    ``.tmp``. Every method may be called from many threads at once.
    """

    def put_file(self, name: str, path: Path) -> None:
        """Store the finished local file ``path`` as ``name``; ``path`` may be consumed.

        Atomic: until this returns, readers see no object ``name`` (``size`` is None) or, if
        one was there, the old one; never part of the new one. Durable once it returns.
        """

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``.

        ``Corrupt`` when the object is missing or ends before ``offset + length`` (a
        truncated object is damage, never short data); ``PfsError`` when it cannot be read
        now for a reason that says nothing about the data.
        """

    def read_into(self, name: str, offset: int, buffer: memoryview) -> int:
        """Fill ``buffer`` from ``offset``; the bytes read, fewer only where the object ends
        (0 at or past its end). Lets a reader reuse one buffer instead of allocating for
        every read; the caller checks the count. ``Corrupt`` when the object is missing."""

    def size(self, name: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""

    def list(self) -> Iterator[str]:
        """The names of every whole object, in no order; never one still being put."""

    def delete(self, name: str) -> None:
        """Remove ``name``; nothing happens when it does not exist. Reads already in
        progress may finish with the old bytes; later ones find it missing."""

    def close(self) -> None:
        """Release descriptors, connections and threads; the store is not used again."""


ObjectStoreFactory = Callable[[str], ObjectStore]
"""Makes a backend from the whole URL (``s3://bucket/prefix?endpoint=...``)."""

_factories: dict[str, ObjectStoreFactory] = {}
# Backends in modules of their own, imported on first use (they register themselves), so
# that a store on local disk never loads a cloud client.
_modules = {"s3": "pfsmount.store.s3"}


def register(scheme: str, factory: ObjectStoreFactory) -> None:
    """Make ``open_objects`` build ``scheme://`` URLs with ``factory``."""
    _factories[scheme.lower()] = factory


def open_objects(url: str) -> ObjectStore:
    """The backend a URL names: ``file:///abs/dir`` or a registered scheme. An unknown
    scheme or a malformed URL is a ``PfsError`` of one line."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _factories and scheme in _modules:
        try:
            importlib.import_module(_modules[scheme])
        except ModuleNotFoundError as e:
            raise PfsError(f"object store {url!r}: the {scheme} backend cannot be loaded "
                           f"({e})") from None
    factory = _factories.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in sorted({*_factories, *_modules}))
        raise PfsError(f"unknown object store {url!r}: the URL must start with one of "
                       f"{known} (as in file:///path/to/packs)")
    return factory(url)


def _open_local(url: str) -> ObjectStore:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise PfsError(f"object store {url!r}: a file URL names an absolute local "
                       "directory, as in file:///path/to/packs")
    return LocalObjectStore(Path(unquote(parts.path)))


def descriptor_budget() -> int:
    """How many pack descriptors to keep open: a small share of the process's limit, so
    that a low ``ulimit -n`` leaves room for sockets, LMDB and the mount."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 128
    return max(2, min(128, soft // 8))


def unreadable(name: str, err: OSError) -> PfsError:
    """A read that failed for want of a resource or by I/O: never mistaken for damage."""
    hint = " (raise `ulimit -n`)" if err.errno in (errno.EMFILE, errno.ENFILE) else ""
    return PfsError(f"cannot read pack object {name}: {err.strerror or err}{hint}")


def read_fully(fd: int, buffer: memoryview, offset: int, name: str) -> int:
    """``preadv`` until ``buffer`` is full or the file ends; the bytes read."""
    got = 0
    while got < len(buffer):  # a read may return less than asked before the end
        try:
            n = os.preadv(fd, [buffer[got:]], offset + got)
        except OSError as e:
            raise unreadable(name, e) from None
        if n == 0:
            break
        got += n
    return got


class _Handle:
    """An open descriptor and how many reads use it; closed once evicted and unused."""

    __slots__ = ("doomed", "fd", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 0
        self.doomed = False


class LocalObjectStore:
    """Objects as files in one directory, read with ``pread`` through a bounded LRU of
    descriptors (thousands of packs must not exhaust the process's descriptors).

    A descriptor is pinned while a read uses it, so eviction or ``delete`` never closes a
    number another thread is reading from (the number could be reused by another file).
    """

    def __init__(self, directory: Path, max_open: int | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.max_open = max_open or descriptor_budget()
        self._fds: OrderedDict[str, _Handle] = OrderedDict()
        self._deletes = 0  # deletions so far: an open that raced one is not cached
        self._lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.directory / name

    def put_file(self, name: str, path: Path) -> None:
        target = self._path(name)
        try:
            os.replace(path, target)
        except OSError:
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
            path.unlink()
        dirfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    def _open(self, name: str) -> int:
        path = self._path(name)
        for attempt in range(2):
            try:
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise Corrupt(f"pack object {name} is missing") from None
            except OSError as e:
                if attempt or e.errno not in (errno.EMFILE, errno.ENFILE):
                    raise unreadable(name, e) from None
                with self._lock:  # out of descriptors: give back every idle one, retry
                    self._evict_locked(0)
        raise AssertionError("unreachable")

    def _pin(self, name: str) -> _Handle:
        with self._lock:
            handle = self._fds.get(name)
            if handle is not None:
                self._fds.move_to_end(name)
                handle.users += 1
                return handle
            deletes = self._deletes
        fd = self._open(name)  # outside the lock: opening may wait on the disk
        with self._lock:
            handle = self._fds.get(name)
            if handle is None and deletes != self._deletes:
                # An object deleted meanwhile may be this one: read it, never keep it open
                # (its space would not come back).
                handle = _Handle(fd)
                handle.doomed = True
            elif handle is None:
                handle = self._fds[name] = _Handle(fd)
                self._evict_locked(self.max_open)
            else:  # another reader opened it meanwhile
                os.close(fd)
            handle.users += 1
            return handle

    def _unpin(self, handle: _Handle) -> None:
        with self._lock:
            handle.users -= 1
            if handle.doomed and not handle.users:
                os.close(handle.fd)

    def _evict_locked(self, keep: int) -> None:
        """Close least recently used descriptors until at most ``keep`` are open; one in
        use is closed by its last reader instead."""
        for name in list(self._fds):
            if len(self._fds) <= keep:
                break
            self._retire_locked(self._fds.pop(name))

    def _retire_locked(self, handle: _Handle) -> None:
        if handle.users:
            handle.doomed = True
        else:
            os.close(handle.fd)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        handle = self._pin(name)
        try:
            try:
                data = os.pread(handle.fd, length, offset)
            except OSError as e:
                raise unreadable(name, e) from None
            if 0 < len(data) < length:  # a short read before the end: finish it
                rest = bytearray(length - len(data))
                got = read_fully(handle.fd, memoryview(rest), offset + len(data), name)
                data += rest[:got]
        finally:
            self._unpin(handle)
        if len(data) != length:
            raise Corrupt(f"pack object {name} is shorter than {offset + length} bytes")
        return data

    def read_into(self, name: str, offset: int, buffer: memoryview) -> int:
        handle = self._pin(name)
        try:
            return read_fully(handle.fd, buffer, offset, name)
        finally:
            self._unpin(handle)

    def size(self, name: str) -> int | None:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError:
            return None

    def list(self) -> Iterator[str]:
        for entry in os.scandir(self.directory):
            if entry.is_file() and not entry.name.endswith(".tmp"):
                yield entry.name

    def delete(self, name: str) -> None:
        """Remove an object. A read in progress keeps its descriptor (and so the bytes it
        looked up) until it ends; the space comes back then. Unlinked first, so that a
        reader opening it concurrently either fails to or sees ``_deletes`` change."""
        self._path(name).unlink(missing_ok=True)
        with self._lock:
            self._deletes += 1
            handle = self._fds.pop(name, None)
            if handle is not None:
                self._retire_locked(handle)

    def close(self) -> None:
        with self._lock:
            self._evict_locked(0)


register("file", _open_local)
