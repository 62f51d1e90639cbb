"""The ``s3://BUCKET/PREFIX`` object store: packs as S3 objects, read back by ranged GET.

Owns talking to S3 for ``ObjectStore`` (``pfsmount/store/objects.py``): where the endpoint,
credentials and region come from, timeouts and retries, and turning S3's failures into the
store's errors. It must not know what is inside an object, cache anything on local disk (a
read cache belongs above it), or make buckets: the bucket is the operator's.

Client: obstore (Rust ``object_store`` under Python), chosen over boto3 by
``bench/s3_clients.py`` against SeaweedFS on this 2-core machine: medians of 3, MB/s, and
the client's own CPU per MB (which other load does not change). The machine was busy (load
average 7 to 12 from other work), which holds both clients' throughput down alike:

===============================  ======  =======  =====  ==============================
what                              boto3  obstore  ratio  client CPU ms/MB boto3/obstore
===============================  ======  =======  =====  ==============================
put 1 GiB (multipart)                51       54  1.05x                       2.0 / 1.4
get 1 GiB                           318      368  1.16x                       0.8 / 0.5
put 64 x 4 MiB, one at a time        48       50  1.04x                       2.3 / 1.0
64 KiB ranged GETs, 1 thread          5        9  1.84x                      29.3 / 5.1
64 KiB ranged GETs, 4 threads         7        9  1.33x                      28.9 / 7.0
===============================  ======  =======  =====  ==============================

obstore is as fast or faster on every row and cheaper on every row, most of all on small
ranged GETs, the request a cold read through the mount or a datum's input makes: boto3
spends about 1.9 ms of CPU per 64 KiB request, in Python under the GIL (signing, event
hooks, parsing), obstore about 0.3 ms, mostly in Rust with the GIL released. It also
retries transient failures with jittered backoff itself, uploads a large object as a
multipart upload that becomes visible only when it completes, and is one wheel with no
dependencies. What it lacks, reading ``~/.aws`` profiles, is done here.

Settings are read the way AWS tools read them, first found wins:

- endpoint: the URL's ``?endpoint=``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the
  profile's ``endpoint_url``, else AWS itself;
- credentials: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), the
  profile (``AWS_PROFILE``, else ``default``) in ``AWS_SHARED_CREDENTIALS_FILE``
  (``~/.aws/credentials``) then ``AWS_CONFIG_FILE`` (``~/.aws/config``), else obstore's own
  chain (web identity, container and instance credentials);
- region: the URL's ``?region=``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile's
  ``region``, else ``us-east-1``;
- attempts: ``AWS_MAX_ATTEMPTS`` (default 10: the first try and 9 retries, none starting
  more than 30 s after the first try).

A put is one S3 PUT, or one multipart upload above 5 MB: either way the object appears
whole when the upload completes and not before, so a pack whose upload failed is never
visible. A server that cannot be reached, refuses the credentials, or has no such bucket is
one ``StorageUnavailable`` line naming the endpoint and bucket; a missing or short object is
``Corrupt``.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import obstore
from obstore.exceptions import (
    BaseError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from pfsmount.errors import Corrupt, InvalidArgument, StorageUnavailable
from pfsmount.store.objects import ObjectStore, register

if TYPE_CHECKING:
    from obstore.store import BackoffConfig, ClientConfig, RetryConfig, S3Config

CONNECT_TIMEOUT = timedelta(seconds=5)
REQUEST_TIMEOUT = timedelta(seconds=120)  # a whole request: a 5 MB part or a range
ATTEMPTS = 10  # with the backoff below, rides out a server restart of several seconds
RETRY_FOR = timedelta(seconds=30)  # no retry starts later than this after the first try
# obstore draws each wait at random between init_backoff and base x the previous wait, so
# base 4 doubles the wait on average: 0.1, 0.2, 0.4 ... up to 5 s, about 20 s in all over
# 9 retries (base 2 would keep it near 0.3 s: 9 retries in 3 s, shorter than a restart).
BACKOFF: BackoffConfig = {"init_backoff": timedelta(milliseconds=100),
                          "max_backoff": timedelta(seconds=5), "base": 4}
QUERY_KEYS = ("endpoint", "region")


class S3Settings:
    """Where and as whom to reach S3: resolved once, from the URL, the environment and the
    AWS profile files (see the module docstring for the order)."""

    def __init__(self, url: str, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        try:
            self.bucket, self.prefix, query = parse_url(url)
        except InvalidArgument as e:
            raise InvalidArgument(f"object store {url!r}: {e.message}") from None
        self.url = url
        self.profile_name = env.get("AWS_PROFILE") or "default"
        profile = read_profile(self.profile_name, env, required="AWS_PROFILE" in env)
        self.endpoint = (query.get("endpoint") or env.get("AWS_ENDPOINT_URL_S3")
                         or env.get("AWS_ENDPOINT_URL") or profile.get("endpoint_url"))
        self.region = (query.get("region") or env.get("AWS_REGION")
                       or env.get("AWS_DEFAULT_REGION") or profile.get("region")
                       or "us-east-1")
        # Keys from one place only, never a key from one and a secret from another; none
        # found leaves obstore's own chain (web identity, container, instance metadata).
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            source: Mapping[str, str] = {
                "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
                "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
                "aws_session_token": env.get("AWS_SESSION_TOKEN", "")}
        else:
            source = profile
        self.access_key = source.get("aws_access_key_id") or None
        self.secret_key = source.get("aws_secret_access_key") or None
        self.session_token = source.get("aws_session_token") or None
        self.attempts = attempts(env)

    @property
    def where(self) -> str:
        """The bucket and server, as an error message names them."""
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint}"
                                                       if self.endpoint else "")


def parse_url(url: str) -> tuple[str, str, dict[str, str]]:
    """``s3://BUCKET/PREFIX?endpoint=..&region=..``: the bucket, the prefix (no slashes
    around it) and the settings, checked without reading any (egress checks a spec's URL
    with it before a job runs)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3" or not parts.netloc:
        raise InvalidArgument("an S3 URL names a bucket, as in s3://BUCKET/PREFIX")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - set(QUERY_KEYS))
    if unknown:
        raise InvalidArgument(f"unknown setting {unknown[0]!r} "
                              f"(known: {', '.join(QUERY_KEYS)})")
    return parts.netloc, parts.path.strip("/"), query


def attempts(env: Mapping[str, str]) -> int:
    value = env.get("AWS_MAX_ATTEMPTS")
    if value is None:
        return ATTEMPTS
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise InvalidArgument(f"AWS_MAX_ATTEMPTS={value!r}: expected a whole number >= 1")
    return n


def read_profile(name: str, env: Mapping[str, str], required: bool) -> dict[str, str]:
    """Profile ``name``'s keys from the shared credentials file and then the config file
    (where its section is ``[profile NAME]``, except ``[default]``); credentials-file keys
    win, as in the AWS CLI. A profile named by ``AWS_PROFILE`` that neither file has is an
    error, as it is there."""
    home = Path(env.get("HOME") or Path.home())
    files = [
        (Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"), name),
        (Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config"),
         name if name == "default" else f"profile {name}"),
    ]
    found: dict[str, str] = {}
    seen = False
    for path, section in files:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error as e:
            raise InvalidArgument(f"cannot read AWS settings from {path}: "
                                  f"{str(e).splitlines()[0]}") from None
        if parser.has_section(section):
            seen = True
            for key, value in parser.items(section):
                found.setdefault(key, value.strip())
    if required and not seen:
        raise InvalidArgument(f"AWS profile {name!r} (AWS_PROFILE) is in neither "
                              f"{files[0][0]} nor {files[1][0]}")
    return found


def unavailable(settings: S3Settings, err: BaseException, what: str) -> StorageUnavailable:
    """One line for an S3 failure that says nothing about the data: the cause, stripped of
    the client's nested detail, plus what to check."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    text = lines[0]  # the rest is the client's debug dump
    lowered = str(err).lower()
    if "nosuchbucket" in lowered:
        cause = f"there is no bucket {settings.bucket!r} (create it first)"
    elif isinstance(err, PermissionDeniedError | UnauthenticatedError) or any(
            code in lowered for code in ("accessdenied", "signaturedoesnotmatch",
                                         "invalidaccesskeyid", "403 forbidden")):
        cause = ("the server refused the credentials (check AWS_ACCESS_KEY_ID and "
                 "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
    elif any(sign in lowered for sign in ("error sending request", "connection refused",
                                          "dns error", "timed out", "connection reset")):
        cause = "the server does not answer (is it running, and is the endpoint right?)"
    else:
        cause = text[:300]
    return StorageUnavailable(f"cannot {what} in {settings.where}: {cause}")


class S3ObjectStore:
    """Objects under ``PREFIX/`` in ``BUCKET``. Opening checks the bucket once (one LIST of
    at most one key), so a wrong endpoint, credentials or bucket fail at start, not at the
    first read. Thread-safe: obstore's client is shared and releases the GIL while it waits.
    """

    def __init__(self, url: str, environ: Mapping[str, str] | None = None, *,
                 attempts: int | None = None, retry_for: timedelta = RETRY_FOR,
                 connect_timeout: timedelta = CONNECT_TIMEOUT,
                 request_timeout: timedelta = REQUEST_TIMEOUT) -> None:
        self.settings = s = S3Settings(url, environ)
        config: S3Config = {"region": s.region}
        if s.endpoint:
            config["endpoint"] = s.endpoint
        if s.access_key and s.secret_key:
            config["access_key_id"] = s.access_key
            config["secret_access_key"] = s.secret_key
            if s.session_token:
                config["session_token"] = s.session_token
        client: ClientConfig = {
            "connect_timeout": connect_timeout, "timeout": request_timeout,
            "allow_http": bool(s.endpoint and s.endpoint.startswith("http://"))}

        def store(tries: int) -> S3Store:
            retry: RetryConfig = {"max_retries": tries - 1, "retry_timeout": retry_for,
                                  "backoff": BACKOFF}
            return S3Store(s.bucket, prefix=s.prefix or None, config=config,
                           client_options=client, retry_config=retry)

        tries = attempts or s.attempts
        self._store = store(tries)
        # Opening asks with two retries at most: a wrong endpoint, key or bucket is
        # reported in a second, not after the retries that ride out an outage later.
        self._check_bucket(store(min(3, tries)))

    def _check_bucket(self, probe: S3Store) -> None:
        try:
            next(iter(obstore.list(probe, chunk_size=1)), None)
        except (BaseError, OSError) as e:
            raise unavailable(self.settings, e, "list objects") from None

    def _fail(self, err: BaseException, what: str) -> StorageUnavailable:
        return unavailable(self.settings, err, what)

    def put_file(self, name: str, path: Path) -> None:
        """One PUT, or a multipart upload above 5 MB (12 parts in flight): visible only
        once complete. ``path`` is removed afterwards, as the local backend moves it."""
        try:
            obstore.put(self._store, name, path)
        except (BaseError, OSError) as e:
            raise self._fail(e, f"put pack object {name}") from None
        path.unlink(missing_ok=True)

    def put_stream(self, name: str, data: bytes | Iterable[bytes]) -> None:
        """An object from bytes (one PUT) or from chunks (a multipart upload of 5 MB parts,
        so a large file is never held whole): how egress writes a commit's files. Visible
        only once complete."""
        try:
            obstore.put(self._store, name, data, use_multipart=not isinstance(data, bytes))
        except (BaseError, OSError) as e:
            raise self._fail(e, f"put object {name}") from None

    def _get(self, name: str, offset: int, length: int) -> obstore.Bytes | None:
        """The bytes at ``offset`` (fewer where the object ends), or None when ``offset``
        is at or past its end (S3 answers 416)."""
        try:
            return obstore.get_range(self._store, name, start=offset, length=length)
        except FileNotFoundError as e:
            if "NoSuchBucket" in str(e):
                raise self._fail(e, f"read pack object {name}") from None
            raise Corrupt(f"pack object {name} is missing from "
                          f"{self.settings.where}") from None
        except (BaseError, OSError) as e:
            if "416 Range Not Satisfiable" in str(e) or "InvalidRange" in str(e):
                return None
            raise self._fail(e, f"read pack object {name}") from None

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        data = self._get(name, offset, length) if length else b""
        if data is None or len(data) != length:
            raise Corrupt(f"pack object {name} is shorter than {offset + length} bytes")
        return bytes(data)

    def read_into(self, name: str, offset: int, buffer: memoryview) -> int:
        if not len(buffer):
            return 0
        data = self._get(name, offset, len(buffer))
        if data is None:
            return 0
        n = len(data)
        buffer[:n] = memoryview(data)
        return n

    def size(self, name: str) -> int | None:
        try:
            meta = obstore.head(self._store, name)
        except FileNotFoundError:
            return None
        except (BaseError, OSError) as e:
            raise self._fail(e, f"look up pack object {name}") from None
        return int(meta["size"])

    def list(self) -> Iterator[str]:
        try:
            for batch in obstore.list(self._store, chunk_size=1000):
                for meta in batch:
                    yield meta["path"]
        except (BaseError, OSError) as e:
            raise self._fail(e, "list pack objects") from None

    def delete(self, name: str) -> None:
        try:
            obstore.delete(self._store, name)
        except FileNotFoundError:
            pass
        except (BaseError, OSError) as e:
            raise self._fail(e, f"delete pack object {name}") from None

    def close(self) -> None:
        """Nothing to release: obstore's connection pool goes with the store object."""


def open_s3(url: str) -> ObjectStore:
    return S3ObjectStore(url)


register("s3", open_s3)
