"""The max-margin detector: its statistic on real demo models, its outlier test, the verdict it
joins, and its place in a scan's run folder (saved, logged, reused on resume, a damaged file re-run)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nc_engine import load_config, run_scan
from nc_engine.detectors.margin_result import LEAD, THRESHOLD, MarginResult, margin_index
from nc_engine.detectors.max_margin import MarginSettings, detect
from nc_engine.models.load import load_model
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.combine import with_detectors
from nc_engine.verdict.formatting import table_rows, verdict_line
from nc_engine.verdict.report import Report
from tests.report_factory import label_row, report


@pytest.fixture(autouse=True)
def real_detectors(margin_detector_only_where_tested, monkeypatch):
    """The suite skips this detector in its scans (conftest); here every scan runs it, as by default."""
    import nc_engine.run.scan as scan

    monkeypatch.setattr(scan, "run_detectors", margin_detector_only_where_tested)


SETTINGS = MarginSettings()  # a scan's: shorter ascents (60 steps) flagged a clean demo model


def _margins(info) -> MarginResult:
    cfg = load_config(info.config)
    model = load_model(cfg, torch.device("cpu"))
    return detect(model, 10, cfg.model.input_shape, torch.device("cpu"), SETTINGS)


def test_the_backdoor_target_reaches_the_largest_margin_and_is_flagged(demo_backdoored):
    result = _margins(demo_backdoored)
    target = demo_backdoored.target
    assert result.top_label == target and result.flagged == [target]
    others = [m for k, m in enumerate(result.margins) if k != target]
    assert result.margins[target] > 1.5 * max(others)
    assert result.images == 10 * SETTINGS.starts * (SETTINGS.steps + 1)


def _lead(result: MarginResult) -> float:
    """How far the largest margin stands above the others' median, as a ratio."""
    assert result.top_label is not None and result.null_median
    return result.margins[result.top_label] / result.null_median


def test_a_backdoor_target_stands_out_far_more_than_a_clean_models_largest_label(demo_backdoored, demo_clean):
    """Not only that the clean demo model passes: the gap between the two is what the detector rests on."""
    backdoored, clean = _margins(demo_backdoored), _margins(demo_clean)
    assert clean.index is not None and backdoored.index is not None
    assert backdoored.index >= THRESHOLD > clean.index and clean.flagged == []
    assert _lead(backdoored) > 1.5 * _lead(clean)


def test_the_outlier_test_flags_only_a_clear_maximum():
    rng = np.random.default_rng(0)
    null = rng.gamma(20.0, 3.0, 9)
    assert MarginResult.judged(list(np.append(null, 3 * null.max())), 0, 0.0, {}).flagged == [9]
    plain = MarginResult.judged(list(np.append(null, null.mean())), 0, 0.0, {})
    assert plain.flagged == [] and plain.index is not None and plain.index < THRESHOLD and plain.note == ""
    assert "too few" in margin_index([1.0, 2.0, 30.0])[2]
    assert "not positive" in margin_index([-1.0, 2.0, 3.0, 4.0, 40.0])[2]
    assert "not finite" in margin_index([1.0, 2.0, 3.0, np.inf, 4.0])[2]
    assert "same margin" in margin_index([5.0, 5.0, 5.0, 5.0, 9.0])[2]


def test_a_target_far_above_widely_spread_margins_is_flagged_by_its_lead():
    """Ordinary labels spread over a factor of 12 (as on the tuning half's ResNet-8 models): the top
    label's index stays low, and only its lead over the others' median flags it (rule-3.md)."""
    spread = [2.0, 4.0, 8.0, 16.0, 3.0, 6.0, 12.0, 24.0, 5.0]
    far = MarginResult.judged([*spread, 10 * 6.0], 0, 0.0, {})
    assert far.index is not None and far.index < THRESHOLD and far.lead == pytest.approx(10.0)
    assert far.flagged == [9] and far.why == f"10.0x the others' median, cut {LEAD:g}x"
    assert "(10.0x)" in far.summary() and "flagged: 10.0x the others' median" in far.summary()
    near = MarginResult.judged([*spread, 4.5 * 6.0], 0, 0.0, {})  # 4.5x: under both cuts
    assert near.flagged == [] and near.lead == pytest.approx(4.5) and "not an outlier: below" in near.summary()
    tight = MarginResult.judged([10.0, 11.0, 12.0, 10.5, 11.5, 10.2, 11.8, 10.9, 11.1, 40.0], 0, 0.0, {})
    assert tight.flagged == [9] and tight.lead is not None and tight.lead < LEAD
    assert tight.why == "index 14.87, cut 4.5"


def test_a_saved_result_from_the_gamma_test_is_judged_again():
    """Run folders from before this test saved p_value and alpha: read back, today's test decides."""
    old = {"margins": [10.0, 11.0, 12.0, 13.0, 11.5, 95.0], "flagged": [], "p_value": 0.2, "alpha": 0.05}
    result = MarginResult.from_dict({**old, "images": 600, "seconds": 1.5})
    assert result.flagged == [5] and result.index is not None and result.index > THRESHOLD
    assert MarginResult.from_dict({"margins": "junk"}).note  # a damaged file decides nothing


def _result(flagged: list[int]) -> MarginResult:
    margins = [10.0, 11.0, 12.0, 40.0 if flagged else 13.0]
    return MarginResult(margins, flagged, 9.0 if flagged else 1.0, 3, THRESHOLD, 11.0, 100, 0.1)


def _report(verdict: str, flagged: list[int]) -> Report:
    return report(verdict, flagged, labels=4)


def test_a_label_the_margins_flag_makes_a_clean_verdict_backdoored_and_says_who_fired():
    combined = with_detectors(_report("clean", []), {"max_margin": _result([3])})
    assert combined.verdict == "backdoored" and combined.flagged == [3] and combined.fired == ["max_margin"]
    assert "max_margin flagged label(s) 3" in verdict_line(combined)
    assert "max-margin: label 3 reaches margin 40.0" in verdict_line(combined)
    both = with_detectors(_report("backdoored", [1]), {"max_margin": _result([3])})
    assert both.flagged == [1, 3] and both.fired == ["neural_cleanse", "max_margin"]
    row = label_row(3)
    shown = table_rows(dataclasses.replace(combined, labels=[row]))
    assert shown[0]["cells"][-1] == "FLAGGED (margin)" and shown[0]["flagged"]
    quiet = with_detectors(_report("clean", []), {"max_margin": _result([])})
    assert quiet.verdict == "clean" and quiet.fired == [] and "not an outlier" in verdict_line(quiet)
    unsure = with_detectors(_report("inconclusive", []), {"max_margin": _result([3])})
    assert unsure.verdict == "inconclusive" and unsure.detectors["max_margin"]["flagged"] == [3]


def _scan(info, tmp_path) -> Report:
    cfg = load_config(info.config)
    cfg.output.dir = str(tmp_path / "runs")
    assert cfg.detect.max_margin  # on by default: the demo's config leaves it out
    cfg.scan.preset = "fast"
    return run_scan(cfg)


def test_a_scan_with_max_margin_records_logs_and_reuses_its_evidence(demo_backdoored, tmp_path):
    report = _scan(demo_backdoored, tmp_path)
    evidence = report.detectors["max_margin"]
    assert evidence["top_label"] == demo_backdoored.target and demo_backdoored.target in report.flagged
    folder = RunFolder(Path(report.run_dir))
    saved = json.loads(folder.detector_path("max_margin").read_text())
    assert saved["margins"] == evidence["margins"]
    log = (folder.path / "log.txt").read_text()
    assert "max-margin: label" in log and "max-margin per label: 0: " in log
    again = Report.read(report.run_dir)
    assert again.detectors == report.detectors and again.fired == report.fired
    # a damaged result is said and measured again, to the same margins (its starts come from the seed)
    folder.detector_path("max_margin").write_text("{not json")
    warnings = []
    resumed = run_scan(
        None, lambda e: warnings.append(e.message) if e.kind == "warning" else None, resume=report.run_dir
    )
    assert any("max_margin.json: damaged" in w for w in warnings)
    assert resumed.detectors["max_margin"]["margins"] == pytest.approx(evidence["margins"])
