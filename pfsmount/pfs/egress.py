"""Writing every file of a commit to a URL outside pfsmount: ``file:///dir`` on this host, or
``s3://BUCKET/PREFIX`` (a pipeline's egress).

Owns which destination URLs exist and how a commit reaches each: a directory through
``export`` (no link below it followed, each file whole or not at all), a bucket through the S3
backend's settings and client (``pfsmount.store.s3``: endpoint, credentials and region read as
AWS tools read them; a server that does not answer is one ``StorageUnavailable`` line naming
the endpoint), one object per file, its key the file's path under the prefix. A file larger
than one part streams as a multipart upload, never held whole; each object appears complete
or not at all. S3 has no links or directories: a link in the commit is not written, nor an
empty directory. Nothing already there is deleted. Must not know about pipelines or jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from pfsmount.errors import InvalidArgument
from pfsmount.pfs.export import export
from pfsmount.pfs.model import Counts
from pfsmount.pfs.refs import parse_ref
from pfsmount.store.s3 import S3ObjectStore, parse_url

if TYPE_CHECKING:
    from pfsmount.pfs.system import Pfs

PART = 5 * 1024 * 1024  # above this a file goes as a multipart upload of parts this size
TAKEN = "file:///absolute/dir or s3://BUCKET/PREFIX"


def check(url: str) -> None:
    """Refuse a destination ``write`` cannot take, saying which it takes; reads no setting
    and reaches no server (that happens at each job's end)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        try:
            parse_url(url)
        except InvalidArgument as e:
            raise InvalidArgument(f"{url!r}: {e.message}") from None
        return
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") \
            or not parts.path.startswith("/") or parts.query or parts.fragment:
        raise InvalidArgument(f"{url!r} must be {TAKEN}")


def write(pfs: Pfs, ref: str, url: str, between: Callable[[], None] = lambda: None
          ) -> Counts:
    """Every file of commit ``ref`` written to ``url`` (which ``check`` took); ``between``
    is called before each file, and raises to end the copy there (its caller was stopped)."""
    if urlsplit(url).scheme == "s3":
        return _to_bucket(pfs, ref, url, between)
    return export(pfs, ref, Path(unquote(urlsplit(url).path)), recursive=True,
                  between=between)


def _to_bucket(pfs: Pfs, ref: str, url: str, between: Callable[[], None]) -> Counts:
    """One object per file; opening the bucket first makes a wrong endpoint, key or bucket
    one prompt error rather than the retries of the first put."""
    root = pfs.files.inspect(ref)
    pinned = f"{parse_ref(ref).repo}@{root.commit}"  # one snapshot, even if the branch moves
    bucket = S3ObjectStore(url)
    counts = Counts()
    try:
        for item in pfs.files.walk(pinned):
            if item.type != "file":
                continue
            between()
            commit, entry = pfs.files.open(pinned, item.path)
            chunks = pfs.files.read(entry, where=pfs.files.describe(commit, item.path))
            bucket.put_stream(item.path.lstrip("/"),
                              b"".join(chunks) if item.size <= PART else chunks)
            counts.files += 1
            counts.bytes += item.size
    finally:
        bucket.close()
    return counts
