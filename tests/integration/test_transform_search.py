"""The transform search: its per-label costs on a model with a planted image-wide backdoor and on its
clean twin, its lead test, the verdict it joins, and its place in a scan's run folder and reports."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nc_engine import load_config, run_scan
from nc_engine.detectors import transform_search
from nc_engine.detectors.result import read_result
from nc_engine.detectors.transform_result import KINDS, TransformResult, judge_kind
from nc_engine.detectors.transform_search import TransformSettings, search
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.combine import with_detectors
from nc_engine.verdict.formatting import table_rows, verdict_line
from nc_engine.verdict.report import Report
from nc_engine.verdict.sentence import LIMITS_ALL, LIMITS_NC_TRANSFORMS, verdict_sentence
from tests.report_factory import label_row, report
from tests.tiny_scan import write_tiny

SIDE = 16
PIXELS = 3 * SIDE * SIDE


class Templates(nn.Module):
    """10 labels, each a random +-1 template that clean images sit near. With `plant`, label 3 also answers
    a faint image-wide direction `v` (a smooth threshold, as a trained backdoor's feature is): an additive
    signal along it turns any image into 3 at a fraction of the strength another template needs."""

    def __init__(self, plant: bool):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.templates = nn.Parameter(torch.randint(0, 2, (10, PIXELS), generator=g).float() * 2 - 1, False)
        v = torch.randn(PIXELS, generator=g)
        self.v = nn.Parameter(v / v.norm(), False)
        self.plant = plant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1) - 0.5
        out = 10 * flat @ self.templates.T / PIXELS
        if self.plant:
            boost = 8 * nn.functional.softplus(5 * (flat @ self.v - 1.0))
            out = out + nn.functional.one_hot(torch.tensor(3), 10)[None] * boost[:, None]
        return out


def _images(model: Templates) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(200) % 10
    noise = 0.05 * torch.randn(200, PIXELS, generator=torch.Generator().manual_seed(1))
    return (0.5 + 0.3 * model.templates[y] + noise).clamp(0, 1).view(200, 3, SIDE, SIDE), y


@pytest.fixture(scope="module")
def planted_and_clean() -> tuple[TransformResult, TransformResult]:
    settings = TransformSettings(kinds=("additive", "blend"))
    found = []
    for plant in (True, False):
        model = Templates(plant).eval()
        x, y = _images(model)
        assert (model(x).argmax(1) == y).all()  # both models classify their clean images right
        found.append(search(model, x, y, 10, settings))
    return found[0], found[1]


def test_a_planted_image_wide_backdoor_is_reached_far_more_cheaply_and_flagged(planted_and_clean):
    planted, clean = planted_and_clean
    additive = {f.kind: f for f in planted.findings}["additive"]
    assert additive.top == 3 and additive.flagged and additive.lead is not None and additive.lead >= 5
    assert planted.flagged == [3]
    assert planted.images == 2 * 10 * TransformSettings.images * TransformSettings.steps


def test_its_clean_twin_is_not_flagged_and_its_labels_cost_alike(planted_and_clean):
    _, clean = planted_and_clean
    assert clean.flagged == []
    for finding in clean.findings:
        assert finding.lead is not None and finding.lead < 1.5


def test_the_lead_test_and_its_refusals():
    cut = KINDS["warp"][2]
    ordinary = [2.0, 2.2, 1.8, 2.4, 2.1, 1.9]
    assert judge_kind("warp", [*ordinary, 2.0 / (cut + 1)]).flagged
    near = judge_kind("warp", [*ordinary, 2.0 / (cut - 1)])
    assert not near.flagged and near.top == 6 and "below the cut" in near.line()
    assert "too few" in judge_kind("warp", [1.0, 2.0, 3.0]).note
    # no label turned: the model ignores this kind of change, so it cannot decide
    unreached = judge_kind("filter", [None, None, None, None, None])
    assert not unreached.flagged and unreached.top is None and "no label is reached" in unreached.note
    # only one label turns: the others count at twice the strongest strength (an estimate of its lead)
    alone = judge_kind("warp", [0.5, None, None, None, None])
    assert alone.flagged and alone.lead == pytest.approx(2 * KINDS["warp"][1] / 0.5)
    # one unreached label counts at twice the strongest strength, not as a cheap one
    assert judge_kind("blend", [0.3, 0.3, 0.3, 0.3, None]).top != 4


def test_a_saved_result_reads_back_and_damage_decides_nothing():
    costs = {"additive": [0.3, 0.31, 0.29, 0.3, 0.02], "blend": [0.4, 0.4, 0.41, 0.39, 0.4]}
    result = TransformResult.judged(costs, 100, 1.0, {})
    again = TransformResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.flagged == result.flagged == [4] and again.costs == costs
    damaged = TransformResult.from_dict({"costs": "junk", "images": "x"})
    assert damaged.flagged == [] and damaged.costs == {} and damaged.images == 0
    assert TransformResult.from_dict({"costs": {"blend": [0.1, "x", 0.2, 0.3, 0.2]}}).costs["blend"][1] is None


def _transforms(costs: dict) -> dict:
    return {"transforms": TransformResult.judged(costs, 10, 0.1, {})}


def test_hostile_saved_costs_read_back_without_raising():
    """A run folder may come from someone else: zeros, negatives, huge integers, bools and text in a saved
    result are damaged values (never reached), not a crash and not a flag."""
    huge = 10**400
    for costs in ([0, 1, 1, 1], [-0.0, 0.5, 0.5, 0.5], [1e-320, 1, 1, 1], [huge, 1, 1, 1], [True, 1, 1, 1]):
        result = read_result("transforms", {"costs": {"blend": costs}, "seconds": huge, "images": True})
        assert result is not None and result.flagged == [] and "inf" not in result.summary()
    assert read_result("transforms", "junk") is None and read_result("nonsense", {}) is None


def test_a_saved_backdoored_verdict_the_cuts_no_longer_support_still_reads():
    """A report written under other cuts says backdoored while today's test flags nothing: the sentence
    names the report's labels instead of failing."""
    report = dataclasses.replace(_report("backdoored", [4]), fired=["transforms"])
    quiet = {"costs": {"blend": [0.4, 0.41, 0.39, 0.4, 0.3]}}
    sentence = verdict_sentence(dataclasses.replace(report, detectors={"transforms": quiet}))
    assert sentence.startswith("BACKDOORED: label 4 is a likely backdoor target")


def _report(verdict: str, flagged: list[int]) -> Report:
    return report(verdict, flagged, labels=5)


def test_a_label_the_transforms_flag_makes_the_verdict_backdoored_and_the_sentence_says_how():
    costs = {"blend": [0.4, 0.41, 0.39, 0.4, 0.05]}
    combined = with_detectors(_report("clean", []), {"transforms": TransformResult.judged(costs, 10, 0.1, {})})
    assert combined.verdict == "backdoored" and combined.flagged == [4] and combined.fired == ["transforms"]
    sentence = verdict_sentence(combined)
    assert "label 4 is a likely backdoor target" in sentence and "blended image 8.0x weaker" in sentence
    assert "transform search: flagged [4]" in verdict_line(combined)
    quiet = {"blend": [0.4, 0.41, 0.39, 0.4, 0.3]}
    clean = with_detectors(_report("clean", []), {"transforms": TransformResult.judged(quiet, 10, 0.1, {})})
    sentence = verdict_sentence(clean)
    # max-margin did not run here: the limits name the detectors that did
    assert clean.verdict == "clean" and sentence.endswith(LIMITS_NC_TRANSFORMS + ".")
    margin = {"margins": [10.0, 11.0, 12.0, 13.0, 11.5], "images": 1, "seconds": 0.1}
    both = with_detectors(clean, {"max_margin": read_result("max_margin", margin), **_transforms(quiet)})
    assert verdict_sentence(both).endswith(LIMITS_ALL + ".")
    assert "weakest transform: label 4, a blended image 1.3x the others', cut 2.5x" in sentence


@pytest.fixture()
def real_detectors(margin_detector_only_where_tested, monkeypatch):
    """The suite skips the extra detectors in its scans (conftest); here they run."""
    import nc_engine.run.scan as scan

    monkeypatch.setattr(scan, "run_detectors", margin_detector_only_where_tested)


def test_a_scan_with_transforms_records_logs_charts_and_reuses_its_evidence(tmp_path, real_detectors):
    config = write_tiny(tmp_path, classes=5, images=100)
    text = config.read_text().replace("[output]", "[detect]\nmax_margin = false\ntransforms = true\n\n[output]")
    config.write_text(text)
    report = run_scan(load_config(config))
    evidence = report.detectors["transforms"]
    # grey images: no colour filter (brightness and contrast alone never decide)
    assert set(evidence["costs"]) == set(KINDS) - {"filter"} and all(len(v) == 5 for v in evidence["costs"].values())
    folder = RunFolder(Path(report.run_dir))
    assert json.loads(folder.detector_path("transforms").read_text())["costs"] == evidence["costs"]
    log = (folder.path / "log.txt").read_text()
    assert "transform search: " in log and "transform search (warp) per label: 0: " in log
    page = (folder.path / "report.html").read_text()
    assert 'id="transform-summary"' in page and 'id="transform-blend-chart"' in page
    # a resume reads the saved result back instead of searching again
    folder.detector_path("transforms").write_text(json.dumps({**evidence, "seconds": 123.0}))
    resumed = run_scan(None, resume=report.run_dir)
    assert resumed.detectors["transforms"]["seconds"] == 123.0


def test_the_label_table_names_the_detector_that_flagged_a_label_neural_cleanse_did_not():
    costs = {"blend": [0.4, 0.41, 0.39, 0.4, 0.05]}
    combined = with_detectors(_report("clean", []), {"transforms": TransformResult.judged(costs, 10, 0.1, {})})
    row = label_row(4)
    shown = table_rows(dataclasses.replace(combined, labels=[row, label_row(0)]))
    status = {r["label"]: r["cells"][-1] for r in shown}
    assert status == {4: "FLAGGED (transform)", 0: ""}


def test_the_colour_filter_and_warp_apply_what_they_say():
    """At strength s the filter is the identity plus a change of Frobenius norm s (per pixel, as a matrix
    product), and the warp moves pixels (none at strength 0): checked against a hand-written product."""
    from nc_engine.detectors.transform_search import _Transform

    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    colour = _Transform("filter", 4, (3, 8, 8), g)
    out = colour.apply(x, torch.full((4,), 0.3)).detach()
    raw = colour.raw.detach()
    change = raw / raw.pow(2).mean(1, keepdim=True).sqrt() * 0.3 / raw.shape[1] ** 0.5
    assert torch.allclose(change.norm(dim=1), torch.full((4,), 0.3))
    matrix, offset = torch.eye(3) + change[:, :9].view(4, 3, 3), change[:, 9:]
    by_hand = (torch.einsum("kij,bjhw->kbihw", matrix, x) + offset.view(4, 1, 3, 1, 1)).clamp(0, 1)
    assert torch.allclose(out, by_hand, atol=1e-6)
    warp = _Transform("warp", 4, (3, 8, 8), g)
    assert torch.allclose(warp.apply(x, torch.zeros(4)), x[None].expand(4, -1, -1, -1, -1), atol=1e-5)
    moved = warp.apply(x, torch.full((4,), 2.0))
    assert moved.shape == (4, 5, 3, 8, 8) and (moved - x[None]).abs().mean() > 0.01


def test_every_kind_runs_on_colour_images():
    model = Templates(plant=True).eval()
    x, y = _images(model)
    result = search(model, x, y, 10, TransformSettings(steps=6))
    assert set(result.costs) == set(KINDS) and all(len(v) == 10 for v in result.costs.values())
    assert result.images == 4 * 10 * TransformSettings.images * 6


def test_labels_go_through_the_model_in_chunks_and_the_costs_are_the_same(planted_and_clean, monkeypatch):
    model = Templates(plant=True).eval()
    x, y = _images(model)
    seen: list[int] = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda batch: seen.append(len(batch)) or forward(batch))
    monkeypatch.setattr(transform_search, "BATCH", 3 * TransformSettings.images)  # 3 labels a pass
    chunked = search(model, x, y, 10, TransformSettings(kinds=("additive", "blend")))
    assert max(seen) == 3 * TransformSettings.images and len(seen) == 2 * 4 * TransformSettings.steps
    assert chunked.costs == planted_and_clean[0].costs and chunked.images == planted_and_clean[0].images
