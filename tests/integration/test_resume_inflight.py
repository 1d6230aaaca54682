"""Ctrl+C keeps the searches in flight (issue 14, item 2): a scan stopped after N step events saves its running
searches in RUN/inflight/, and `--resume` continues them to the very numbers of an uninterrupted scan, in the
batched and the sequential strategy and while screening. A 4-label linear model on 4x4 images: seconds each."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from nc_engine import run_scan
from nc_engine.config.settings import load_config
from nc_engine.run.runfolder import RunFolder
from tests.tiny_scan import write_tiny


@pytest.fixture
def tiny(tmp_path) -> Path:
    """4 labels, 30 steps without the converge stop (so searches run long enough to be stopped mid-way),
    batched in groups of 3; screening off unless a case turns it on."""
    return write_tiny(
        tmp_path,
        classes=4,
        images=120,
        asr_samples=40,
        max_steps=30,
        converge_window=0,
        strategy="batched",
        group_size=3,
        screening="off",
        screen_min_labels=3,
        screen_steps=12,
        screen_samples=16,
    )


def config(path: Path, **scan):
    cfg = load_config(path)
    for key, value in scan.items():
        setattr(cfg.scan, key, value)
    return cfg


def stopped_after(cfg, steps: int):
    """A scan stopped from an on_event listener after `steps` step events."""
    stop, seen, events = threading.Event(), [], []

    def on_event(e):
        events.append(e)
        if e.kind == "step":
            seen.append(e)
            if len(seen) == steps:
                stop.set()

    report = run_scan(cfg, on_event, stop)
    assert not report.complete
    return report, events


def trial_numbers(run_dir: str) -> dict:
    folder = RunFolder(Path(run_dir))
    return {t.key: (t.l1_norm, t.steps, t.stop_reason, *folder.trial_arrays(*t.key)) for t in folder.trials()}


def assert_same_trials(resumed: str, whole: str) -> None:
    a, b = trial_numbers(resumed), trial_numbers(whole)
    assert a.keys() == b.keys()
    for key in b:  # same groups, same samples, same mini-batch orders: the same floats, bit for bit
        assert a[key][:3] == b[key][:3], key
        np.testing.assert_array_equal(a[key][3], b[key][3])
        np.testing.assert_array_equal(a[key][4], b[key][4])


@pytest.mark.parametrize(
    "scan, steps",
    [({}, 7), ({"strategy": "sequential"}, 7), ({"screening": "on"}, 7), ({"screening": "on"}, 55), ({"trials": 2}, 7)],
    ids=["batched", "sequential", "screening", "confirming", "two-trials"],
)
def test_a_stopped_scan_resumes_its_running_searches_to_the_uninterrupted_result(tiny, scan, steps):
    """A screened scan of 4 labels takes 4 x 12 screening steps first: 55 stops it while confirming."""
    whole = run_scan(config(tiny, **scan))
    partial, events = stopped_after(config(tiny, **scan), steps)
    run = Path(partial.run_dir)
    saved = [e for e in events if e.kind == "searches_saved"]
    assert len(saved) == 1 and saved[0].stopping and saved[0].searches
    assert saved[0].stage == ("trial" if steps > 48 or "screening" not in scan else "screen")
    assert len(list((run / "inflight").iterdir())) == len(saved[0].searches)
    assert "saved" in (run / "log.txt").read_text()
    assert f"({len(saved[0].searches)} more search(es) saved mid-way)" in partial.note
    resumed_events = []
    final = run_scan(None, resumed_events.append, resume=run)
    assert final.complete
    started = next(e for e in resumed_events if e.kind == "scan_started")
    assert started.continued_searches == len(saved[0].searches)
    first_steps = {}
    for e in resumed_events:
        if e.kind == "step":
            first_steps.setdefault((e.label, e.trial, e.stage), e.step)
    for label, trial, step in saved[0].searches:  # each continued from its saved step, not from step 1
        assert first_steps[(label, trial, saved[0].stage)] == step + 1
    assert_same_trials(final.run_dir, whole.run_dir)
    rows = [[(r.label, r.l1_norm, r.steps, r.asr) for r in report.labels] for report in (final, whole)]
    assert rows[0] == rows[1]
    assert final.verdict == whole.verdict
    assert not (run / "inflight").exists()  # every search finished: nothing left in flight


def test_a_damaged_saved_search_restarts_with_one_warning(tiny):
    cfg = config(tiny, strategy="sequential")
    whole = run_scan(cfg)
    partial, _ = stopped_after(config(tiny, strategy="sequential"), 5)
    (saved,) = (Path(partial.run_dir) / "inflight").iterdir()
    saved.write_bytes(saved.read_bytes()[:200])  # torn
    events = []
    final = run_scan(None, events.append, resume=partial.run_dir)
    warnings = [e.message for e in events if e.kind == "warning" and "ACCURACY" not in e.message]  # a weak toy model
    assert len(warnings) == 1 and str(saved) in warnings[0] and "starts again" in warnings[0]
    assert "\n" not in warnings[0] and "not a usable saved search" in warnings[0]
    assert final.complete
    assert_same_trials(final.run_dir, whole.run_dir)  # one search at a time: a restart ends the same way
