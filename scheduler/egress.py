"""Egress: a successful job's output commit copied out of pfsmount, to where the spec's
``egress`` says (Pachyderm's ``egress.URL``, or 2.x's ``egress.object_storage.url``).

Owns reading a spec's ``egress`` fragment (which destinations are taken, checked when the
spec is read, never at a job's end) and the one line a failed copy is. The copy itself is
``pfsmount.pfs.egress``'s: ``file:///absolute/dir`` on the daemon's host, written as the
daemon's user (as ``file get -o`` is), or ``s3://BUCKET/PREFIX`` through the S3 backend's
settings (the daemon's environment and AWS profile). Files the output no longer holds are
left where they are: egress adds and replaces, never deletes what it did not write, as
Pachyderm's. Knows nothing of jobs or their records (the engine runs it while a job is
``egressing``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from pfsmount.errors import InvalidArgument, PfsError
from pfsmount.pfs import Counts, Pfs, egress
from scheduler.fields import typed


class _RawObjectStorage(msgspec.Struct, forbid_unknown_fields=True):
    url: str


class _RawEgress(msgspec.Struct, forbid_unknown_fields=True):
    url: str | None = None  # ``URL``: 1.x and 2.x
    object_storage: _RawObjectStorage | None = None  # 2.x


def read_egress(raw: Any) -> str:
    """The destination URL of a spec's ``egress`` (keys snake_case), checked; "" for none."""
    if raw is None:
        return ""
    spec = typed(raw, _RawEgress, "egress.")
    if spec.url is not None and spec.object_storage is not None:
        raise InvalidArgument("spec fields egress.URL and egress.object_storage: give one")
    url = spec.url if spec.object_storage is None else spec.object_storage.url
    field = "egress.URL" if spec.object_storage is None else "egress.object_storage.url"
    if url is None:
        raise InvalidArgument("spec field egress.URL is missing")
    try:
        egress.check(url)
    except InvalidArgument as e:
        raise InvalidArgument(f"spec field {field} {e.message}") from None
    return url


class Stopped(Exception):
    """The copy ended between two files because its job was stopped."""


def send(pfs: Pfs, output: str, url: str, stopped: Callable[[], bool] = lambda: False
         ) -> Counts:
    """Copy every file of commit ``output`` (``repo@commit``) to ``url``; a failure is one
    line that says it was the egress. ``stopped`` is asked before each file: once true, the
    copy ends there with ``Stopped`` (a stopped job need not wait for the rest, nor for a
    server that does not answer beyond the file being written)."""
    def between() -> None:
        if stopped():
            raise Stopped(f"stopped while egressing {output} to {url}")

    try:
        return egress.write(pfs, output, url, between)
    except PfsError as e:
        raise type(e)(f"egress of {output} to {url} failed: {e.message}") from None
