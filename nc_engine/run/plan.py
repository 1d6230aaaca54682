"""What a scan will do: its inputs (a config, or a run folder to resume), the (label, trial) jobs
still to run, and how many search together."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nc_engine.config.fingerprint import check_prints, scan_prints
from nc_engine.config.settings import Config, load_config
from nc_engine.detectors.neural_cleanse.groups import choose_group_size
from nc_engine.detectors.neural_cleanse.screening import SCREEN_SEED_OFFSET, screening_wanted
from nc_engine.detectors.neural_cleanse.search import Job
from nc_engine.run.inflight import Key, SlotCheckpoint
from nc_engine.run.prepare import Prepared, Warn, outputs_kind
from nc_engine.run.runfolder import RunFolder
from nc_engine.run.trial import TrialRecord, full_searches
from nc_engine.verdict.rows import kept_trial


def job_seed(seed: int, label: int, trial: int) -> int:
    """Each (label, trial) gets its own seed, derived from the scan seed: same in every strategy."""
    return int(np.random.SeedSequence([seed, label, trial]).generate_state(1)[0] % (2**31))


@dataclass
class ScanInputs:
    """A new scan's config, or a resumed run's folder with its config, samples and finished trials."""

    cfg: Config
    folder: RunFolder | None = None
    indices: tuple[np.ndarray, np.ndarray] | None = None
    previous: list[TrialRecord] | None = None
    previous_seconds: float = 0.0
    inflight: dict[Key, SlotCheckpoint] | None = None  # searches that were running when it stopped

    @classmethod
    def of(
        cls, config: Config | str | Path | None, resume: str | Path | None, warn: Warn, trust_pickle: bool = False
    ) -> ScanInputs:
        """A resume locks its folder (released on leaving the inputs' `with`) and checks it before anything
        is written; its config's trust_pickle counts only with `trust_pickle` given again."""
        if resume is None:
            if config is None:
                raise TypeError("run_scan needs a config or a run folder to resume")
            return cls(config if isinstance(config, Config) else load_config(config))
        folder = RunFolder.existing(resume)
        folder.check_resumable()
        folder.lock(warn)
        try:
            cfg = folder.config_to_load(trust_pickle, "resume with --trust-pickle")
            check_prints(folder.path, folder.read_fingerprints(), scan_prints(cfg, folder.config_text()), cfg)
            indices = folder.read_samples()
            previous = folder.trials(cfg.model.input_shape, warn)
            inflight = folder.inflight(cfg.model.input_shape, warn)
            return cls(cfg, folder, indices, previous, folder.previous_seconds(), inflight)
        except BaseException:
            folder.unlock()
            raise

    def __enter__(self) -> ScanInputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def adopt(self, folder: RunFolder) -> None:
        """A new scan's folder, locked when it was made: released with these inputs, when the scan ends."""
        self.folder = folder

    def release(self) -> None:
        if self.folder is not None:
            self.folder.unlock()


@dataclass
class ScanPlan:
    labels: list[int]
    jobs: list[Job]  # the full-budget (label, trial) searches still to run (screened scans: the confirmed only)
    group: int  # searches optimised together
    previous: list[TrialRecord]  # trials finished by an earlier run of this folder
    labels_done: set[int]
    screen: bool = False  # screen, then confirm (nc_engine/detectors/neural_cleanse/screening.py)
    screen_jobs: list[Job] | None = None  # the screening passes still to run
    inflight: dict[Key, SlotCheckpoint] | None = None  # saved running searches these jobs continue
    stale: list[Key] | None = None  # saved running searches whose trial has finished since


def continued_first(jobs: list[Job], inflight: dict[Key, SlotCheckpoint]) -> list[Job]:
    """The searches that were running go first, in the rows they had, so the groups are formed as in the
    run that stopped (then the rest in plan order, as they would have joined)."""
    running = sorted((j for j in jobs if j.key in inflight), key=lambda j: inflight[j.key].slot)
    return running + [j for j in jobs if j.key not in inflight]


def plan_scan(
    prep: Prepared, previous: list[TrialRecord], inflight: dict[Key, SlotCheckpoint] | None = None
) -> ScanPlan:
    s = prep.cfg.scan
    inflight = dict(inflight or {})
    labels = list(range(prep.cfg.model.num_classes)) if s.labels == "all" else list(s.labels)
    finished = {t.key for t in previous}
    stale = [k for k in inflight if k in finished]
    for k in stale:
        del inflight[k]
    jobs = continued_first(
        [
            Job(label, trial, job_seed(s.seed, label, trial))
            for label in labels
            for trial in range(s.budget().trials)
            if (label, trial, "trial") not in finished
        ],
        inflight,
    )
    screen = screening_wanted(s.screening, len(labels), s.screen_min_labels)
    screen_jobs = continued_first(
        [
            Job(label, 0, job_seed(s.seed, label, SCREEN_SEED_OFFSET), "screen")
            for label in labels
            if (label, 0, "screen") not in finished
        ]
        if screen
        else [],
        inflight,
    )
    # a resume keeps the group size the stopped run had, so its groups (and their sums) are the same
    group = (
        1
        if s.strategy == "sequential"
        else (
            s.group_size
            or max((c.group for c in inflight.values()), default=0)
            or choose_group_size(prep.model, prep.data.x_opt, s.budget().batch_size, max(len(jobs), len(screen_jobs)))
        )
    )
    full = full_searches(previous)
    done = {t.label for t in full if sum(u.label == t.label for u in full) >= s.budget().trials}
    return ScanPlan(
        labels,
        jobs,
        max(1, min(group, max(len(jobs), len(screen_jobs)) or 1)),
        previous,
        done,
        screen,
        screen_jobs,
        inflight,
        stale,
    )


def open_folder(prep: Prepared, inputs: ScanInputs, warn: Warn) -> RunFolder:
    """The resumed folder, or a new locked one holding the resolved config, its fingerprints and the
    samples drawn (removed again if those cannot be written: no husk of a folder is left)."""
    if inputs.folder is not None:
        return inputs.folder
    folder = RunFolder.create(prep.cfg.resolve_path(prep.cfg.output.dir), Path(prep.cfg.model.path).stem or "scan")
    try:
        folder.lock(warn)
        text = folder.write_config(prep.cfg)
        folder.write_fingerprints(scan_prints(prep.cfg, text))
        folder.write_samples(prep.data.opt_idx, prep.data.asr_idx)
    except BaseException:
        folder.discard()
        raise
    inputs.adopt(folder)
    return folder


def repair_triggers(folder: RunFolder, plan: ScanPlan) -> None:
    """Labels finished before an interruption may lack their trigger files if it struck in between."""
    for label in sorted(plan.labels_done):
        if not folder.has_trigger(label):
            kept = kept_trial([t for t in full_searches(plan.previous) if t.label == label])
            folder.save_trigger(label, *folder.trial_arrays(*kept.key))


def header_lines(prep: Prepared, plan: ScanPlan, resumed: bool) -> list[str]:
    """log.txt's account of what this run of the scan is."""
    cfg, s = prep.cfg, prep.cfg.scan
    return [
        f"{'resumed' if resumed else 'scan'} at {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"model {cfg.resolve_path(cfg.model.path)} ({cfg.model.format}), data {cfg.resolve_path(cfg.data.path)}",
        f"device {prep.device}, strategy {s.strategy}, group size {plan.group}, preset {s.preset}: "
        f"samples {len(prep.data.opt_idx)}, batch {s.batch_size}, max steps {s.max_steps}, "
        f"trials {s.trials}, lr {s.lr}, init_cost {s.init_cost}, patience {s.patience}"
        + (
            f"; screening: {s.screen_steps} steps over {s.screen_samples} samples, then the candidates "
            f"and {s.confirm_references} reference labels at the full budget"
            if plan.screen
            else ""
        ),
        f"clean accuracy on the scan samples: {prep.accuracy:.2%}; model outputs taken as "
        f'{outputs_kind(prep.model)} ([model].outputs = "{cfg.model.outputs}")',
    ]
