"""The detectors a scan runs besides Neural Cleanse, after its searches: each judged once per run folder
(a resume reuses the saved result), its result saved there and announced with one line."""

from __future__ import annotations

import threading
from collections.abc import Callable

from nc_engine.detectors import margin_result as margin
from nc_engine.detectors import max_margin, transform_search
from nc_engine.detectors import transform_result as transforms
from nc_engine.detectors.result import DetectorResult, read_result
from nc_engine.run import events as ev
from nc_engine.run.prepare import Prepared
from nc_engine.run.runfolder import RunFolder


def _margins(prep: Prepared, stop: threading.Event) -> margin.MarginResult:
    settings = max_margin.MarginSettings(seed=prep.cfg.scan.seed)
    return max_margin.detect(
        prep.model, prep.model.num_classes, prep.cfg.model.input_shape, prep.device, settings, stop
    )


def _transforms(prep: Prepared, stop: threading.Event) -> transforms.TransformResult:
    settings = transform_search.TransformSettings(seed=prep.cfg.scan.seed)
    return transform_search.search(prep.model, prep.data.x_opt, prep.data.y_opt, prep.model.num_classes, settings, stop)


# name -> (whether the config turns it on, how it runs); a saved result reads back through read_result
DETECTORS: dict[str, tuple[Callable[[Prepared], bool], Callable[[Prepared, threading.Event], DetectorResult]]] = {
    margin.NAME: (lambda prep: prep.cfg.detect.max_margin, _margins),
    transforms.NAME: (lambda prep: prep.cfg.detect.transforms, _transforms),
}


def run_detectors(
    prep: Prepared, folder: RunFolder, bus: ev.EventBus, stop: threading.Event
) -> dict[str, DetectorResult]:
    """Every detector the config turns on: name -> result (none when stopped before it finished)."""
    results: dict[str, DetectorResult] = {}
    for name, (enabled, run) in DETECTORS.items():
        if not enabled(prep):
            continue
        saved = folder.read_detector(name, bus.warn)
        result = read_result(name, saved) if saved is not None else None
        if saved is not None and result is None:
            bus.warn(f"{folder.detector_path(name)}: damaged (not a result this version can read); it runs again")
        if result is None:
            result = run(prep, stop)
            if stop.is_set():
                return results
            folder.save_detector(name, result.to_dict())
        results[name] = result
        bus.emit(
            ev.DetectorFinished(
                name=name,
                flagged=result.flagged,
                summary=result.summary(),
                details=[result.per_label()],
                result=result.to_dict(),
            )
        )
    return results
