"""What crosses the socket: JSON encoding of model structs and of errors, shared by both ends.

Listings stream as NDJSON (one JSON value per line). A streamed operation that fails after
its first line ends with an ``{"error": code, "message": ...}`` line.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pfsmount.errors import PfsError

API_PREFIX = "/v1"
_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def encode_line(value: Any) -> bytes:
    return _encoder.encode(value) + b"\n"


def error_body(err: PfsError) -> dict[str, str]:
    return {"error": err.code, "message": err.message}
