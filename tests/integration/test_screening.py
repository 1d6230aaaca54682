"""Screen, then confirm: which labels are confirmed and why, the scale shift, and whole screened scans
(same verdict as a plain scan, confirmed labels identical to a plain scan's, resumable)."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pytest

from nc_engine import load_config, run_scan
from nc_engine.detectors.neural_cleanse.screening import (
    MIN_CANDIDATES,
    Selection,
    choose,
    median_references,
    scale_shift,
    screening_wanted,
    shift_decides,
    subset_indices,
    widen,
)
from tests.event_factory import record

L1 = {k: v for k, v in enumerate([40.0, 44.0, 38.0, 50.0, 9.0, 41.0, 43.0, 39.0, 52.0, 45.0, 47.0, 42.0])}
CONVERGED = {k: True for k in L1}


def test_candidates_are_the_outliers_and_the_smallest_triggers():
    sel = choose(L1, CONVERGED, "log_l1", 3.5, 1.5, 4)
    assert 4 in sel.candidates and "within 1.5 of the threshold" in sel.why[4]
    smallest = sorted(L1, key=L1.get)[:MIN_CANDIDATES]
    assert set(smallest) <= set(sel.candidates)
    assert len(sel.references) == 4 and not set(sel.references) & set(sel.candidates)
    # references: the ordinary labels nearest the screened median, never the extremes of the rest
    rest = sorted((k for k in L1 if k not in sel.candidates), key=L1.get)
    assert rest[0] not in sel.references and rest[-1] not in sel.references
    centre = float(np.median(np.log(list(L1.values()))))
    far = max(abs(math.log(L1[k]) - centre) for k in sel.references)
    assert all(abs(math.log(L1[k]) - centre) >= far for k in rest if k not in sel.references)
    assert all(k in sel.why for k in L1)
    assert sum("not confirmed" in sel.why[k] for k in L1) == len(L1) - len(sel.confirmed)


def test_screening_judges_candidates_from_the_class_frequency_line_when_given_shares():
    """GTSRB-like shares (12x apart) and a clean model whose frequent classes have small triggers: plainly
    they are candidates within the margin; judged from the frequency line only the smallest two remain."""
    rng = np.random.default_rng(0)
    share = np.geomspace(1, 12, 43)
    rng.shuffle(share)
    share /= share.sum()
    noise = rng.normal(0, 0.15, 43)
    l1 = dict(enumerate((50 * np.exp(-0.6 * (np.log(share) - np.median(np.log(share))) + noise)).tolist()))
    converged = {k: True for k in l1}
    plain = choose(l1, converged, "log_l1", 1.11, 0.4, 4, 0.7)
    fixed = choose(l1, converged, "log_l1", 1.11, 0.4, 4, 0.7, share.tolist())
    assert len(plain.candidates) > MIN_CANDIDATES and len(fixed.candidates) == MIN_CANDIDATES
    assert int(np.argmax(share)) in plain.candidates


def test_labels_the_screen_found_no_trigger_for_are_confirmed_and_no_statistic_confirms_everything():
    converged = {**CONVERGED, 4: False, 8: False}
    sel = choose(L1, converged, "log_l1", 3.5, 1.5, 4)
    assert {4, 8} <= set(sel.candidates) and "never reached the attack threshold" in sel.why[8]
    same = {k: 30.0 for k in range(6)}  # MAD 0: screening cannot rank, so every label is confirmed
    sel = choose(same, {k: True for k in same}, "log_l1", 3.5, 1.5, 2)
    assert sel.confirmed == list(range(6)) and "could not rank" in sel.why[0]


def test_a_screen_that_has_not_separated_the_labels_cannot_drop_the_target():
    """As on a third-party GTSRB model: after the screen every mask is still large (L1 50-95 of 1024) and
    most searches have not reached the attack threshold, the target's among them; ranked on the found
    triggers alone it was never confirmed. Every label the screen found no trigger for is confirmed."""
    rng = np.random.default_rng(3)
    l1 = dict(enumerate(rng.uniform(50, 95, 43).tolist()))
    converged = {k: bool(rng.random() < 0.3) for k in l1}
    target = next(k for k, ok in converged.items() if not ok)
    l1[target] = float(np.median(list(l1.values())))  # in the middle of the pack: nothing points at it
    sel = choose(l1, converged, "log_l1", 1.11, 0.5, 3, 0.7)
    assert target in sel.candidates
    assert {k for k, ok in converged.items() if not ok} <= set(sel.confirmed)


def test_references_are_the_ordinary_labels_nearest_the_median():
    l1 = {0: 5.0, 1: 20.0, 2: 40.0, 3: 45.0, 4: 50.0, 5: 400.0, 6: 90.0}  # median 45 (label 3)
    assert median_references(l1, [1, 2, 3, 4, 5, 6], 3) == [2, 3, 4]
    assert median_references(l1, [1, 5, 6], 2) == [1, 6]  # 20 and 90 lie nearer 45 than 400 on the log scale
    assert median_references(l1, [1, 2], 0) == [] and median_references(l1, [], 3) == []


def test_a_verdict_that_hangs_on_the_shift_asks_for_more_references():
    screened = dict(L1)
    sel = Selection([4], [0, 1, 2])
    converged = {k: True for k in L1}

    def confirmed(ratios):  # label 4 confirmed at 14.3: flagged only for shifts above about -0.3
        return {4: 14.3, **{k: screened[k] * math.exp(r) for k, r in zip(sel.references, ratios, strict=True)}}

    assert shift_decides(screened, confirmed([-0.6, -0.25, 0.05]), converged, sel, "log_l1", 1.11, 0.7)
    assert not shift_decides(screened, confirmed([-0.2, -0.15, -0.1]), converged, sel, "log_l1", 1.11, 0.7)
    assert not shift_decides(screened, {4: 14.3, 0: 30.0}, converged, sel, "log_l1", 1.11, 0.7)  # one ratio
    wider = widen(sel, screened, 2)
    assert len(wider.second_round) == 2 and not set(wider.second_round) & {0, 1, 2, 4}
    assert wider.references == sorted([0, 1, 2, *wider.second_round]) and wider.candidates == [4]
    assert all("second round" in wider.why[k] for k in wider.second_round)


def test_scale_shift_is_the_median_log_ratio_of_the_references():
    screened = {1: 50.0, 2: 60.0, 3: 40.0, 4: 10.0}
    confirmed = {1: 40.0, 2: 45.0, 3: 36.0, 4: 1.0}
    shift = scale_shift(screened, confirmed, [1, 2, 3])  # label 4 is a candidate, not a reference
    assert shift == pytest.approx(float(np.median([math.log(0.8), math.log(0.75), math.log(0.9)])))
    assert scale_shift(screened, confirmed, []) == 0.0


def test_subset_spreads_over_class_sorted_samples():
    labels = np.repeat(np.arange(10), 16)  # 160 samples stored class by class
    assert set(labels[subset_indices(160, 64)]) == set(range(10))
    assert len(subset_indices(10, 64)) == 10


def test_auto_screens_only_many_labels():
    assert not screening_wanted("auto", 10, 16) and screening_wanted("auto", 43, 16)
    assert screening_wanted("on", 10, 16) and not screening_wanted("off", 43, 16)


def scan(info, tmp_path, **keys):
    cfg = load_config(info.config)
    cfg.output.dir = str(tmp_path / "runs")
    for key, value in keys.items():
        setattr(cfg.scan, key, value)
    return cfg


def test_a_screened_scan_finds_the_demo_backdoor_and_matches_a_plain_scan(demo_backdoored, tmp_path):
    events = []
    screened = run_scan(scan(demo_backdoored, tmp_path, screening="on", confirm_references=3), events.append)
    screens = [e for e in events if e.kind == "trial_finished" and e.stage == "screen"]
    # the screen runs its whole budget: the converge shortcut (a window of full-sample steps) is off there
    assert len(screens) == 10 and all(e.record.stop_reason != "converged" for e in screens)
    plain = run_scan(scan(demo_backdoored, tmp_path, screening="off"))
    target = demo_backdoored.target
    assert screened.verdict == plain.verdict == "backdoored" and screened.flagged == plain.flagged == [target]
    confirmed = set(screened.screening["candidates"]) | set(screened.screening["references"])
    assert target in screened.screening["candidates"] and len(screened.screening["why"]) == 10
    for row in screened.labels:  # confirmed labels ran with a plain scan's seeds: the very same numbers
        twin = plain.row(row.label)
        if row.label in confirmed:
            assert row.stage == "confirmed" and row.l1_norm == twin.l1_norm and row.screen_l1 is not None
        else:
            assert row.stage == "screened" and not row.flagged
    assert plain.labels[0].stage == "full"


def test_a_screened_scan_stopped_while_screening_resumes(demo_backdoored, tmp_path):
    stop = threading.Event()
    seen = []

    def on_event(e):
        if e.kind == "trial_finished":
            seen.append(e.stage)
            if len(seen) == 3:
                stop.set()

    # two searches at a time, so the stop comes while screening (searches in a group finish together)
    cfg = scan(demo_backdoored, tmp_path, screening="on", confirm_references=2, group_size=2)
    partial = run_scan(cfg, on_event, stop)
    assert not partial.complete and set(seen) == {"screen"} and 3 <= len(seen) < 10
    events = []
    final = run_scan(None, events.append, resume=partial.run_dir)
    assert final.complete and final.flagged == [demo_backdoored.target]
    assert any(e.kind == "screening_finished" for e in events)
    # the screening passes finished before the stop were not run again
    assert sum(1 for e in events if e.kind == "trial_finished" and e.stage == "screen") == 10 - len(seen)


def test_the_table_says_which_labels_were_only_screened():
    from nc_engine.detectors.neural_cleanse.screening import Selection
    from nc_engine.verdict.formatting import table_lines
    from nc_engine.verdict.report import build_report
    from nc_engine.verdict.rows import ScanInfo

    trials = [record(k, seed=k, l1_norm=v, asr=0.99, steps=40, stage="screen") for k, v in L1.items()]
    sel = choose(L1, CONVERGED, "log_l1", 3.5, 1.5, 3)
    trials += [
        dataclasses.replace(t, stage="trial", l1_norm=t.l1_norm * 0.8) for t in trials if t.label in sel.confirmed
    ]
    info = ScanInfo(clean_accuracy=0.95, class_names=[str(k) for k in L1])
    report = build_report(
        trials,
        labels_planned=list(L1),
        threshold=3.5,
        statistic="log_l1",
        info=info,
        selection=Selection(sel.candidates, sel.references),
    )
    assert report.complete and report.flagged == [4]
    assert report.screening["log_shift"] == pytest.approx(math.log(0.8))
    lines = {line.split()[0]: line for line in table_lines(report)[1:]}
    for k in L1:
        assert lines[str(k)].endswith("screened") == (k not in sel.confirmed)


def test_a_second_round_confirms_more_references_and_keeps_the_verdict(demo_backdoored, tmp_path, monkeypatch):
    monkeypatch.setattr("nc_engine.run.scan.shift_decides", lambda *args: True)  # as if the first ratios disagreed
    events = []
    report = run_scan(scan(demo_backdoored, tmp_path, screening="on", confirm_references=2), events.append)
    rounds = [e for e in events if e.kind == "screening_finished"]
    assert len(rounds) == 2 and not rounds[0].second_round and len(rounds[1].second_round) == 2
    assert report.complete and report.flagged == [demo_backdoored.target]
    assert report.screening["second_round"] == rounds[1].second_round
    assert len(report.screening["references"]) == 4
    for label in rounds[1].second_round:
        assert report.row(label).stage == "confirmed"
    confirmations = [e.label for e in events if e.kind == "trial_finished" and e.stage == "trial"]
    assert sorted(confirmations) == sorted(set(rounds[0].candidates) | set(report.screening["references"]))


def test_a_scan_stopped_before_its_second_round_resumes_into_it(demo_backdoored, tmp_path, monkeypatch):
    monkeypatch.setattr("nc_engine.run.scan.shift_decides", lambda *args: True)
    stop = threading.Event()
    rounds = []

    def on_event(e):
        if e.kind == "screening_finished":
            rounds.append(e)
            if e.second_round:
                stop.set()

    partial = run_scan(scan(demo_backdoored, tmp_path, screening="on", confirm_references=2), on_event, stop)
    assert not partial.complete and len(rounds) == 2
    events = []
    final = run_scan(None, events.append, resume=partial.run_dir)
    assert final.complete and final.flagged == [demo_backdoored.target]
    assert final.screening["second_round"] == rounds[1].second_round
    # only the second round's confirmations ran: no screen and no first-round label was searched again
    redone = sorted(e.label for e in events if e.kind == "trial_finished")
    assert redone == rounds[1].second_round and all(e.stage == "trial" for e in events if e.kind == "trial_finished")
