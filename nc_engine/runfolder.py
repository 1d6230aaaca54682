"""The run folder: everything a scan leaves behind, written as it happens so an interrupted scan
keeps its finished work and can be resumed.

    RUN/config.toml          the resolved config (absolute paths)
    RUN/samples.npz          indices of the optimisation and held-out ASR samples
    RUN/events.jsonl         every progress event, one JSON object a line
    RUN/log.txt              parameters, per-label results, MAD table, verdict
    RUN/trials/label_NNN_trial_K.{json,npz}   each finished trial: result, raw float mask and pattern
    RUN/triggers/label_NNN_{mask,pattern,fusion}.png, label_NNN.npz   the kept trial of each label
    RUN/report.json, RUN/report.csv           the summary (partial while a scan is unfinished)
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import RunFolderError

SCHEMA = 1


def create_run_dir(parent: Path, stem: str) -> Path:
    """A new folder inside `parent`, never an existing one."""
    parent.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1000):
        path = parent / (base if n == 0 else f"{base}-{n + 1}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / "trials").mkdir()
        (path / "triggers").mkdir()
        return path
    raise RunFolderError(f"{parent}: could not create a new run folder")


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_json(path: Path, data: Any) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class EventLog:
    """events.jsonl, appended and flushed one event at a time."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def write(self, event: dict) -> None:
        self._file.write(json.dumps(_json_safe(event)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def trial_stem(label: int, trial: int) -> str:
    return f"label_{label:03d}_trial_{trial}"


def save_trial(run: Path, result: dict, mask: np.ndarray, pattern: np.ndarray) -> None:
    stem = trial_stem(result["label"], result["trial"])
    np.savez_compressed(run / "trials" / f"{stem}.npz", mask=mask.astype(np.float32),
                        pattern=pattern.astype(np.float32))
    write_json(run / "trials" / f"{stem}.json", result)  # written last: its presence means "finished"


def load_trials(run: Path) -> list[dict]:
    """Results of every finished trial in the run folder."""
    out = []
    for path in sorted((run / "trials").glob("label_*_trial_*.json")):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, OSError):
            continue  # an unfinished write: the trial runs again
    return out


def load_trial_arrays(run: Path, label: int, trial: int) -> tuple[np.ndarray, np.ndarray]:
    with np.load(run / "trials" / f"{trial_stem(label, trial)}.npz") as data:
        return data["mask"], data["pattern"]


def _to_png(array: np.ndarray, path: Path) -> None:
    """[0, 1] floats -> 8-bit PNG; (H, W) grey or (C, H, W)."""
    a = np.clip(np.rint(np.asarray(array, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    Image.fromarray(a).save(path)


def save_trigger_images(run: Path, label: int, mask: np.ndarray, pattern: np.ndarray) -> dict[str, str]:
    """The kept trigger of a label as PNGs (mask, pattern, fusion = mask * pattern) and raw floats."""
    stem = f"triggers/label_{label:03d}"
    paths = {"mask_png": f"{stem}_mask.png", "pattern_png": f"{stem}_pattern.png",
             "fusion_png": f"{stem}_fusion.png", "trigger_npz": f"{stem}.npz"}
    _to_png(mask, run / paths["mask_png"])
    _to_png(pattern, run / paths["pattern_png"])
    _to_png(mask[None] * pattern, run / paths["fusion_png"])
    np.savez_compressed(run / paths["trigger_npz"], mask=mask.astype(np.float32),
                        pattern=pattern.astype(np.float32))
    return paths


def write_csv(path: Path, labels: list[dict]) -> None:
    columns = ["label", "name", "l1_norm", "asr", "anomaly_index", "flagged", "converged", "steps",
               "seconds", "mask_png"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in labels:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])


def read_report(run: Path) -> dict:
    """report.json of a run folder, with a clear error when it is not one."""
    if not run.exists():
        raise RunFolderError(f"{run}: run folder not found")
    path = run / "report.json"
    if not path.is_file():
        raise RunFolderError(f"{run}: no report.json; expected a folder written by `nc-tui scan`")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc})") from None
    if report.get("schema") != SCHEMA:
        raise RunFolderError(f"{path}: report schema {report.get('schema')!r}, expected {SCHEMA}")
    return report
