"""The run folder: everything a scan leaves behind, written as it happens so an interrupted scan
keeps its finished work and can be resumed. `RunFolder` is the only code that knows the layout:

    RUN/config.toml          the resolved config (absolute paths)
    RUN/fingerprints.json    hashes of config.toml, the model and the data: a resume must match them
    RUN/.lock                the pid and host of the process scanning in the folder
    RUN/samples.npz          indices of the optimisation and held-out ASR samples
    RUN/events.jsonl         every progress event, one JSON object a line
    RUN/log.txt              parameters, per-label results, MAD table, verdict
    RUN/trials/label_NNN_trial_K.{json,npz}   each finished trial: result, raw float mask and pattern
    RUN/trials/label_NNN_screen_K.{json,npz}  the same for a screening pass (screened scans)
    RUN/inflight/label_NNN_{trial,screen}_K.npz  a search still running when the scan stopped (its
                             whole state: a resume continues it); removed once that search finishes
    RUN/triggers/label_NNN_{mask,pattern,fusion}.png, label_NNN.npz   the kept trial of each label
    RUN/report.json, RUN/report.csv           the summary (partial while a scan is unfinished)
    RUN/mitigation/METHOD[-N]/                what `nc-tui mitigate` wrote (-2, -3 ... for later runs)
    RUN/export/RUNNAME-report.{csv,json}      the app's `e` export, named after the run to copy elsewhere
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from nc_engine.config.settings import Config, config_to_toml, load_config
from nc_engine.errors import RunFolderError
from nc_engine.files import (
    JsonFileProblem,
    JsonLines,
    drop_torn_tail,
    foreign_entry,
    npz_problem,
    open_append,
    parse_json,
    read_json_object,
    write_csv,
    write_json,
    write_npz,
    write_png,
    write_raw_npz,
    write_text,
)
from nc_engine.run.inflight import CheckpointProblem, Key, SlotCheckpoint
from nc_engine.run.trial import TrialRecord, problem

# What a damaged .npz raises when opened or read (a truncated zip, a bad deflate stream, a missing array).
NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
Warn = Callable[[str], None]
SAMPLES_BYTES = 2 * 8 * 1_000_000  # samples.npz: two index arrays; no scan draws a million samples


class Recordable(Protocol):
    """What a report offers the run folder (report.Report): its JSON form and its CSV rows."""

    def to_dict(self) -> dict[str, Any]: ...
    def csv_columns(self) -> list[str]: ...
    def csv_rows(self) -> list[dict[str, Any]]: ...


def trigger_paths(label: int) -> dict[str, str]:
    """Where a label's kept trigger lives, relative to the run folder."""
    stem = f"triggers/label_{label:03d}"
    return {
        "mask_png": f"{stem}_mask.png",
        "pattern_png": f"{stem}_pattern.png",
        "fusion_png": f"{stem}_fusion.png",
        "trigger_npz": f"{stem}.npz",
    }


def _trial_stem(label: int, trial: int, stage: str = "trial") -> str:
    """trials/label_NNN_trial_K (a full search) or trials/label_NNN_screen_K (a screening pass)."""
    return f"trials/label_{label:03d}_{'screen' if stage == 'screen' else 'trial'}_{trial}"


def _inflight_name(label: int, trial: int, stage: str = "trial") -> str:
    """inflight/label_NNN_trial_K.npz: the saved state of a search that was running when the scan stopped."""
    return f"inflight/label_{label:03d}_{'screen' if stage == 'screen' else 'trial'}_{trial}.npz"


@contextlib.contextmanager
def writing(folder: Path, what: str = "") -> Iterator[None]:
    """A failed write (disk full, read-only, permissions) as one line naming the folder."""
    try:
        yield
    except OSError as exc:
        target = f" {what}" if what else ""
        raise RunFolderError(f"{folder}: cannot write{target} ({exc.strerror or exc})") from None


def load_npz(path: Path, *keys: str, limit_bytes: int | None = None) -> tuple[np.ndarray, ...]:
    """The named arrays of an .npz the run folder wrote; a missing or damaged file is one line naming it."""
    problem = npz_problem(path, list(keys), limit_bytes) if path.is_file() else None
    if problem is not None:
        raise RunFolderError(f"{path}: damaged ({problem})")
    try:
        with np.load(path, allow_pickle=False) as data:
            return tuple(np.asarray(data[k]) for k in keys)
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing") from None
    except NPZ_ERRORS as exc:
        raise RunFolderError(f"{path}: damaged or truncated ({type(exc).__name__}: {exc})") from None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


class RunFolder:
    """One scan's folder: every read and write of its files goes through here."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, parent: Path, stem: str) -> RunFolder:
        """A new folder inside `parent`, never an existing one."""
        base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        with writing(parent, "a run folder in it"):
            parent.mkdir(parents=True, exist_ok=True)
            for n in range(1000):
                path = parent / (base if n == 0 else f"{base}-{n + 1}")
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                folder = cls(path)
                try:
                    (path / "trials").mkdir()
                    (path / "triggers").mkdir()
                except OSError:
                    folder.discard()
                    raise
                return folder
        raise RunFolderError(f"{parent}: could not create a new run folder")

    def discard(self) -> None:
        """Remove a folder this process just created whose first writes failed: no empty husk is left."""
        shutil.rmtree(self.path, ignore_errors=True)

    @classmethod
    def existing(cls, path: str | Path) -> RunFolder:
        folder = cls(Path(path))
        if not folder.path.is_dir():
            raise RunFolderError(f"{folder.path}: run folder not found")
        problem = foreign_entry(folder.path)
        if problem is not None:  # a folder from elsewhere: a link could send writes outside, a FIFO hang a read
            raise RunFolderError(f"{problem}; a run folder holds only the files a scan wrote")
        return folder

    def file(self, relative: str) -> Path:
        return self.path / relative

    # ---- what the scan was
    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    def write_config(self, cfg: Config) -> str:
        """Writes config.toml; returns its text (what the config fingerprint hashes)."""
        text = config_to_toml(cfg)
        with writing(self.path, "config.toml"):
            write_text(self.config_path, text)
        return text

    def read_config(self) -> Config:
        return load_config(self.config_path)

    def config_to_load(self, trust_pickle: bool, how: str) -> Config:
        """The config, to load its model again (resume, mitigate). Anyone who could write the folder could
        have set trust_pickle = true in it: that counts only when the user says it again (`how`)."""
        cfg = self.read_config()
        if cfg.model.trust_pickle and not trust_pickle:
            raise RunFolderError(
                f"{self.config_path}: says trust_pickle = true, so loading its model runs code from the model "
                f"file; a run folder alone is not trusted for that: {how} if you trust this folder and its model"
            )
        return cfg

    def config_text(self) -> str:
        try:
            return self.config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RunFolderError(f"{self.config_path}: cannot read ({exc})") from None

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.npz"

    def write_samples(self, opt_idx: np.ndarray, asr_idx: np.ndarray) -> None:
        with writing(self.path, "samples.npz"):
            write_npz(self.samples_path, opt_idx=opt_idx, asr_idx=asr_idx)

    def read_samples(self) -> tuple[np.ndarray, np.ndarray]:
        path = self.samples_path
        opt_idx, asr_idx = load_npz(path, "opt_idx", "asr_idx", limit_bytes=SAMPLES_BYTES)
        for a in (opt_idx, asr_idx):
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise RunFolderError(f"{path}: damaged (expected 1-D integer index arrays)")
        return opt_idx, asr_idx

    def write_fingerprints(self, prints: dict[str, str]) -> None:
        with writing(self.path, "fingerprints.json"):
            write_json(self.path / "fingerprints.json", prints)

    def read_fingerprints(self) -> dict[str, str] | None:
        """What the scan started on, or None for a folder from before fingerprints were recorded."""
        path = self.path / "fingerprints.json"
        if not path.exists():
            return None
        try:
            return read_json_object(path)
        except JsonFileProblem as problem:
            raise RunFolderError(f"{path}: damaged ({problem})") from None

    # ---- one owner at a time
    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def lock(self, warn: Warn) -> None:
        """Take RUN/.lock for this process; refuse while a live process holds it, take over a dead one's."""
        me: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
        tmp = self.path / f".lock.{os.getpid()}.tmp"
        with writing(self.path, ".lock"):
            write_json(tmp, me)
            try:
                for _ in range(3):
                    try:
                        os.link(tmp, self.lock_path)  # atomic: fails when a lock exists, never half-written
                        return
                    except FileExistsError:
                        self._clear_stale_lock(me["host"], warn)
            finally:
                tmp.unlink(missing_ok=True)
        raise RunFolderError(f"{self.path}: could not take {self.lock_path}")

    def _lock_owner(self) -> dict[str, Any]:
        try:
            owner = parse_json(self.lock_path.read_text(encoding="utf-8"))
            return owner if isinstance(owner, dict) else {}
        except FileNotFoundError:
            return {"gone": True}
        except (OSError, ValueError):
            return {}

    def _clear_stale_lock(self, host: str, warn: Warn) -> None:
        owner = self._lock_owner()
        if owner.get("gone"):
            return
        pid, where = owner.get("pid"), owner.get("host")
        if isinstance(pid, int) and (where != host or _pid_alive(pid)):
            raise RunFolderError(
                f"{self.path}: in use by process {pid} on {where} (another scan or resume); "
                f"if it is gone, delete {self.lock_path}"
            )
        warn(f"{self.lock_path}: taking over the lock of process {pid} on {where}, which is no longer running")
        self.lock_path.unlink(missing_ok=True)

    def unlock(self) -> None:
        """Release the lock if this process holds it."""
        owner = self._lock_owner()
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            with contextlib.suppress(OSError):
                self.lock_path.unlink()

    @classmethod
    def runs_in(cls, parent: Path) -> list[RunFolder]:
        """The run folders directly inside `parent` (those holding a config.toml), oldest first."""
        try:
            found = [cls(p) for p in parent.iterdir() if (p / "config.toml").is_file()]
        except OSError:  # no such folder yet
            return []
        return sorted(found, key=lambda f: (f.config_path.stat().st_mtime_ns, f.path.name))

    def is_resumable(self) -> bool:
        return self.config_path.is_file() and (self.path / "samples.npz").is_file()

    def check_resumable(self) -> None:
        if not self.is_resumable():
            raise RunFolderError(f"{self.path}: not a resumable run folder (expected config.toml and samples.npz)")

    # ---- trials and triggers
    def save_trial(self, record: TrialRecord, mask: np.ndarray, pattern: np.ndarray) -> None:
        stem = _trial_stem(*record.key)
        with writing(self.path, f"{stem}.npz"):
            write_npz(self.path / f"{stem}.npz", mask=mask.astype(np.float32), pattern=pattern.astype(np.float32))
            write_json(self.path / f"{stem}.json", record.to_dict())  # written last: its presence means "finished"

    def trials(self, input_shape: list[int] | None = None, warn: Warn | None = None) -> list[TrialRecord]:
        """Results of every finished trial. With `input_shape`, a trial whose files are damaged (torn,
        wrong shapes) is left out, with a warning, so that it runs again."""
        out = []
        for path in sorted((self.path / "trials").glob("label_*_*_*.json")):
            read = self._read_trial(path, input_shape)
            if isinstance(read, TrialRecord):
                out.append(read)
            elif warn is not None:
                warn(f"{read}; that trial runs again")
        return out

    def _read_trial(self, path: Path, input_shape: list[int] | None) -> TrialRecord | str:
        """A trial's record, or why its files cannot be trusted."""
        try:
            result = parse_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"{path}: damaged ({type(exc).__name__})"
        wrong = problem(result)
        if wrong is not None:
            return f"{path}: {wrong}"
        record = TrialRecord.from_dict(result)
        if input_shape is None:
            return record
        key = record.key
        try:
            mask, pattern = self.trial_arrays(*key)
        except (RunFolderError, TypeError, ValueError) as exc:
            return str(exc)
        c, h, w = input_shape
        if mask.shape != (h, w) or pattern.shape != (c, h, w):
            return (
                f"{self.path / _trial_stem(*key)}.npz: mask {mask.shape} and pattern "
                f"{pattern.shape} do not fit the input shape {tuple(input_shape)}"
            )
        return record

    def trial_arrays(self, label: int, trial: int, stage: str = "trial") -> tuple[np.ndarray, np.ndarray]:
        mask, pattern = load_npz(self.path / f"{_trial_stem(label, trial, stage)}.npz", "mask", "pattern")
        return mask, pattern

    # ---- searches running when the scan stopped
    def inflight_file(self, key: Key) -> Path:
        return self.file(_inflight_name(*key))

    def save_inflight(self, checkpoints: list[SlotCheckpoint]) -> None:
        """Each running search's state, atomically, one file each (a kill mid-way leaves whole files)."""
        if not checkpoints:
            return
        with writing(self.path, "the running searches"):
            (self.path / "inflight").mkdir(exist_ok=True)
            for ck in checkpoints:
                write_raw_npz(self.inflight_file(ck.key), **ck.to_arrays())

    def drop_inflight(self, key: Key) -> None:
        """A search finished: its running state is no longer needed (the folder goes once empty)."""
        with contextlib.suppress(OSError):
            self.inflight_file(key).unlink(missing_ok=True)
            (self.path / "inflight").rmdir()

    def inflight(self, input_shape: list[int], warn: Warn) -> dict[Key, SlotCheckpoint]:
        """The searches a stopped run saved. One whose file is damaged, or does not fit the input shape
        or its own name, is left out with one warning line: that search starts again."""
        out: dict[Key, SlotCheckpoint] = {}
        for path in sorted((self.path / "inflight").glob("label_*_*_*.npz")):
            problem = npz_problem(path, limit_bytes=(64 * math.prod(input_shape) + 1024) * 8 + (1 << 20))
            if problem is not None:
                warn(f"{path}: not a usable saved search ({problem}); that search starts again")
                continue
            try:
                with np.load(path, allow_pickle=False) as data:
                    ck = SlotCheckpoint.from_arrays(data, input_shape)
                if path != self.inflight_file(ck.key):
                    raise CheckpointProblem(f"it holds label {ck.label} {ck.stage} {ck.trial}")
            except (CheckpointProblem, *NPZ_ERRORS) as exc:
                warn(f"{path}: not a usable saved search ({type(exc).__name__}: {exc}); that search starts again")
                continue
            out[ck.key] = ck
        return out

    def save_trigger(self, label: int, mask: np.ndarray, pattern: np.ndarray) -> None:
        """The kept trigger of a label as PNGs (mask, pattern, fusion = mask * pattern) and raw floats."""
        paths = trigger_paths(label)
        with writing(self.path, f"the trigger of label {label}"):
            write_png(self.file(paths["mask_png"]), mask)
            write_png(self.file(paths["pattern_png"]), pattern)
            write_png(self.file(paths["fusion_png"]), mask[None] * pattern)
            write_npz(self.file(paths["trigger_npz"]), mask=mask.astype(np.float32), pattern=pattern.astype(np.float32))

    def mask_area(self, labels: list[int]) -> int | None:
        """H*W of the saved trigger masks (the report does not record the input shape); None if none is saved
        and readable (a damaged file costs the table only its "degenerate" marks, never the screen)."""
        for label in labels:
            try:
                arrays = self.trigger_arrays(label)
            except RunFolderError:
                continue
            if arrays is not None:
                return int(arrays[0].shape[-2] * arrays[0].shape[-1])
        return None

    def has_trigger(self, label: int) -> bool:
        """Whether the kept trigger's raw floats are there and readable."""
        try:
            return self.trigger_arrays(label) is not None
        except RunFolderError:
            return False

    def trigger_file(self, label: int) -> Path:
        """The raw float arrays of a label's kept trigger."""
        return self.file(trigger_paths(label)["trigger_npz"])

    def trigger_arrays(self, label: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The raw float (mask, pattern) of a label's kept trigger, or None when it was not written."""
        path = self.trigger_file(label)
        if not path.is_file():
            return None
        mask, pattern = load_npz(path, "mask", "pattern")  # PNGs are quantised and rescaled: the floats are the trigger
        return mask, pattern

    # ---- the summary, the log and the event stream
    # ---- detectors beyond Neural Cleanse: one JSON file each
    def detector_path(self, name: str) -> Path:
        return self.path / "detectors" / f"{name}.json"

    def save_detector(self, name: str, result: dict[str, Any]) -> None:
        with writing(self.path, f"the {name} detector's result"):
            self.detector_path(name).parent.mkdir(exist_ok=True)
            write_json(self.detector_path(name), result)

    def read_detector(self, name: str, warn: Warn) -> dict[str, Any] | None:
        """A detector's saved result, or None when absent or damaged (then it runs again; warned)."""
        path = self.detector_path(name)
        if not path.exists():
            return None
        try:
            return read_json_object(path)
        except JsonFileProblem as problem:
            warn(f"{path}: damaged ({problem}); the {name} detector runs again")
            return None

    @property
    def report_path(self) -> Path:
        return self.path / "report.json"

    def write_report(self, report: Recordable) -> None:
        with writing(self.path, "the report"):
            write_json(self.report_path, report.to_dict())
            write_csv(self.path / "report.csv", report.csv_columns(), report.csv_rows())

    def has_report(self) -> bool:
        return self.report_path.exists()

    def read_report_dict(self) -> dict[str, Any]:
        """report.json as a JSON object, with a clear error when this is not a run folder."""
        path = self.report_path
        if not path.is_file():
            raise RunFolderError(f"{self.path}: no report.json; expected a folder written by `nc-tui scan`")
        try:
            data = parse_json(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunFolderError(f"{path}: not valid JSON ({exc})") from None
        except OSError as exc:
            raise RunFolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if not isinstance(data, dict):
            raise RunFolderError(f"{path}: expected a JSON object, got {type(data).__name__}")
        return data

    def previous_seconds(self) -> float:
        """Time spent by earlier runs of this folder (0 when none finished its report)."""
        try:
            seconds = float(self.read_report_dict().get("seconds") or 0.0)
        except (RunFolderError, TypeError, ValueError):
            return 0.0  # a damaged report.json never blocks a resume: only its time is lost
        return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0

    def events(self) -> JsonLines:
        """events.jsonl for appending; created on the first event, a torn last line dropped then."""
        return JsonLines(self.path / "events.jsonl")

    def read_events(self) -> list[dict[str, Any]]:
        """The events recorded so far (whole lines only; a torn or damaged line is skipped)."""
        out = []
        with contextlib.suppress(OSError):
            for line in (self.path / "events.jsonl").read_text(encoding="utf-8", errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    record = parse_json(line)
                    if isinstance(record, dict):
                        out.append(record)
        return out

    def log(self) -> IO[str]:
        with writing(self.path, "log.txt"):
            drop_torn_tail(self.path / "log.txt")
            return open_append(self.path / "log.txt")

    @staticmethod
    def mitigation_events(out: Path) -> JsonLines:
        """events.jsonl of one mitigation, in its folder from mitigation_dir."""
        return JsonLines(out / "events.jsonl")

    @staticmethod
    def write_mitigation_report(out: Path, report: dict[str, Any]) -> Path:
        write_json(out / "report.json", report)
        return out / "report.json"

    def export_stem(self) -> Path:
        """Where the app's export goes (RUN/export/RUNNAME-report), the folder created."""
        folder = self.path / "export"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.path.name}-report"

    def mitigation_dir(self, method: str) -> Path:
        """A new folder for each mitigation run: METHOD, then METHOD-2, METHOD-3 ...; an earlier result
        (perhaps the one good repair) is never overwritten. mkdir without exist_ok claims the name atomically."""
        parent = self.path / "mitigation"
        with writing(self.path, "mitigation"):
            parent.mkdir(parents=True, exist_ok=True)
        n = 1
        with writing(self.path, "mitigation"):
            while True:
                out = parent / (method if n == 1 else f"{method}-{n}")
                try:
                    out.mkdir()
                    return out
                except FileExistsError:
                    n += 1
