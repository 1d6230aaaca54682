"""A campaign's records: one JSON object per line, appended as each measurement finishes, never replaced."""

from __future__ import annotations

import json
from pathlib import Path


def read_records(path: Path) -> list[dict]:
    """Every record in `path` ([] when there is none yet)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def append_record(path: Path, record: dict) -> None:
    """Add one record at the end (its folder made if needed), flushed before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
