"""The detectors a scan runs besides Neural Cleanse, after its searches: each judged once per run folder
(a resume reuses the saved result), its result saved there and announced with one line."""

from __future__ import annotations

import threading

from nc_engine.detectors import max_margin
from nc_engine.detectors.margin_result import NAME, MarginResult
from nc_engine.run import events as ev
from nc_engine.run.prepare import Prepared
from nc_engine.run.runfolder import RunFolder


def run_detectors(
    prep: Prepared, folder: RunFolder, bus: ev.EventBus, stop: threading.Event
) -> dict[str, MarginResult]:
    """Every detector the config turns on: name -> result (none when stopped before it finished)."""
    results: dict[str, MarginResult] = {}
    if not prep.cfg.detect.max_margin:
        return results
    saved = folder.read_detector(NAME, bus.warn)
    if saved is not None:
        result = MarginResult.from_dict(saved)
    else:
        settings = max_margin.MarginSettings(seed=prep.cfg.scan.seed)
        result = max_margin.detect(
            prep.model, prep.model.num_classes, prep.cfg.model.input_shape, prep.device, settings, stop
        )
        if stop.is_set():
            return results
        folder.save_detector(NAME, result.to_dict())
    results[NAME] = result
    bus.emit(
        ev.DetectorFinished(
            name=NAME,
            flagged=result.flagged,
            summary=result.summary(),
            details=[result.per_label()],
            result=result.to_dict(),
        )
    )
    return results
