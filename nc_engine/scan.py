"""run_scan: config in; model and data loaded; every label's trigger reversed; ASR, MAD, verdict;
everything written to a run folder as it happens. Runs in the caller's thread and reports through
`on_event`; setting `stop` ends it at the next mini-batch with a resumable run folder.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import events as ev
from .asr import attack_success_rate, clean_accuracy
from .config import Config, config_to_toml, load_config
from .data import open_data, split_samples
from .errors import DataError, RunFolderError
from .groups import choose_group_size
from .models import load_model, resolve_device
from .report import build_report, table_lines, verdict_line
from .runfolder import (
    EventLog,
    create_run_dir,
    load_trial_arrays,
    load_trials,
    save_trial,
    save_trigger_images,
    write_csv,
    write_json,
)
from .schedule import ScheduleRules
from .search import Job, SearchSettings, StepStats, TrialOutcome, search_triggers

EventHandler = Callable[[ev.Event], None]


def job_seed(seed: int, label: int, trial: int) -> int:
    """Each (label, trial) gets its own seed, derived from the scan seed: same in every strategy."""
    return int(np.random.SeedSequence([seed, label, trial]).generate_state(1)[0] % (2**31))


@dataclass
class ScanData:
    x_opt: torch.Tensor  # (N, C, H, W) on the device
    y_opt: torch.Tensor
    x_asr: torch.Tensor
    y_asr: torch.Tensor
    opt_idx: np.ndarray
    asr_idx: np.ndarray
    class_names: list[str]


def load_scan_data(cfg: Config, device: torch.device, warn: Callable[[str], None],
                   indices: tuple[np.ndarray, np.ndarray] | None = None) -> ScanData:
    """Open the data, draw (or reuse) the disjoint stratified samples, decode them onto the device."""
    source = open_data(cfg)
    s = cfg.scan
    if indices is None:
        indices = split_samples(source.labels, s.samples, s.asr_samples, s.seed, cfg.data.max_images)
    opt_idx, asr_idx = indices
    x_opt, opt_idx = source.load(opt_idx, warn)
    x_asr, asr_idx = source.load(asr_idx, warn)
    if len(opt_idx) < s.batch_size:
        raise DataError(f"{cfg.resolve_path(cfg.data.path)}: {len(opt_idx)} optimisation samples, fewer "
                        f"than [scan].batch_size = {s.batch_size}")
    if len(opt_idx) < s.samples:
        warn(f"only {len(opt_idx)} optimisation samples available ([scan].samples = {s.samples})")
    if len(asr_idx) < min(s.asr_samples, 100):
        warn(f"only {len(asr_idx)} held-out samples for the attack success rate")
    names = list(source.class_names) + [str(i) for i in range(len(source.class_names), cfg.model.num_classes)]
    y = torch.as_tensor(source.labels)
    return ScanData(x_opt.to(device), y[opt_idx].to(device), x_asr.to(device), y[asr_idx].to(device),
                    opt_idx, asr_idx, names)


def prepare(cfg: Config, warn: Callable[[str], None], indices: tuple[np.ndarray, np.ndarray] | None = None
            ) -> tuple[torch.device, torch.nn.Module, ScanData, float]:
    """Device, model and samples loaded, and the model's clean accuracy on them."""
    device = resolve_device(cfg.scan.device)
    torch.manual_seed(cfg.scan.seed)
    model = load_model(cfg, device)
    data = load_scan_data(cfg, device, warn, indices)
    accuracy = clean_accuracy(model, torch.cat([data.x_opt, data.x_asr]), torch.cat([data.y_opt, data.y_asr]))
    return device, model, data, accuracy


def check_setup(cfg: Config) -> dict:
    """The quick check before a scan: load model and data, measure clean accuracy; raises NCError."""
    warnings: list[str] = []
    device, _, data, accuracy = prepare(cfg, warnings.append)
    low = accuracy < cfg.detect.min_clean_accuracy
    return {"device": str(device), "samples": len(data.opt_idx), "asr_samples": len(data.asr_idx),
            "classes": len(data.class_names), "clean_accuracy": accuracy, "low_accuracy": low,
            "warnings": warnings}


def _settings(cfg: Config) -> SearchSettings:
    s = cfg.scan
    rules = ScheduleRules(init_cost=s.init_cost, cost_up=s.cost_up, cost_down=s.cost_down, patience=s.patience,
                          threshold=s.attack_success_threshold, early_stop=s.early_stop,
                          early_stop_threshold=s.early_stop_threshold,
                          early_stop_patience=s.early_stop_patience, converge_window=s.converge_window,
                          converge_tol=s.converge_tol)
    return SearchSettings(rules, lr=s.lr, betas=(s.betas[0], s.betas[1]), batch_size=s.batch_size,
                          max_steps=s.max_steps, bf16=s.bf16, channels_last=s.channels_last)


def run_scan(config: Config | str | Path, on_event: EventHandler | None = None,
             stop: threading.Event | None = None, resume: str | Path | None = None) -> dict:
    """Scan the model the config names; returns the report (also written to RUN/report.json).

    With `resume`, `config` is ignored and the run folder's own config.toml and samples are used;
    finished trials are kept and only the rest run.
    """
    started = time.perf_counter()
    stop = stop or threading.Event()
    handlers: list[EventHandler] = [on_event] if on_event else []
    early_warnings: list[str] = []  # raised before events.jsonl exists; written to it once it does

    def emit(event: ev.Event) -> None:
        for handle in handlers:
            handle(event)

    def warn(message: str) -> None:
        early_warnings.append(message)
        emit(ev.Warning(message))

    indices = None
    previous: list[dict] = []
    if resume is not None:
        run = Path(resume)
        if not (run / "config.toml").is_file() or not (run / "samples.npz").is_file():
            raise RunFolderError(f"{run}: not a resumable run folder (expected config.toml and samples.npz)")
        cfg = load_config(run / "config.toml")
        with np.load(run / "samples.npz") as saved:
            indices = (saved["opt_idx"], saved["asr_idx"])
        previous = load_trials(run)
    else:
        cfg = config if isinstance(config, Config) else load_config(config)

    # Everything that can fail on the user's input happens before the run folder exists.
    device, model, data, accuracy = prepare(cfg, warn, indices)
    s = cfg.scan
    labels = list(range(cfg.model.num_classes)) if s.labels == "all" else list(s.labels)

    if resume is None:
        stem = Path(cfg.model.path).stem or "scan"
        run = create_run_dir(cfg.resolve_path(cfg.output.dir), stem)
        (run / "config.toml").write_text(config_to_toml(cfg), encoding="utf-8")
        np.savez(run / "samples.npz", opt_idx=data.opt_idx, asr_idx=data.asr_idx)
    previous_seconds = 0.0
    if resume is not None and (run / "report.json").is_file():
        previous_seconds = json.loads((run / "report.json").read_text(encoding="utf-8")).get("seconds") or 0.0
    log = EventLog(run / "events.jsonl")
    handlers.append(lambda e: log.write(e.to_dict()))
    for message in early_warnings:
        log.write(ev.Warning(message).to_dict())
    logtext = (run / "log.txt").open("a", encoding="utf-8")

    if accuracy < cfg.detect.min_clean_accuracy:
        warn(f"LOW CLEAN ACCURACY: the model gets {accuracy:.1%} of the scan samples right "
             f"(below {cfg.detect.min_clean_accuracy:.0%}); check [model].mean/std and the input range: "
             "a scan of a model that does not recognise its inputs is meaningless")

    finished = {(t["label"], t["trial"]) for t in previous}
    jobs = [Job(label, trial, job_seed(s.seed, label, trial)) for label in labels for trial in range(s.trials)
            if (label, trial) not in finished]
    settings = _settings(cfg)
    group = 1 if s.strategy == "sequential" else (
        s.group_size or choose_group_size(model, data.x_opt, s.batch_size, len(jobs)))
    group = max(1, min(group, len(jobs) or 1))
    trials = list(previous)
    meta = {"clean_accuracy": accuracy, "device": str(device), "strategy": s.strategy, "group_size": group,
            "preset": s.preset, "samples": len(data.opt_idx), "asr_samples": len(data.asr_idx),
            "model": str(cfg.resolve_path(cfg.model.path)), "data": str(cfg.resolve_path(cfg.data.path)),
            "class_names": data.class_names, "trials_per_label": s.trials}
    logtext.write(f"{'resumed' if resume else 'scan'} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  f"model {meta['model']} ({cfg.model.format}), data {meta['data']}\n"
                  f"device {device}, strategy {s.strategy}, group size {group}, preset {s.preset}: "
                  f"samples {len(data.opt_idx)}, batch {s.batch_size}, max steps {s.max_steps}, "
                  f"trials {s.trials}, lr {s.lr}, init_cost {s.init_cost}, patience {s.patience}\n"
                  f"clean accuracy on the scan samples: {accuracy:.2%}\n")
    logtext.flush()
    emit(ev.ScanStarted(str(run), labels, data.class_names, s.trials, str(device), s.strategy, group, accuracy,
                        len(data.opt_idx), len(data.asr_idx), s.max_steps, len(previous)))

    labels_done = {t["label"] for t in previous
                   if sum(1 for u in previous if u["label"] == t["label"]) >= s.trials}

    processed = {"images": 0}  # stamped images so far, known even if the search stops or fails

    def on_step(stats: StepStats, images: int) -> None:
        processed["images"] = images
        emit(ev.StepProgress(stats.job.label, stats.job.trial, stats.step, stats.loss, stats.ce, stats.l1,
                             stats.attack_acc, stats.cost, stats.best_l1, images, stats.mask))

    def on_done(out: TrialOutcome) -> None:
        job = out.job
        asr = attack_success_rate(model, data.x_asr, data.y_asr, out.mask, out.pattern, job.label)
        result = {"label": job.label, "trial": job.trial, "seed": job.seed, "l1_norm": out.l1_norm, "asr": asr,
                  "steps": out.steps, "converged": out.converged, "stop_reason": out.stop_reason,
                  "seconds": out.seconds}
        if out.stop_reason == "nan":
            warn(f"label {job.label} trial {job.trial}: the loss became NaN at step {out.steps + 1}; "
                 "kept the best trigger found before it")
        save_trial(run, result, out.mask, out.pattern)
        trials.append(result)
        emit(ev.TrialFinished(job.label, job.trial, job.seed, out.l1_norm, asr, out.steps, out.converged,
                              out.stop_reason, out.seconds))
        mine = [t for t in trials if t["label"] == job.label]
        if len(mine) < s.trials:
            return
        row = build_report(mine, data.class_names, [job.label], s.trials, cfg.detect.threshold, {},
                           cfg.detect.statistic)["labels"][0]
        mask, pattern = load_trial_arrays(run, job.label, row["kept_trial"])
        save_trigger_images(run, job.label, mask, pattern)
        labels_done.add(job.label)
        logtext.write(f"label {job.label:3d} ({row['name']}): L1 {row['l1_norm']:.2f}, ASR {row['asr'] or 0:.1%}, "
                      f"steps {row['steps']}, {'converged' if row['converged'] else 'NOT converged'}\n")
        logtext.flush()
        emit(ev.LabelFinished(job.label, row["name"], row["l1_norm"], row["asr"], row["converged"], row["steps"],
                              row["seconds"], row["mask_png"], len(labels_done), len(labels)))

    # Labels finished before an interruption may lack their images if it struck in between.
    for label in labels_done:
        if not (run / f"triggers/label_{label:03d}.npz").exists():
            row = build_report([t for t in previous if t["label"] == label], data.class_names, [label], s.trials,
                               cfg.detect.threshold, {}, cfg.detect.statistic)["labels"][0]
            save_trigger_images(run, label, *load_trial_arrays(run, label, row["kept_trial"]))

    try:
        search_triggers(model, data.x_opt, jobs, settings, group, stop, on_step, on_done)
    finally:
        meta["seconds"] = previous_seconds + time.perf_counter() - started
        meta["images"] = images = processed["images"]
        report = build_report(trials, data.class_names, labels, s.trials, cfg.detect.threshold, meta,
                              cfg.detect.statistic)
        write_json(run / "report.json", report)
        write_csv(run / "report.csv", report["labels"])
    if report["complete"]:
        logtext.write("\n".join(table_lines(report)) + "\n" + verdict_line(report) + "\n")
    else:
        logtext.write(f"stopped: {report['note']}\n")
    logtext.close()
    emit(ev.ScanFinished(str(run), report["complete"], report["verdict"], report["flagged"], meta["seconds"],
                         images))
    log.close()
    report["run_dir"] = str(run)
    return report
