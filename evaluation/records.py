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


def is_built(folder: Path) -> bool:
    """A draw model whose build finished (the manifest is written last)."""
    return (folder / "model.pt").is_file() and (folder / "manifest.json").is_file()


def training_of_built(folder: Path) -> dict | None:
    """How the model in `folder` was trained (None: the development draw's first build, before manifests
    said so)."""
    return json.loads((folder / "manifest.json").read_text()).get("training")


def built_now(record: dict, root: Path) -> bool:
    """Whether `record` measured the model as it is built under `root` now (the same training)."""
    folder = root / record["model"]
    return (folder / "manifest.json").is_file() and record.get("training") == training_of_built(folder)
