"""What every detector besides Neural Cleanse gives a scan: the labels it flags and its evidence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from nc_engine.detectors import margin_result, transform_result


class DetectorResult(Protocol):
    @property
    def flagged(self) -> list[int]: ...

    def to_dict(self) -> dict[str, Any]: ...

    def summary(self) -> str: ...

    def per_label(self) -> str: ...


READERS: dict[str, Callable[[dict[str, Any]], DetectorResult]] = {
    margin_result.NAME: margin_result.MarginResult.from_dict,
    transform_result.NAME: transform_result.TransformResult.from_dict,
}


def read_result(name: str, evidence: object) -> DetectorResult | None:
    """A report's saved evidence of detector `name`, judged again by today's test (None: unknown or damaged)."""
    reader = READERS.get(name)
    if reader is None or not isinstance(evidence, dict):
        return None
    try:
        return reader(evidence)
    except (ArithmeticError, TypeError, ValueError):  # a hand-made file the readers did not foresee
        return None
