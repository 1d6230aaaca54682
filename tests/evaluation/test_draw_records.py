"""The draws' records say which build of a model they measured: a model trained again with other training
gets records of its own, and the tables and the rule read only the records of the models as built now."""

from __future__ import annotations

import json

from evaluation.records import built_now, training_of_built
from evaluation.transform_probe import rule_report


def test_records_are_read_for_the_build_in_the_folder_only(tmp_path):
    folder = tmp_path / "mnist-smallcnn-sig-70"
    folder.mkdir()
    first = {"model": folder.name, "costs": {}}  # the first development build wrote no training
    second = {**first, "training": {"images": 60000, "epochs": 6, "lr": 0.002, "augmented": False}}
    (folder / "manifest.json").write_text(json.dumps({"name": folder.name}))
    assert built_now(first, tmp_path) and not built_now(second, tmp_path)
    (folder / "manifest.json").write_text(json.dumps({"name": folder.name, "training": second["training"]}))
    assert training_of_built(folder) == second["training"]
    assert built_now(second, tmp_path) and not built_now(first, tmp_path)
    assert not built_now({**second, "model": "not-built"}, tmp_path)


def test_the_rule_compares_with_the_default_scan_not_a_plain_one():
    costs = {"blend": [0.01] + [0.5] * 9}  # label 0 at 50x less strength: flagged at any cut here
    record = {"model": "m", "kind": "sig", "targets": [0], "asr": [1.0], "costs": costs, "images": 30_000}
    default = {"model": "m", "seed": 0, "verdict": "clean", "flagged": [], "images": 100_000}
    plain = {**default, "screening": "off", "verdict": "backdoored", "flagged": [0], "images": 400_000}
    clean = {**record, "model": "c", "kind": "clean", "targets": [], "asr": [], "costs": {"blend": [0.1] * 10}}
    report = rule_report([record, clean], [default, plain])
    assert "shipped scan: clean []" in report and "1.30x-1.30x" in report
