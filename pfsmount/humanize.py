"""How numbers and times read in human output: ``1.707 KiB``, ``4 minutes ago``."""

from __future__ import annotations

import time

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.4g} {unit}" if value >= 100 else f"{value:.3f} {unit}"
    raise AssertionError("unreachable")


def ago(when: float | None, now: float | None = None) -> str:
    if when is None:
        return "-"
    delta = max(0.0, (now if now is not None else time.time()) - when)
    for unit, secs in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if delta >= secs:
            n = int(delta // secs)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"
