"""The run folder: everything a scan leaves behind, written as it happens so an interrupted scan
keeps its finished work and can be resumed. `RunFolder` is the only code that knows the layout:

    RUN/config.toml          the resolved config (absolute paths)
    RUN/samples.npz          indices of the optimisation and held-out ASR samples
    RUN/events.jsonl         every progress event, one JSON object a line
    RUN/log.txt              parameters, per-label results, MAD table, verdict
    RUN/trials/label_NNN_trial_K.{json,npz}   each finished trial: result, raw float mask and pattern
    RUN/triggers/label_NNN_{mask,pattern,fusion}.png, label_NNN.npz   the kept trial of each label
    RUN/report.json, RUN/report.csv           the summary (partial while a scan is unfinished)
    RUN/mitigation/METHOD[-N]/                what `nc-tui mitigate` wrote (-2, -3 ... for later runs)
    RUN/export/RUNNAME-report.{csv,json}      the app's `e` export, named after the run to copy elsewhere
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from .config import Config, config_to_toml, load_config
from .errors import RunFolderError
from .files import JsonLines, write_csv, write_json, write_npz, write_png, write_text


class Recordable(Protocol):
    """What a report offers the run folder (report.Report): its JSON form and its CSV rows."""

    def to_dict(self) -> dict[str, Any]: ...
    def csv_columns(self) -> list[str]: ...
    def csv_rows(self) -> list[dict[str, Any]]: ...


def trigger_paths(label: int) -> dict[str, str]:
    """Where a label's kept trigger lives, relative to the run folder."""
    stem = f"triggers/label_{label:03d}"
    return {"mask_png": f"{stem}_mask.png", "pattern_png": f"{stem}_pattern.png",
            "fusion_png": f"{stem}_fusion.png", "trigger_npz": f"{stem}.npz"}


def _trial_stem(label: int, trial: int) -> str:
    return f"trials/label_{label:03d}_trial_{trial}"


class RunFolder:
    """One scan's folder: every read and write of its files goes through here."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, parent: Path, stem: str) -> RunFolder:
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
            return cls(path)
        raise RunFolderError(f"{parent}: could not create a new run folder")

    @classmethod
    def existing(cls, path: str | Path) -> RunFolder:
        folder = cls(Path(path))
        if not folder.path.is_dir():
            raise RunFolderError(f"{folder.path}: run folder not found")
        return folder

    def file(self, relative: str) -> Path:
        return self.path / relative

    # ---- what the scan was
    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    def write_config(self, cfg: Config) -> None:
        write_text(self.config_path, config_to_toml(cfg))

    def read_config(self) -> Config:
        return load_config(self.config_path)

    def write_samples(self, opt_idx: np.ndarray, asr_idx: np.ndarray) -> None:
        write_npz(self.path / "samples.npz", opt_idx=opt_idx, asr_idx=asr_idx)

    def read_samples(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.path / "samples.npz") as saved:
            return saved["opt_idx"], saved["asr_idx"]

    def check_resumable(self) -> None:
        if not self.config_path.is_file() or not (self.path / "samples.npz").is_file():
            raise RunFolderError(f"{self.path}: not a resumable run folder (expected config.toml and samples.npz)")

    # ---- trials and triggers
    def save_trial(self, result: dict, mask: np.ndarray, pattern: np.ndarray) -> None:
        stem = _trial_stem(result["label"], result["trial"])
        write_npz(self.path / f"{stem}.npz", mask=mask.astype(np.float32), pattern=pattern.astype(np.float32))
        write_json(self.path / f"{stem}.json", result)  # written last: its presence means "finished"

    def trials(self) -> list[dict]:
        """Results of every finished trial."""
        out = []
        for path in sorted((self.path / "trials").glob("label_*_trial_*.json")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, OSError):
                continue  # an unfinished write: the trial runs again
        return out

    def trial_arrays(self, label: int, trial: int) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.path / f"{_trial_stem(label, trial)}.npz") as data:
            return data["mask"], data["pattern"]

    def save_trigger(self, label: int, mask: np.ndarray, pattern: np.ndarray) -> None:
        """The kept trigger of a label as PNGs (mask, pattern, fusion = mask * pattern) and raw floats."""
        paths = trigger_paths(label)
        write_png(self.file(paths["mask_png"]), mask)
        write_png(self.file(paths["pattern_png"]), pattern)
        write_png(self.file(paths["fusion_png"]), mask[None] * pattern)
        write_npz(self.file(paths["trigger_npz"]), mask=mask.astype(np.float32), pattern=pattern.astype(np.float32))

    def mask_area(self, labels: list[int]) -> int | None:
        """H*W of the saved trigger masks (the report does not record the input shape); None if none is saved."""
        for label in labels:
            arrays = self.trigger_arrays(label)
            if arrays is not None:
                return int(arrays[0].shape[-2] * arrays[0].shape[-1])
        return None

    def has_trigger(self, label: int) -> bool:
        return self.file(trigger_paths(label)["trigger_npz"]).is_file()

    def trigger_arrays(self, label: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The raw float (mask, pattern) of a label's kept trigger, or None when it was not written."""
        path = self.file(trigger_paths(label)["trigger_npz"])
        if not path.is_file():
            return None
        with np.load(path) as t:  # PNGs are quantised and rescaled: the raw floats are the trigger
            return t["mask"], t["pattern"]

    # ---- the summary, the log and the event stream
    def write_report(self, report: Recordable) -> None:
        write_json(self.path / "report.json", report.to_dict())
        write_csv(self.path / "report.csv", report.csv_columns(), report.csv_rows())

    def read_report_dict(self) -> dict[str, Any]:
        """report.json as a JSON object, with a clear error when this is not a run folder."""
        path = self.path / "report.json"
        if not path.is_file():
            raise RunFolderError(f"{self.path}: no report.json; expected a folder written by `nc-tui scan`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunFolderError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RunFolderError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return data

    def previous_seconds(self) -> float:
        """Time spent by earlier runs of this folder (0 when none finished its report)."""
        try:
            return float(self.read_report_dict().get("seconds") or 0.0)
        except (RunFolderError, TypeError, ValueError):
            return 0.0

    def events(self) -> JsonLines:
        return JsonLines(self.path / "events.jsonl")

    def log(self) -> IO[str]:
        return (self.path / "log.txt").open("a", encoding="utf-8")

    def export_stem(self) -> Path:
        """Where the app's export goes (RUN/export/RUNNAME-report), the folder created."""
        folder = self.path / "export"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.path.name}-report"

    def mitigation_dir(self, method: str) -> Path:
        """A new folder for each mitigation run: METHOD, then METHOD-2, METHOD-3 ...; an earlier result
        (perhaps the one good repair) is never overwritten. mkdir without exist_ok claims the name atomically."""
        parent = self.path / "mitigation"
        parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while True:
            out = parent / (method if n == 1 else f"{method}-{n}")
            try:
                out.mkdir()
                return out
            except FileExistsError:
                n += 1
