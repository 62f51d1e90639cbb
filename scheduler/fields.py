"""Reading one part of a spec into a checked type, or refusing it with one line naming the field.

Shared by the pipeline spec (``scheduler.spec``), its input kinds (``scheduler.inputs``) and
the 1.x job spec (``scheduler.jobspec``), so that every refusal reads the same way:
``spec field input.cross[1].pfs.glob: expected `str`, got `int```. Nothing here knows what a
field means.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

import msgspec

from pfsmount.errors import InvalidArgument

_T = TypeVar("_T")

Name = Annotated[str, msgspec.Meta(min_length=1)]


def typed(raw: Any, kind: type[_T], where: str) -> _T:
    """``raw`` as ``kind``, or the first wrong field as one line: ``spec field a.b ...``.
    ``where`` is the path of ``raw`` in the spec with a trailing dot (``input.pfs.``), or ""
    for the whole spec. ``strict=False`` reads the quoted numbers Pachyderm's JSON often has
    (``"constant": "1"``)."""
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as e:
        text, _, at = str(e).partition(" - at `$")
        at = (where + at.rstrip("`").lstrip(".")).rstrip(".")
        unknown = re.fullmatch(r"Object contains unknown field `(.+)`", text)
        if unknown:
            field = f"{at}.{unknown[1]}" if at else unknown[1]
            raise InvalidArgument(f"spec field {field} is not supported by pfsmount") from None
        missing = re.fullmatch(r"Object missing required field `(.+)`", text)
        if missing:
            field = f"{at}.{missing[1]}" if at else missing[1]
            raise InvalidArgument(f"spec field {field} is missing") from None
        raise InvalidArgument(f"spec field {at or '(the spec)'}: "
                              f"{text[:1].lower()}{text[1:]}") from None


def without_nulls(value: Any) -> Any:
    """A null field reads as an absent one, as in Pachyderm's own JSON."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value
