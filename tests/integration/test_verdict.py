"""Three outcomes, each with its reason: backdoored, clean, and inconclusive whenever the search did
not work or the outlier test has nothing sound to stand on. Never "clean" from a broken scan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from nc_engine import run_scan
from nc_engine.config.settings import config_from_dict
from nc_engine.verdict.formatting import verdict_line
from nc_engine.verdict.outliers import DEFAULT_SPREAD_FLOOR, DEFAULT_THRESHOLD
from nc_engine.verdict.report import Report, build_report
from nc_engine.verdict.rows import ScanInfo
from nc_tui.cli import main
from tests.event_factory import record

CLEAN_L1 = [40.0, 44.0, 38.0, 50.0, 47.0, 41.0, 43.0, 39.0, 52.0, 45.0]


def report_of(l1, converged=None, stop=None, accuracy=0.95, classes=10, share=(), correct=False):
    converged = converged or [True] * len(l1)
    stop = stop or ["converged"] * len(l1)
    trials = [
        record(i, seed=i, l1_norm=v, asr=0.99 if c else 0.2, converged=c, stop_reason=s)
        for i, (v, c, s) in enumerate(zip(l1, converged, stop, strict=True))
    ]
    info = ScanInfo(clean_accuracy=accuracy, class_names=[str(i) for i in range(classes)], label_share=list(share))
    return build_report(
        trials,
        labels_planned=list(range(len(l1))),
        threshold=DEFAULT_THRESHOLD["log_l1"],
        statistic="log_l1",
        info=info,
        spread_floor=DEFAULT_SPREAD_FLOOR["log_l1"],
        frequency_correction=correct,
    )


def test_a_clean_model_is_clean_and_a_small_trigger_is_flagged():
    assert report_of(CLEAN_L1).verdict == "clean"
    backdoored = report_of([8.0] + CLEAN_L1[1:])
    assert backdoored.verdict == "backdoored" and backdoored.flagged == [0] and backdoored.reasons == []


def test_a_clean_verdict_names_the_label_closest_to_the_threshold():
    """A missed backdoor most often ranks first under the threshold: the verdict line says where it stood."""
    l1 = [27.0] + CLEAN_L1[1:]  # about 0.6 of the median: the top of the ranking, not flagged
    report = report_of(l1)
    top = max(report.labels, key=lambda r: r.anomaly_index)
    assert report.verdict == "clean" and top.label == 0 and 0 < top.anomaly_index < report.threshold
    line = verdict_line(report)
    assert line.startswith("Verdict: clean: ")
    assert line.endswith(f"; closest to the threshold: label 0 (0), index {top.anomaly_index:.2f})")
    # an unconverged label's small norm is no candidate: the nearest is the top converged one
    report = report_of(l1, converged=[False] + [True] * 9)
    assert report.verdict == "clean" and "closest to the threshold: label 0 " not in verdict_line(report)
    assert "closest to the threshold: label 2 (2)" in verdict_line(report)  # 38.0, the smallest converged norm
    assert "closest" not in verdict_line(report_of([8.0] + CLEAN_L1[1:]))  # flagged: the line names it
    report.labels[2].stage = "screened"  # a label only screened (never confirmed) is no candidate either
    assert "closest to the threshold: label 7 (7)" in verdict_line(report)  # 39.0, the next smallest


def test_a_flagged_frequent_class_gets_a_caution_and_a_rare_one_does_not():
    """A flagged label holding at least twice the median class's share of the scan data gets a caution on
    the verdict line; the verdict stands."""
    share = [0.3] + [0.7 / 9] * 9  # label 0: 3.9x the median class's share
    frequent = report_of([8.0] + CLEAN_L1[1:], share=share)
    line = verdict_line(frequent)
    assert frequent.verdict == "backdoored" and frequent.flagged == [0]
    assert (
        "Caution: label(s) 0 (0, 30.0% of the scan data) is a frequent class (median class 7.8%)" in line
        and line.endswith("the verdict stands")
    )
    rare = report_of([40.0, 8.0] + CLEAN_L1[2:], share=share)
    assert rare.flagged == [1] and "Caution" not in verdict_line(rare)
    assert "Caution" not in verdict_line(report_of([8.0] + CLEAN_L1[1:]))  # a report from before: no shares
    assert "Caution" not in verdict_line(report_of([8.0] + CLEAN_L1[1:], share=share[:9]))  # wrong length
    again = Report.from_dict(json.loads(json.dumps(frequent.to_dict())))
    assert again.info.label_share == share and verdict_line(again) == line


@pytest.mark.parametrize("ratio, caution", [(2.0, True), (1.99, False)])
def test_the_caution_starts_at_twice_the_median_share(ratio, caution):
    share = [ratio, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    share = [v / sum(share) for v in share]
    assert ("Caution" in verdict_line(report_of([8.0] + CLEAN_L1[1:], share=share))) is caution


def test_the_caution_reads_shares_by_class_and_ignores_absent_classes():
    """A scan of some labels only (rows 0..9 are classes 2..11) and data lacking classes 0 and 1: the
    share is the flagged class's own, and the absent classes do not drag the median down."""
    share = [0.0, 0.0] + [0.08] * 8 + [0.18, 0.18]  # classes 10 and 11: 2.25x the median of those present
    trials = [record(2 + i, seed=i, l1_norm=v, asr=0.99) for i, v in enumerate(CLEAN_L1[:8] + [7.0, 8.0])]
    info = ScanInfo(clean_accuracy=0.95, class_names=[f"c{i}" for i in range(12)], label_share=share)
    report = build_report(
        trials,
        labels_planned=list(range(2, 12)),
        threshold=DEFAULT_THRESHOLD["log_l1"],
        statistic="log_l1",
        info=info,
        spread_floor=DEFAULT_SPREAD_FLOOR["log_l1"],
    )
    line = verdict_line(report)
    assert report.flagged == [10, 11]
    assert "label(s) 10 (c10, 18.0% of the scan data), 11 (c11, 18.0% of the scan data) are frequent classes" in line
    assert "(median class 8.0%)" in line
    report.info.label_share = [0.0] * 7 + [0.08] * 3 + [0.18, 0.18]  # mostly absent: still the present ones' median
    assert "(median class 8.0%)" in verdict_line(report)


def gtsrb_like(seed: int = 0) -> tuple[list[float], list[float]]:
    """43 classes whose shares span 12x and a clean model's norms falling with frequency."""
    rng = np.random.default_rng(seed)
    share = np.geomspace(1, 12, 43)
    rng.shuffle(share)
    share /= share.sum()
    l1 = 50 * np.exp(-0.8 * (np.log(share) - np.median(np.log(share))) + rng.normal(0, 0.15, 43))
    return l1.tolist(), share.tolist()


def test_the_class_frequency_correction_clears_a_frequent_class_and_says_how():
    l1, share = gtsrb_like()
    plain = report_of(l1, classes=43, share=share)
    assert plain.verdict == "backdoored" and plain.frequency_slope == 0.0  # the frequent classes' false alarm
    fixed = report_of(l1, classes=43, share=share, correct=True)
    assert fixed.verdict == "clean" and -1.0 < fixed.frequency_slope < -0.6
    line = verdict_line(fixed)
    assert "median and line are a median-share class's, the line lower for frequent classes" in line
    assert f"goes x{2**fixed.frequency_slope:.2f} per doubling of its share" in line
    # each label's own flagging line: a frequent class must fall further than a rare one
    common, rare = int(np.argmax(share)), int(np.argmin(share))
    assert fixed.cutoff_of(fixed.row(common)) < fixed.cutoff_l1 < fixed.cutoff_of(fixed.row(rare))
    assert plain.cutoff_of(plain.row(common)) == plain.cutoff_l1
    again = Report.from_dict(json.loads(json.dumps(fixed.to_dict())))
    assert (again.frequency_correction, again.frequency_slope, verdict_line(again)) == (
        True,
        fixed.frequency_slope,
        line,
    )
    planted = list(l1)
    planted[common] /= 8  # a backdoor into the commonest class still stands out from the line
    found = report_of(planted, classes=43, share=share, correct=True)
    assert found.flagged == [common]
    assert "Caution" not in verdict_line(found)  # the line already allows for its frequency
    assert "Caution" in verdict_line(report_of(planted, classes=43, share=share))  # not corrected: a caution


def test_frequency_correction_is_a_config_key():
    cfg = config_from_dict(
        {"model": {"path": "m.pt", "num_classes": 10, "input_shape": [1, 28, 28]}, "data": {"path": "d.npz"}}
    )
    assert cfg.detect.frequency_correction is True
    off = config_from_dict(
        {
            "model": {"path": "m.pt", "num_classes": 10, "input_shape": [1, 28, 28]},
            "data": {"path": "d.npz"},
            "detect": {"frequency_correction": False},
        }
    )
    assert off.detect.frequency_correction is False
    with pytest.raises(Exception, match=r"\[detect\]\.frequency_correction"):
        config_from_dict(
            {
                "model": {"path": "m.pt", "num_classes": 10, "input_shape": [1, 28, 28]},
                "data": {"path": "d.npz"},
                "detect": {"frequency_correction": "yes"},
            }
        )


def test_most_labels_unconverged_is_inconclusive_not_clean():
    report = report_of(CLEAN_L1, converged=[True] * 4 + [False] * 6)
    assert report.verdict == "inconclusive"
    assert "only 4 of 10 labels reached the attack success threshold" in report.note


def test_nan_losses_make_a_clean_looking_scan_inconclusive():
    stop = ["nan"] + ["converged"] * 9
    report = report_of(CLEAN_L1, converged=[False] + [True] * 9, stop=stop)
    assert report.verdict == "inconclusive" and "NaN for label(s) 0" in report.note
    # a backdoor found elsewhere still stands: the unknown label cannot hide it
    flagged = report_of([40.0, 7.0] + CLEAN_L1[2:], converged=[False] + [True] * 9, stop=stop)
    assert flagged.verdict == "backdoored" and flagged.flagged == [1]


@pytest.mark.parametrize(
    "accuracy, classes, inconclusive",
    [
        (0.12, 10, True),  # 10 classes: chance is 10%
        (0.50, 10, False),  # a weak but real model (a third-party CIFAR-10 BadNets one sits here) still counts
        (0.52, 2, True),  # binary: chance is 50% (and two labels are too few for the outlier test anyway)
        (0.05, 43, True),  # 43 classes: chance 2.3%; 5% is near it
        (0.30, 43, False),
    ],
)
def test_clean_accuracy_near_chance_is_inconclusive(accuracy, classes, inconclusive):
    l1 = (CLEAN_L1 * 5)[:classes]
    report = report_of([8.0] + l1[1:], accuracy=accuracy, classes=classes)
    assert (report.verdict == "inconclusive") == inconclusive
    if inconclusive:
        assert "near chance" in report.note
    else:
        assert report.verdict == "backdoored"


def test_fewer_than_three_labels_and_zero_mad_are_reasons():
    assert "fewer than 3 labels" in report_of([10.0, 40.0]).note
    assert report_of([10.0, 40.0]).verdict == "inconclusive"
    same = report_of([30.0] * 10)
    assert same.verdict == "inconclusive" and "MAD is 0" in same.note


# ---- whole scans of broken models: the search is skipped and the verdict says why


class NaNNet(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3] * float("nan")


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.flatten(1)))


def tiny_scan_config(tmp_path, net: nn.Module, trace: bool = False):
    torch.manual_seed(0)
    module = torch.jit.trace(net, torch.rand(2, 1, 8, 8), check_trace=False) if trace else torch.jit.script(net)
    module.save(str(tmp_path / "m.pt"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (120, 8, 8), dtype=np.uint8), y=np.arange(120) % 3)
    text = (
        '[model]\nformat = "torchscript"\npath = "m.pt"\nnum_classes = 3\ninput_shape = [1, 8, 8]\n'
        '[data]\nformat = "npz"\npath = "d.npz"\n'
        '[scan]\nsamples = 32\nasr_samples = 32\nbatch_size = 16\nmax_steps = 5\ndevice = "cpu"\n'
        f'[output]\ndir = "{tmp_path / "runs"}"\n'
    )
    (tmp_path / "scan.toml").write_text(text)
    import tomllib

    return config_from_dict(tomllib.loads(text), str(tmp_path / "scan.toml"), tmp_path)


def test_a_model_that_outputs_nan_ends_inconclusive_without_searching(tmp_path):
    report = run_scan(tiny_scan_config(tmp_path, NaNNet()))
    assert report.complete and report.verdict == "inconclusive"
    assert "NaN or infinite scores" in report.note and report.info.images == 0
    log = (tmp_path / "runs").glob("*/log.txt").__next__().read_text()
    assert "Verdict: inconclusive: the model outputs NaN" in log


def test_a_model_with_dropout_left_on_ends_inconclusive(tmp_path):
    net = DropoutNet().train()  # a trace made in train mode keeps dropout on whatever .eval() says
    report = run_scan(tiny_scan_config(tmp_path, net, trace=True))
    assert report.verdict == "inconclusive" and "differ between two identical forward passes" in report.note


def test_fail_on_maps_verdicts_to_exit_codes(tmp_path, capsys):
    tiny_scan_config(tmp_path, NaNNet())
    config = str(tmp_path / "scan.toml")
    assert main(["scan", config, "--headless"]) == 0  # without --fail-on every finished scan exits 0
    assert main(["scan", config, "--headless", "--fail-on", "backdoored"]) == 0
    assert main(["scan", config, "--headless", "--fail-on", "backdoored,inconclusive"]) == 4
    out = capsys.readouterr().out
    assert "Verdict: inconclusive" in out
    with pytest.raises(SystemExit) as exit_:
        main(["scan", config, "--headless", "--fail-on", "clean-ish"])
    assert exit_.value.code == 2


def test_fail_on_backdoored_for_the_demo(demo_backdoored, tmp_path, capsys):
    text = open(demo_backdoored.config).read()
    config = tmp_path / "demo.toml"
    config.write_text(text.replace('path = "demo_', f'path = "{demo_backdoored.folder}/demo_'))
    code = main(["scan", str(config), "--headless", "--out", str(tmp_path / "runs"), "--fail-on", "backdoored"])
    assert code == 3 and "Verdict: BACKDOORED" in capsys.readouterr().out
    run = next((tmp_path / "runs").iterdir())
    assert main(["report", str(run), "--print", "--fail-on", "backdoored,inconclusive"]) == 3
    assert main(["report", str(run), "--print"]) == 0


class SoftmaxNet(nn.Module):
    """Probabilities out, as many deployed models have (softmax inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x.flatten(1)), 1)


def test_low_accuracy_is_explained_and_the_outputs_kind_recorded(tmp_path):
    events = []
    report = run_scan(tiny_scan_config(tmp_path, SoftmaxNet()), events.append)
    assert report.info.outputs == "probabilities (log taken)"
    warning = next(e.message for e in events if e.kind == "warning" and "LOW CLEAN ACCURACY" in e.message)
    assert "If the model is documented as more accurate" in warning and "weak model" in warning
    log = next((tmp_path / "runs").glob("*/log.txt")).read_text()
    assert 'outputs taken as probabilities (log taken) ([model].outputs = "auto")' in log


def test_the_bars_draw_each_labels_own_flagging_line_when_corrected():
    from nc_tui.widgets.bars import l1_bars

    l1, share = gtsrb_like()
    fixed = report_of(l1, classes=43, share=share, correct=True)
    lines = l1_bars(fixed, width=60).plain.splitlines()
    assert "each label's line moves with its class's share (class-frequency correction)" in lines[0]

    def mark(label: int) -> int:
        row = next(line for line in lines[1:] if line.split()[0] == str(label))
        return max(row.rfind("|"), row.rfind("┃"))

    assert mark(int(np.argmax(share))) < mark(int(np.argmin(share)))
    plain = l1_bars(report_of(l1, classes=43, share=share), width=60).plain.splitlines()
    assert "frequent classes" not in plain[0]


def test_a_lone_frequent_target_is_judged_as_it_is_and_keeps_its_caution():
    """One class with 4x the others' share is the backdoor's target: every pair spanning a frequency gap
    involves it, so no line is taken out (slope 0 reported), its caution stays and the verdict stands."""
    share = [0.3] + [0.7 / 9] * 9
    report = report_of([8.0] + CLEAN_L1[1:], share=share, correct=True)
    assert report.flagged == [0] and report.frequency_slope == 0.0
    assert all(r.frequency_factor == 1.0 for r in report.labels)
    line = verdict_line(report)
    assert "Caution: label(s) 0" in line and "class-frequency correction" not in line


def test_each_labels_line_in_the_csv_agrees_with_its_flag_on_a_subset_of_labels():
    """Rows 0..42 scanned as labels 2..44 of 45 classes (two absent from the data): every label is flagged
    exactly when its L1 lies below its own line, and a flagged rare label names that line."""
    l1, share = gtsrb_like(seed=3)
    rare = int(np.argmin(share))
    l1[rare] /= 3  # below its own (raised) line, though perhaps above the median-share line
    trials = [record(2 + k, seed=k, l1_norm=v, asr=0.99) for k, v in enumerate(l1)]
    info = ScanInfo(clean_accuracy=0.95, class_names=[f"c{i}" for i in range(45)], label_share=[0.0, 0.0] + share)
    report = build_report(
        trials,
        labels_planned=list(range(2, 45)),
        threshold=DEFAULT_THRESHOLD["log_l1"],
        statistic="log_l1",
        info=info,
        spread_floor=DEFAULT_SPREAD_FLOOR["log_l1"],
        frequency_correction=True,
    )
    assert report.frequency_slope < 0 and 2 + rare in report.flagged
    for row in report.csv_rows():
        assert row["flagged"] == (row["l1_norm"] < row["cutoff_l1"])
    flagged_row = report.row(2 + rare)
    assert (
        f"{2 + rare} (c{2 + rare}; L1 {flagged_row.l1_norm:.1f}, its line {report.cutoff_of(flagged_row):.1f})"
        in verdict_line(report)
    )
    assert report.cutoff_of(flagged_row) > report.cutoff_l1  # a rare class's line is higher
