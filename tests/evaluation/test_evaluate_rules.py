import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from evaluation import decision_rules as dr
from evaluation.evaluate_report import flaggable, under_rule, write_markdown
from evaluation.zoo_split import load_split
from nc_engine.verdict.outliers import (
    DEFAULT_SPREAD_FLOOR,
    DEFAULT_THRESHOLD,
    MAD_CONSTANT,
    anomaly_scores,
    family_wise,
    mad_outliers,
)

RESULTS = Path(__file__).resolve().parents[2] / "evaluation" / "campaigns" / "main-gpu" / "evaluation.jsonl"
TEN = [10.0, 50.0, 52.0, 54.0, 56.0, 58.0, 60.0, 62.0, 64.0, 66.0]


def test_leave_one_out_gives_a_lone_outlier_a_higher_index():
    plain = anomaly_scores(TEN, "l1")
    loo = anomaly_scores(TEN, "l1", leave_one_out=True)
    assert loo[0] > plain[0] > 0
    others = TEN[1:]  # hand-computed: the outlier measured against the other nine only
    median = statistics.median(others)
    mad = MAD_CONSTANT * statistics.median(abs(v - median) for v in others)
    assert loo[0] == pytest.approx((median - 10.0) / mad)


def test_plain_scores_are_mad_outliers_index():
    for statistic in ("l1", "log_l1"):
        assert anomaly_scores(TEN, statistic) == pytest.approx(mad_outliers(TEN, 2.0, None, statistic).anomaly_index)


def test_leave_one_out_option_of_mad_outliers():
    r = mad_outliers(TEN, 3.5, [True] * 10, "log_l1", leave_one_out=True)
    assert r.anomaly_index == pytest.approx(anomaly_scores(TEN, "log_l1", leave_one_out=True))
    assert r.flagged == [True] + [False] * 9
    # of all labels, as the plain test reports it (log_l1: the exp of the median log)
    assert r.median == pytest.approx(math.exp(statistics.median(math.log(v) for v in TEN)))
    assert 10.0 < r.cutoff < 50.0  # the flagging line for the smallest norm lies between it and the rest
    assert not any(mad_outliers(TEN, 3.5, [False] + [True] * 9, "log_l1", leave_one_out=True).flagged)
    assert mad_outliers([3.0, 40.0], 2.0, leave_one_out=True).note


def test_family_wise_is_stricter_with_more_labels_and_keeps_order():
    z = [4.0, 3.0, 1.0, 0.0, -1.0]
    fw = family_wise(z)
    assert fw == sorted(fw, reverse=True) and fw[0] < 4.0
    assert family_wise([3.0] + [0.0] * 42)[0] < family_wise([3.0] + [0.0] * 9)[0]
    assert family_wise([50.0, 0.0, 0.0])[0] == 50.0  # far beyond double precision: left as is
    assert family_wise([3.0])[0] == pytest.approx(3.0)  # one label: nothing to correct


def test_auc_perfect_reversed_and_ties():
    assert dr.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert dr.auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert dr.auc([1.0], [1.0]) == 0.5
    assert dr.auc([], [1.0]) is None


def test_roc_runs_from_everything_flagged_to_nothing():
    points = dr.roc([3.0, 5.0], [1.0, 4.0])
    assert points[0] == (-math.inf, 1.0, 1.0) and points[-1] == (5.0, 0.0, 0.0)
    assert (3.0, 0.5, 0.5) in points


def test_threshold_respects_the_fpr_cap():
    neg = [float(k) for k in range(20)]  # 0..19: with a 5% cap one clean scan (19) may be flagged
    pos = [10.5, 18.5, 30.0]
    t = dr.choose_threshold(pos, neg, 0.05)
    assert dr.rate(neg, t) <= 0.05 and dr.rate(pos, t) == pytest.approx(2 / 3)
    assert 18.0 <= t < 18.5  # between the highest clean score it must not flag and the next target
    t0 = dr.choose_threshold(pos, neg, 0.0)
    assert dr.rate(neg, t0) == 0.0 and 19.0 <= t0 < 30.0


def test_scan_score_only_counts_eligible_labels():
    l1 = [5.0, 50.0, 52.0, 54.0, 56.0]
    clean = {"backdoor": False, "l1": l1, "converged": [False, True, True, True, True]}
    assert dr.scan_score(clean, dr.RULES["l1"][0]) < 1.0  # the unconverged small norm cannot raise an alarm
    bad = {"backdoor": True, "target": 0, "l1": l1, "converged": [True] * 5}
    assert dr.scan_score(bad, dr.RULES["l1"][0]) > 2.0
    assert dr.scan_score({**bad, "target": 4}, dr.RULES["l1"][0]) == -math.inf  # above the median


def test_screened_labels_cannot_be_flagged_by_a_rejudged_rule():
    """A screened scan's unconfirmed norms are estimates moved onto the confirmed scale: the engine never
    flags them, so neither may a rule that re-judges the record."""
    l1 = [5.0, 50.0, 52.0, 54.0, 56.0]
    clean = {
        "backdoor": False,
        "target": None,
        "l1": l1,
        "converged": [True] * 5,
        "stages": ["screened", "confirmed", "confirmed", "screened", "screened"],
    }
    assert dr.scan_score(clean, dr.RULES["l1"][0]) < 1.0
    assert under_rule(clean, "l1", 2.0)["verdict"] == "clean"
    confirmed = {**clean, "stages": ["confirmed"] * 5}
    assert dr.scan_score(confirmed, dr.RULES["l1"][0]) > 2.0
    assert under_rule(confirmed, "l1", 2.0)["flagged"] == [0]
    assert flaggable({"l1": l1}) is None  # older records: every label may be flagged


def _record(model: str, kind: str, verdict: str, seed: int = 0, reasons: list[str] | None = None) -> dict:
    target = None if kind == "clean" else 0
    return {
        "model": model,
        "dataset": "mnist",
        "arch": "smallcnn",
        "kind": kind,
        "backdoor": target is not None,
        "target": target,
        "preset": "default",
        "seed": seed,
        "verdict": verdict,
        "flagged": [0] if verdict == "backdoored" else [],
        "max_other_index": 0.3,
        "seconds": 5.0,
        "labels": 5,
        "real_l1": 9,
        "real_asr": 0.99,
        "l1": [5.0, 50.0, 52.0, 54.0, 56.0],
        "converged": [True] * 5,
        "target_flagged": verdict == "backdoored",
        "target_index": 4.0,
        "target_rank": 1,
        "target_l1": 5.0,
        "target_asr": 0.99,
        "reasons": reasons or [],
        "device": "cpu",
    }


def test_engine_verdicts_report_keeps_inconclusive_outcomes(tmp_path):
    records = [
        _record("mnist-smallcnn-patch-00", "patch", "backdoored"),
        _record("mnist-smallcnn-patch-00", "patch", "inconclusive", 1, ["most labels did not converge"]),
        _record("mnist-smallcnn-clean-00", "clean", "clean"),
    ]
    out = tmp_path / "R.md"
    write_markdown(records, [], out, rejudge=False)
    text = out.read_text()
    assert "inconclusive (any model)" in text and "as each scan gave them" in text
    assert "- mnist-smallcnn-patch-00 seed 1: inconclusive (most labels did not converge)" in text
    assert "seed 1: missed" in text  # an inconclusive scan of a backdoored model did not find it
    write_markdown(records, [], out)  # re-judged from the norms: label 0 stands far below the rest
    assert "inconclusive (any model)" not in out.read_text()


def test_main_on_a_slice_of_the_real_records(tmp_path):
    split = load_split()
    records = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    wanted = set()
    for half in ("tuning", "test"):  # a few patch and clean models of each half, every seed and preset
        for kind in ("patch", "clean"):
            wanted |= set(
                sorted(
                    {
                        r["model"]
                        for r in records
                        if split[r["model"]] == half and r["kind"] == kind and (r["real_asr"] or 1.0) >= 0.9
                    }
                )[:2]
            )
    part = tmp_path / "slice.jsonl"
    part.write_text("".join(json.dumps(r) + "\n" for r in records if r["model"] in wanted))
    out = tmp_path / "RULES.md"
    assert dr.main(["--results", str(part), "--rebuild", "", "--markdown", str(out)]) == 0
    text = out.read_text()
    for heading in ("## The split", "## Tuning half", "## Test half", "## What it means", "## ROC curves"):
        assert heading in text
    test_table = text.split("## Test half")[1].split("##")[0]
    for name in dr.RULES:
        assert f"| {name} > " in test_table
    rows = [line for line in test_table.splitlines() if line.startswith("| log_l1 > ")]
    assert rows and all("/6 (" in r and "/4 (" in r for r in rows)  # 2 models x 3 seeds
    assert "`slice.jsonl` seeds 0 `fast`" in text  # the other presets as secondary rows


def test_engine_default_is_the_rule_chosen_on_the_tuning_half():
    """The engine's default statistic, floor and threshold are what decision_rules.py picks from the committed
    scan records using the tuning half alone; a new record set or split that changes the pick fails here."""
    records = dr.main_records(RESULTS)
    results, grid = dr.analyse(records, load_split(), 0.05)
    best = dr.recommend(results)
    assert best.name == f"log_l1_floor({DEFAULT_SPREAD_FLOOR['log_l1']})"
    assert best.threshold == pytest.approx(DEFAULT_THRESHOLD["log_l1"])
    assert {c.floor for c in grid} == set(dr.FLOORS)


def test_a_rebuild_of_several_files_is_one_source(tmp_path):
    """`--rebuild a+b` (two draws of one build) gives one row of both files' scans, naming each file's
    seeds; a,b gives two; a scan recorded in both files is refused rather than counted twice."""
    default = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    default = [r for r in default if r["preset"] == "default"][:10]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in default[:6]))
    b.write_text("".join(json.dumps(r) + "\n" for r in default[6:]))
    sources = dr.secondary_sources(a, [[a, b], [b]])  # a is the main file: its default scans are no row
    seeds = [
        ",".join(str(s) for s in sorted({r["seed"] for r in dr.scored(part)})) for part in (default[:6], default[6:])
    ]
    assert [name for name, _ in sources] == [
        f"`a.jsonl` seeds {seeds[0]} + `b.jsonl` seeds {seeds[1]} `default`",
        f"`b.jsonl` seeds {seeds[1]} `default`",
    ]
    assert sources[0][1] == dr.scored(default) and sources[1][1] == dr.scored(default[6:])
    c = tmp_path / "c.jsonl"  # one scan of a made again: it takes that scan's place, the rest stay
    redone = {**default[0], "flagged": [], "l1": list(reversed(default[0]["l1"]))}
    c.write_text(json.dumps(redone) + "\n")
    ((name, records),) = dr.secondary_sources(a, [[a, b]], [[c]])
    assert name.endswith(" with `c.jsonl` in place of the scans it repeats `default`")
    assert len(records) == len(dr.scored(default)) and redone in records and default[0] not in records
    b.write_text("".join(json.dumps(r) + "\n" for r in default[5:]))
    with pytest.raises(ValueError, match="recorded twice"):
        dr.secondary_sources(a, [[a, b]])


def test_mask_spread_tells_a_patch_from_strokes_and_refuses_bad_files(tmp_path):
    from evaluation.evaluate import mask_spread

    patch = np.zeros((28, 28), np.float32)
    patch[2:5, 22:25] = 1.0  # a 3x3 corner patch
    strokes = np.zeros((28, 28), np.float32)
    strokes[4:24, 8] = strokes[4:24, 20] = strokes[14, 8:21] = 0.3  # an "H" across the digit area
    for name, mask in (("patch", patch), ("strokes", strokes), ("empty", np.zeros((28, 28), np.float32))):
        np.savez(tmp_path / f"{name}.npz", mask=mask, pattern=np.zeros((1, 28, 28), np.float32))
    tight, wide = mask_spread(tmp_path / "patch.npz"), mask_spread(tmp_path / "strokes.npz")
    assert tight == pytest.approx(np.sqrt(4 / 3) / 28)  # a 3x3 square's radius of gyration over the side
    assert wide > 5 * tight
    assert mask_spread(tmp_path / "empty.npz") is None
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert mask_spread(tmp_path / "bad.npz") is None and mask_spread(tmp_path / "missing.npz") is None


def test_records_scanned_with_the_frequency_correction_are_rejudged_with_it():
    """A record of a scan made with the class-frequency correction is judged from its line again (the
    engine's own verdict); an older record, or one made with it off, from its raw norms."""
    rng = np.random.default_rng(0)
    share = np.geomspace(1, 12, 43)
    rng.shuffle(share)
    share /= share.sum()
    l1 = (50 * np.exp(-0.8 * (np.log(share) - np.median(np.log(share))) + rng.normal(0, 0.15, 43))).tolist()
    record = {
        "backdoor": False,
        "target": None,
        "l1": l1,
        "converged": [True] * 43,
        "label_share": share.tolist(),
        "frequency_correction": True,
    }
    floor = DEFAULT_SPREAD_FLOOR["log_l1"]
    assert under_rule(record, "log_l1", 1.11, floor)["verdict"] == "clean"
    assert under_rule({**record, "frequency_correction": False}, "log_l1", 1.11, floor)["verdict"] == "backdoored"
    unshared = {**{k: v for k, v in record.items() if k != "label_share"}, "dataset": "cifar10"}
    assert under_rule(unshared, "log_l1", 1.11, floor)["verdict"] == "backdoored"  # its data's shares: balanced
    rule = dr.floor_rule(floor, False)[0]
    # decision_rules names the correction in the rule, whatever the record says: each row is one rule
    assert dr.scan_score(record, dr.FrequencyCorrected(rule)) < 1.11 < dr.scan_score(record, rule)
    assert dr.scan_score({**record, "frequency_correction": False}, dr.FrequencyCorrected(rule)) < 1.11
