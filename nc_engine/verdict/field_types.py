"""The types a report's dataclass fields declare, checked when a report.json is read back: a field of
the wrong type (a string where a number goes) would fail far away, in formatting, as a traceback."""

from __future__ import annotations

import dataclasses
from typing import Any

# float fields may hold null: NaN is written as null (files.json_safe)
_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float, type(None)),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
    "list": (list,),
    "dict": (dict,),
}


def _fits(value: Any, declared: str) -> bool:
    for option in (part.strip() for part in declared.split("|")):
        outer, _, inner = option.partition("[")
        kinds = _KINDS.get(outer)
        if kinds is None:  # Any, or a type of our own: checked where it is built
            return True
        if isinstance(value, bool) and bool not in kinds:
            continue
        if not isinstance(value, kinds):
            continue
        if isinstance(value, list) and inner.rstrip("]") in _KINDS:
            return all(_fits(item, inner.rstrip("]")) for item in value)
        return True
    return False


def wrong_field(obj: Any, skip: tuple[str, ...] = ()) -> str | None:
    """The first field of a dataclass instance whose value is not of its declared type, as text; None
    when all are."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name not in skip and not _fits(value, str(f.type)):
            return f"{f.name} = {str(value)[:40]!r} (expected {f.type})"
    return None
