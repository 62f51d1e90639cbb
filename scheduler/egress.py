"""Egress: a successful job's output commit copied out of pfsmount, to where the spec's
``egress`` says (Pachyderm's ``egress.URL``, or 2.x's ``egress.object_storage.url``).

Owns reading a spec's ``egress`` fragment (which destinations are taken) and the copy, which
is ``pfsmount.pfs.export``'s: below the destination no link is followed and each file lands
whole or not at all. Taken: ``file:///absolute/dir`` on the daemon's host, written as the
daemon's user (as ``file get -o`` is; only that user or root reaches the API). Files the
output no longer holds are left in the directory: egress adds and replaces, never deletes
what it did not write. ``s3://`` and the rest are refused when the spec is read, never at a
job's end. Knows nothing of jobs or their records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from pfsmount.errors import InvalidArgument, PfsError
from pfsmount.pfs import Counts, Pfs
from pfsmount.pfs.export import export
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
    egress = typed(raw, _RawEgress, "egress.")
    if egress.url is not None and egress.object_storage is not None:
        raise InvalidArgument("spec fields egress.URL and egress.object_storage: give one")
    url = egress.url if egress.object_storage is None else egress.object_storage.url
    field = "egress.URL" if egress.object_storage is None else "egress.object_storage.url"
    if url is None:
        raise InvalidArgument("spec field egress.URL is missing")
    parts = urlsplit(url)
    if parts.scheme == "s3":
        raise InvalidArgument(f"spec field {field} {url!r}: s3:// egress is not yet "
                              "supported by pfsmount (it needs the S3 backend); use file:///DIR")
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") \
            or not parts.path.startswith("/") or parts.query or parts.fragment:
        raise InvalidArgument(f"spec field {field} {url!r} must be file:///absolute/dir "
                              "(the only egress pfsmount supports)")
    return url


def destination(url: str) -> Path:
    """The local directory of a ``file://`` egress URL that ``read_egress`` took."""
    return Path(unquote(urlsplit(url).path))


def send(pfs: Pfs, output: str, url: str) -> Counts:
    """Copy every file of commit ``output`` (``repo@commit``) to ``url``'s directory; a
    failure is one line that says it was the egress."""
    try:
        return export(pfs, output, destination(url), recursive=True)
    except PfsError as e:
        raise type(e)(f"egress of {output} to {url} failed: {e.message}") from None
