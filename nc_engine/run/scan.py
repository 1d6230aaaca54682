"""run_scan: config in; model and data loaded; every label's trigger reversed; ASR, MAD, verdict.

It runs in the caller's thread and speaks only through events: the run folder's recorder, the
console and the app are listeners of the same stream. Setting `stop` ends it at the next
mini-batch with a resumable run folder.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nc_engine.compute.backend import Compute, open_compute
from nc_engine.compute.request import SearchRequest
from nc_engine.config.settings import Config
from nc_engine.detectors.neural_cleanse.asr import attack_success_rate
from nc_engine.detectors.neural_cleanse.screening import Selection, choose, shift_decides, subset_indices, widen
from nc_engine.detectors.neural_cleanse.search import StepStats, TrialOutcome
from nc_engine.detectors.result import DetectorResult
from nc_engine.errors import RunFolderError
from nc_engine.run import events as ev
from nc_engine.run.detectors import run_detectors
from nc_engine.run.inflight import Carry, SlotCheckpoint
from nc_engine.run.plan import ScanInputs, ScanPlan, header_lines, open_folder, plan_scan, repair_triggers
from nc_engine.run.prepare import Prepared, check_setup, low_accuracy_note, outputs_kind, prepare
from nc_engine.run.recorder import RunRecorder
from nc_engine.run.runfolder import RunFolder
from nc_engine.run.trial import TrialRecord, full_searches, screened_searches
from nc_engine.verdict.combine import with_detectors
from nc_engine.verdict.report import Report, build_report
from nc_engine.verdict.rows import ScanInfo, kept_trial, label_rows

__all__ = ["check_setup", "run_scan"]

SCREEN_ASR_SAMPLES = 200
CHECKPOINT_SECONDS = 60.0  # running searches are also saved this often, for a process that is killed


def run_scan(
    config: Config | str | Path | None,
    on_event: ev.Listener | None = None,
    stop: threading.Event | None = None,
    resume: str | Path | None = None,
    trust_pickle: bool = False,
) -> Report:
    """Scan the model the config names; returns the report (also written to RUN/report.json).

    With `resume`, `config` is ignored and the run folder's own config.toml and samples are used;
    finished trials are kept and only the rest run. The run folder is locked while the scan runs. A
    resumed folder's `trust_pickle = true` counts only with `trust_pickle` (the user's say-so) given here.
    """
    started = time.perf_counter()
    bus = ev.EventBus([on_event] if on_event else [])
    # a resume is locked and checked, and the backend connected, before anything is written; the run
    # folder's lock is released on leaving the `with`
    with ScanInputs.of(config, resume, bus.warn, trust_pickle) as inputs, open_compute(inputs.cfg, bus) as compute:
        return _scan(inputs, bus, stop or threading.Event(), started, compute)


def _scan(inputs: ScanInputs, bus: ev.EventBus, stop: threading.Event, started: float, compute: Compute) -> Report:
    samples = str(inputs.folder.samples_path) if inputs.folder else ""
    prep = prepare(inputs.cfg, bus.warn, inputs.indices, samples)  # fails on bad input before anything is written
    folder = open_folder(prep, inputs, bus.warn)
    # a backend that cannot continue saved searches restarts them: the plan must not claim otherwise
    plan = plan_scan(prep, inputs.previous or [], inputs.inflight if compute.continues_searches else None)
    recorder = RunRecorder(folder, header_lines(prep, plan, resumed=inputs.indices is not None))
    bus.subscribe(recorder, replay=True, first=True)
    trials = TrialCollector(prep, plan, folder, bus)
    extra: dict[str, DetectorResult] = {}

    def partial() -> Report:
        return trials.report(inputs.previous_seconds + time.perf_counter() - started)

    try:
        _warn_low_accuracy(prep, bus)
        bus.emit(
            ev.ScanStarted(
                run_dir=str(folder.path),
                labels=plan.labels,
                class_names=prep.data.class_names,
                trials=prep.cfg.scan.budget().trials,
                device=str(prep.device),
                strategy=prep.cfg.scan.strategy,
                group_size=plan.group,
                clean_accuracy=prep.accuracy,
                samples=len(prep.data.opt_idx),
                asr_samples=len(prep.data.asr_idx),
                max_steps=prep.cfg.scan.budget().max_steps,
                resumed_trials=len(plan.previous),
                screening=plan.screen,
                continued_searches=len(plan.inflight or {}),
                screen_steps=min(prep.cfg.scan.screen_steps, prep.cfg.scan.budget().max_steps) if plan.screen else 0,
                label_share=prep.data.label_share,
            )
        )
        repair_triggers(folder, plan)
        for fault in prep.faults:  # no search can work: say why and go straight to the verdict
            bus.warn(fault)
        for key in plan.stale or []:
            folder.drop_inflight(key)
        if not prep.faults:
            _search(prep, plan, trials, stop, compute, _carry(plan, folder, bus, trials))
            if not stop.is_set():
                extra = run_detectors(prep, folder, bus, stop)
    except BaseException:
        _finish(
            lambda: trials.report(inputs.previous_seconds + time.perf_counter() - started), extra, bus, recorder, True
        )
        raise
    report = _finish(
        lambda: trials.report(inputs.previous_seconds + time.perf_counter() - started), extra, bus, recorder
    )
    assert report is not None  # only a failed scan's report may go unwritten
    return report


def _finish(
    partial: Callable[[], Report],
    extra: dict[str, DetectorResult],
    bus: ev.EventBus,
    recorder: RunRecorder,
    failed: bool = False,
) -> Report | None:
    """The report, said and written. After a failure (a full disk) the first error is the one to tell:
    a report that cannot be written either is given up quietly."""
    try:
        report = with_detectors(partial(), extra)
        bus.emit(
            ev.ScanFinished(
                run_dir=report.run_dir,
                completed=report.complete,
                verdict=report.verdict,
                flagged=report.flagged,
                seconds=report.info.seconds,
                images=report.info.images,
                report=report,
            )
        )
        return report
    except RunFolderError:
        if not failed:
            raise
        return None
    finally:
        recorder.close()


def _carry(plan: ScanPlan, folder: RunFolder, bus: ev.EventBus, trials: TrialCollector) -> Carry:
    """Saves the running searches into the run folder when the scan stops, and hands back those saved."""

    def save(checkpoints: list[SlotCheckpoint], stopping: bool) -> None:
        folder.save_inflight(checkpoints)
        trials.saved_running = sum(c.schedule["steps"] > 0 for c in checkpoints) if stopping else 0
        bus.emit(
            ev.SearchesSaved(
                searches=[[c.label, c.trial, c.schedule["steps"]] for c in checkpoints],
                stage=checkpoints[0].stage if checkpoints else "trial",
                stopping=stopping,
            )
        )

    return Carry(dict(plan.inflight or {}), save, bus.warn, CHECKPOINT_SECONDS, lambda k: str(folder.inflight_file(k)))


def _search(
    prep: Prepared, plan: ScanPlan, trials: TrialCollector, stop: threading.Event, compute: Compute, carry: Carry
) -> None:
    """The full-budget searches; in a screened scan, after the screening pass has chosen which."""
    jobs = plan.jobs
    if plan.screen:
        selection = _screen(prep, plan, trials, stop, compute, carry)
        if selection is None:  # stopped while screening
            return
        jobs = [job for job in jobs if job.label in selection.confirmed]
    request = SearchRequest(
        prep.model,
        prep.data.x_opt,
        jobs,
        prep.cfg.scan.search_settings(),
        plan.group,
        stop,
        trials.on_step,
        trials.on_done,
        carry,
    )
    _, stopped = compute.search(request)
    wider = _second_round(prep, trials) if plan.screen and not stopped else None
    if wider is not None:
        compute.search(dataclasses.replace(request, jobs=[j for j in plan.jobs if j.label in wider.second_round]))


def _second_round(prep: Prepared, trials: TrialCollector) -> Selection | None:
    """More references when the verdict hangs on the scale shift (the first ones' log ratios disagree);
    None when it does not. Decided from the stored trials alone, so a resume decides the same."""
    first, d = trials.selection, prep.cfg.detect
    if first is None or first.second_round:
        return None
    screened = {t.label: t.l1_norm for t in screened_searches(trials.trials)}
    rows = [r for r in label_rows(full_searches(trials.trials), prep.data.class_names) if r.label in first.confirmed]
    if not shift_decides(
        screened,
        {r.label: r.l1_norm for r in rows},
        {r.label: r.converged for r in rows},
        first,
        d.statistic,
        d.cut(),
        d.floor(),
        _shares(prep),
    ):
        return None
    wider = widen(first, screened, prep.cfg.scan.confirm_references)
    if not wider.second_round:
        return None
    trials.screening_done(wider)
    return wider


def _screen(
    prep: Prepared, plan: ScanPlan, trials: TrialCollector, stop: threading.Event, compute: Compute, carry: Carry
) -> Selection | None:
    """Every label at the screening budget; returns the labels to confirm, or None when stopped."""
    s = prep.cfg.scan
    x = prep.data.x_opt[torch.as_tensor(subset_indices(len(prep.data.x_opt), s.screen_samples))]
    full = s.search_settings()
    # no converge shortcut: its window counts steps over the full sample set, and a step over fewer samples
    # is fewer updates, so it stopped screens before their masks had begun to shrink (L1 still about half
    # the image at 16 of 40 steps on a tuning-half GTSRB model)
    settings = dataclasses.replace(
        full,
        max_steps=min(s.screen_steps, s.budget().max_steps),
        batch_size=min(s.budget().batch_size, len(x)),
        rules=dataclasses.replace(full.rules, converge_window=0),
    )
    request = SearchRequest(
        prep.model, x, plan.screen_jobs or [], settings, plan.group, stop, trials.on_step, trials.on_done, carry
    )
    _, stopped = compute.search(request)
    if stopped:
        return None
    screened = {t.label: t for t in screened_searches(trials.trials)}
    selection = choose(
        {k: t.l1_norm for k, t in screened.items()},
        {k: t.converged for k, t in screened.items()},
        prep.cfg.detect.statistic,
        prep.cfg.detect.cut(),
        s.confirm_margin,
        s.confirm_references,
        prep.cfg.detect.floor(),
        _shares(prep),
    )
    trials.screening_done(selection)
    return selection


def _shares(prep: Prepared) -> list[float] | None:
    """The scanned data's class shares when the verdict corrects for class frequency, else None."""
    return prep.data.label_share if prep.cfg.detect.frequency_correction else None


def _warn_low_accuracy(prep: Prepared, bus: ev.EventBus) -> None:
    if prep.accuracy < prep.cfg.detect.min_clean_accuracy:
        bus.warn("LOW CLEAN ACCURACY: " + low_accuracy_note(prep.accuracy, prep.cfg.detect.min_clean_accuracy))


class TrialCollector:
    """Turns the search's outcomes into events: each trial's held-out ASR, and each label once all its
    trials are in. Counts the stamped images, known even if the search stops or fails."""

    def __init__(self, prep: Prepared, plan: ScanPlan, folder: RunFolder, bus: ev.EventBus) -> None:
        self.prep, self.plan, self.folder, self.bus = prep, plan, folder, bus
        self.trials = list(plan.previous)
        self.arrays: dict[tuple[int, int, str], tuple[np.ndarray, np.ndarray]] = {}
        self.labels_done = set(plan.labels_done)
        self.selection: Selection | None = None
        self.images = 0
        self.images_before = 0  # stamped images of the screening pass, before the confirmation counts its own
        self.saved_running = 0  # searches the stop saved mid-way
        # a screening pass's held-out ASR only describes the labels left unconfirmed: a spread subset will do
        self.screen_asr = subset_indices(len(prep.data.x_asr), SCREEN_ASR_SAMPLES)

    def on_step(self, s: StepStats, images: int) -> None:
        self.images = self.images_before + images  # `images` counts within one search_triggers call
        self.bus.emit(
            ev.StepProgress(
                label=s.job.label,
                trial=s.job.trial,
                step=s.step,
                loss=s.loss,
                ce=s.ce,
                l1=s.l1,
                attack_acc=s.attack_acc,
                cost=s.cost,
                best_l1=s.best_l1,
                images=self.images,
                mask=s.mask,
                stage=s.job.stage,
            )
        )

    def on_done(self, out: TrialOutcome) -> None:
        job, data = out.job, self.prep.data
        keep = self.screen_asr if job.stage == "screen" else slice(None)
        asr = attack_success_rate(self.prep.model, data.x_asr[keep], data.y_asr[keep], out.mask, out.pattern, job.label)
        if out.stop_reason == "nan":
            self.bus.warn(
                f"label {job.label} trial {job.trial}: the loss became NaN at step {out.steps + 1}; "
                "kept the best trigger found before it"
            )
        finished = ev.TrialFinished(
            record=TrialRecord(
                label=job.label,
                trial=job.trial,
                seed=job.seed,
                l1_norm=out.l1_norm,
                asr=asr,
                steps=out.steps,
                converged=out.converged,
                stop_reason=out.stop_reason,
                seconds=out.seconds,
                stage=job.stage,
            ),
            mask=out.mask,
            pattern=out.pattern,
        )
        self.trials.append(finished.record)
        self.arrays[job.key] = (out.mask, out.pattern)
        self.bus.emit(finished)
        mine = [t for t in full_searches(self.trials) if t.label == job.label]
        if job.stage == "trial" and len(mine) >= self.prep.cfg.scan.budget().trials:
            self._label_done(job.label, mine)

    def screening_done(self, selection: Selection) -> None:
        """Say what the screening chose; the labels left unconfirmed are finished with their screened trigger."""
        self.selection = selection
        self.images_before = self.images
        self.bus.emit(
            ev.ScreeningFinished(
                candidates=selection.candidates,
                references=selection.references,
                why=selection.why,
                images=self.images,
                second_round=selection.second_round,
            )
        )
        if selection.second_round:  # their screened rows were finished in the first round; confirming redoes them
            return
        for label in self.plan.labels:
            if label not in selection.confirmed:
                self._label_done(label, [t for t in screened_searches(self.trials) if t.label == label])

    def _label_done(self, label: int, mine: list[TrialRecord]) -> None:
        row = label_rows(mine, self.prep.data.class_names)[0]
        key = kept_trial(mine).key
        mask, pattern = self.arrays.get(key) or self.folder.trial_arrays(*key)
        self.labels_done.add(label)
        self.bus.emit(
            ev.LabelFinished(
                label=label,
                name=row.name,
                l1_norm=row.l1_norm,
                asr=row.asr,
                converged=row.converged,
                steps=row.steps,
                seconds=row.seconds,
                mask_png=row.mask_png,
                done=len(self.labels_done),
                total=len(self.plan.labels),
                mask=mask,
                pattern=pattern,
            )
        )

    def report(self, seconds: float) -> Report:
        p, s = self.prep, self.prep.cfg.scan
        info = ScanInfo(
            clean_accuracy=p.accuracy,
            device=str(p.device),
            strategy=s.strategy,
            group_size=self.plan.group,
            preset=s.preset,
            samples=len(p.data.opt_idx),
            asr_samples=len(p.data.asr_idx),
            model=str(p.cfg.resolve_path(p.cfg.model.path)),
            data=str(p.cfg.resolve_path(p.cfg.data.path)),
            class_names=p.data.class_names,
            trials_per_label=s.budget().trials,
            seconds=seconds,
            images=self.images,
            outputs=outputs_kind(p.model),
            label_share=p.data.label_share,
        )
        return build_report(
            self.trials,
            labels_planned=self.plan.labels,
            threshold=p.cfg.detect.cut(),
            statistic=p.cfg.detect.statistic,
            info=info,
            run_dir=str(self.folder.path),
            faults=p.faults,
            selection=self.selection,
            spread_floor=p.cfg.detect.floor(),
            saved_running=self.saved_running,
            frequency_correction=p.cfg.detect.frequency_correction,
        )
