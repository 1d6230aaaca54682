"""The verdict in one sentence (verdict/sentence.py): which label, how anomalous, how sure, what next."""

import dataclasses
import os

from nc_engine.detectors.margin_result import MarginResult
from nc_engine.verdict.combine import with_detectors
from nc_engine.verdict.report import build_report
from nc_engine.verdict.rows import ScanInfo
from nc_engine.verdict.sentence import LIMITS, LIMITS_NC_ONLY, verdict_sentence
from tests.event_factory import record

CLEAN_L1 = [40.0, 44.0, 38.0, 42.0, 46.0, 41.0, 39.0, 45.0, 43.0, 47.0]
NAMES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _trial(label: int, l1: float):
    return record(label, seed=label, l1_norm=l1)


def _report(l1: list[float], run_dir: str = "/data/runs/m-1"):
    info = ScanInfo(clean_accuracy=0.95, class_names=NAMES)
    trials = [_trial(k, v) for k, v in enumerate(l1)]
    return build_report(
        trials,
        labels_planned=list(range(len(l1))),
        threshold=2.0,
        statistic="log_l1",
        info=info,
        run_dir=run_dir,
        spread_floor=0.7,
    )


def _margins(top: float) -> dict:
    return MarginResult.judged([10.0, 11.0, 12.0, 10.5, 11.5, 10.2, 11.8, 10.9, 11.1, top], 0, 0.0, {}).to_dict()


def test_a_small_trigger_names_the_label_how_far_it_stands_and_the_command_to_repair_it():
    report = _report([4.0, *CLEAN_L1[1:]])
    assert report.verdict == "backdoored" and report.flagged == [0]
    sentence = verdict_sentence(report)
    assert sentence.startswith("BACKDOORED: label 0 (plane) is a likely backdoor target: its reversed trigger is ")
    median = report.median_l1
    assert median is not None and f"{median / 4.0:.1f}x smaller than the median label's" in sentence
    assert "(index " in sentence and ", cut 2)" in sentence
    assert sentence.endswith("Next: run `nc-tui mitigate /data/runs/m-1 --method unlearn`.")
    assert sentence.count("\n") == 0 and "MAD" not in sentence  # the statistics stay in the details
    assert verdict_sentence(report, "press m to remove it").endswith("Next: press m to remove it.")


def test_a_run_folder_under_the_working_directory_is_shown_as_typed():
    report = _report([4.0, *CLEAN_L1[1:]], run_dir=os.path.join(os.getcwd(), "runs", "m-2"))
    assert f"`nc-tui mitigate {os.path.join('runs', 'm-2')} --method unlearn`" in verdict_sentence(report)


def test_a_label_only_the_margins_flag_says_so_and_agreement_is_said_when_both_fire():
    margin_only = with_detectors(_report(CLEAN_L1), {"max_margin": MarginResult.from_dict(_margins(90.0))})
    sentence = verdict_sentence(margin_only)
    assert sentence.startswith("BACKDOORED: label 9 (truck) is a likely backdoor target: its logit margin is ")
    assert "reversed trigger" not in sentence and "max-margin index" in sentence and "agree" not in sentence
    both = with_detectors(_report([*CLEAN_L1[:9], 4.0]), {"max_margin": MarginResult.from_dict(_margins(90.0))})
    assert "smaller than the median label's" in verdict_sentence(both)
    assert "; both detectors agree. Next:" in verdict_sentence(both)


def test_clean_says_where_the_closest_label_stood_and_what_the_detectors_cannot_see():
    report = with_detectors(_report(CLEAN_L1), {"max_margin": MarginResult.from_dict(_margins(12.5))})
    sentence = verdict_sentence(report)
    assert report.verdict == "clean" and sentence.startswith("CLEAN: no label stands out (closest trigger: label ")
    assert "largest margin: label 9, 1.1x the others', cut 5x" in sentence and sentence.endswith(LIMITS + ".")
    assert verdict_sentence(_report(CLEAN_L1)).endswith(LIMITS_NC_ONLY + ".")  # max-margin did not run


def test_inconclusive_and_unfinished_say_why_and_what_to_do():
    unsure = dataclasses.replace(_report(CLEAN_L1), verdict="inconclusive", note="clean accuracy 12% is below 50%.")
    assert verdict_sentence(unsure) == "INCONCLUSIVE: clean accuracy 12% is below 50%; fix that and scan again."
    partial = dataclasses.replace(_report(CLEAN_L1), verdict=None, note="unfinished: 3 of 10 labels done")
    assert verdict_sentence(partial) == "NO VERDICT YET: unfinished: 3 of 10 labels done."
