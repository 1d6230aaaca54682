"""Mitigation (#6) on a real BadNets MNIST model: unlearning removes the real trigger, pruning and the
input filter report sensible numbers, unlearning never stamps a flagged label's own images, and bad
input gives one-line errors."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from PIL import Image

from nc_engine.errors import MitigationError, NCError
from tests.conftest import require_shared


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A BadNets MNIST SmallCNN (3x3 white patch at (24, 24)) and a finished default scan of it."""
    from tests.factory import MNIST, held_out_images, scanned_mnist

    require_shared(MNIST)
    manifest, run = scanned_mnist(tmp_path_factory.mktemp("mitigate"))
    report = json.loads((run / "report.json").read_text())
    assert manifest["target"] in report["flagged"]
    x, y = held_out_images(run)
    return {"manifest": manifest, "run": run, "x": x, "y": y}


def _report_path(out: str):
    from pathlib import Path

    return Path(next(line for line in out.splitlines() if line.startswith("report: "))[len("report: ") :])


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_unlearning_removes_the_real_trigger(scanned):
    from nc_engine.mitigate import MitigationOptions, run_mitigation
    from tests.factory import real_trigger_asr

    m, run = scanned["manifest"], scanned["run"]
    model_file = run.parent.parent / "model" / "model.pt"
    original = _sha(model_file)
    events = []
    report = run_mitigation(run, "unlearn", MitigationOptions(rescan=True), events.append)
    assert _sha(model_file) == original  # the input model is never overwritten
    kinds = {e.kind for e in events}
    assert {"mitigation_started", "train_progress", "mitigation_finished"} <= kinds
    before = real_trigger_asr(run / "config.toml", scanned["x"], scanned["y"], m["trigger"], m["target"])
    after = real_trigger_asr(report["config_path"], scanned["x"], scanned["y"], m["trigger"], m["target"])
    print(
        f"unlearn: real-trigger ASR {before:.1%} -> {after:.1%}, clean accuracy "
        f"{report['clean_accuracy']['before']:.1%} -> {report['clean_accuracy']['after']:.1%}, "
        f"{report['seconds']:.1f}s"
    )
    assert before > 0.95 and after < 0.05
    acc = report["clean_accuracy"]
    assert acc["before"] - acc["after"] <= 0.02
    assert report["asr"][str(m["target"])]["after"] < 0.05  # the reversed trigger too
    saved = json.loads(open(report["report_path"]).read())
    assert saved["method"] == "unlearn" and saved["stamped_images"] > 0
    # the re-scan of the repaired model: the target's anomaly index falls
    scan = json.loads((run / "report.json").read_text())  # the file as written, read as plain JSON
    index = {r["label"]: r["anomaly_index"] for r in saved["rescan"]["labels"]}
    old = next(r["anomaly_index"] for r in scan["labels"] if r["label"] == m["target"])
    print(f"re-scan: {saved['rescan']['verdict']}, target's anomaly index {old:.2f} -> {index[m['target']]:.2f}")
    assert len(index) == 10 and index[m["target"]] < old


def test_options_file_and_other_clean_data(scanned, tmp_path, capsys):
    from nc_tui.cli import main
    from tests.factory import MNIST

    opts = tmp_path / "mitigate.toml"
    opts.write_text("[mitigate]\nsamples = 2000\ntop_fraction = 0.2\nfpr = 0.1\n")
    data = tmp_path / "train_data.toml"
    data.write_text(f'[data]\nformat = "npz"\npath = "{MNIST.resolve()}"\nsplit = "train"\n')
    assert (
        main(["mitigate", str(scanned["run"]), "--method", "filter", "--options", str(opts), "--data", str(data)]) == 0
    )
    out = capsys.readouterr().out
    assert "2000 clean images to work with" in out
    report = json.loads(_report_path(out).read_text())  # filter/ or filter-2/: runs never overwrite each other
    assert report["train_images"] == 2000 and report["options"]["fpr"] == 0.1
    assert len(report["units"][str(scanned["manifest"]["target"])]) == 13  # 20% of 64 units


def test_pruning_lowers_the_reversed_trigger_asr(scanned):
    from nc_engine.config.settings import load_config
    from nc_engine.mitigate import MitigationOptions, run_mitigation
    from nc_engine.models.load import load_model
    from tests.factory import real_trigger_asr

    m, run = scanned["manifest"], scanned["run"]
    report = run_mitigation(run, "prune", MitigationOptions())
    target = str(m["target"])
    assert report["layer"] == "fc2" and report["layer_units"] == 64  # the input of the last Linear
    assert report["curve"][0]["units"] == 0 and len(report["curve"]) >= 2
    assert report["asr"][target]["after"] < report["asr"][target]["before"] - 0.05
    drop = report["clean_accuracy"]["before"] - report["clean_accuracy"]["after"]
    # the stop rule keeps the validation drop within 2 points; held-out data is close (here 3 points exactly,
    # 0.981 - 0.951 in float32 is 0.030000031: the tolerance is float32's, not a looser bound)
    assert drop <= 0.03 + 1e-6
    net = load_model(load_config(report["config_path"]), torch.device("cpu")).net
    assert float(net.fc2.weight[:, report["pruned_units"]].abs().sum()) == 0  # the saved model is pruned
    after = real_trigger_asr(report["config_path"], scanned["x"], scanned["y"], m["trigger"], m["target"])
    print(
        f"prune: {report['pruned_fraction']:.0%} of fc2's inputs, reversed-trigger ASR "
        f"{report['asr'][target]['before']:.1%} -> {report['asr'][target]['after']:.1%}, real-trigger ASR "
        f"-> {after:.1%}, clean accuracy {report['clean_accuracy']['before']:.1%} -> "
        f"{report['clean_accuracy']['after']:.1%}, {report['seconds']:.1f}s"
    )


def test_filter_calibrates_and_labels_images(scanned, tmp_path, capsys):
    from nc_engine.demo.training import PatchTrigger, stamp_patch
    from nc_tui.cli import main
    from tests.factory import filtered_real_asr

    m, run = scanned["manifest"], scanned["run"]
    assert main(["mitigate", str(run), "--method", "filter"]) == 0
    out = capsys.readouterr().out
    assert "false positives on clean held-out images" in out and "clean accuracy" in out
    report = json.loads(_report_path(out).read_text())
    assert 0.0 < report["fpr"] < 0.10  # calibrated at 5% on other clean images
    assert report["fnr"][str(m["target"])] < 0.2
    asr, caught = filtered_real_asr(report["detector"], scanned["x"], scanned["y"], m["trigger"], m["target"])
    print(
        f"filter: FPR {report['fpr']:.1%}, FNR (reversed) {report['fnr'][str(m['target'])]:.1%}, real-trigger "
        f"inputs flagged {caught:.1%}, real-trigger ASR through the filter {asr:.1%}"
    )
    assert caught > 0.8
    # `nc-tui filter`: PNG files in, one line per image out
    x, y = scanned["x"], scanned["y"]
    clean = x[y != m["target"]][:20]
    stamped = stamp_patch(clean, PatchTrigger(**m["trigger"]))
    paths = []
    for i, img in enumerate([*clean, *stamped]):
        paths.append(tmp_path / f"img{i:02d}.png")
        Image.fromarray(img).save(paths[-1])
    capsys.readouterr()
    assert main(["filter", report["detector"], *map(str, paths)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 40 and all(len(line.split("\t")) == 3 for line in lines)
    verdicts = [line.split("\t")[2] for line in lines]
    assert verdicts[:20].count("clean") >= 16 and verdicts[20:].count("TRIGGERED") >= 16


def test_unlearning_never_stamps_images_of_the_flagged_label():
    from nc_engine.mitigate import stamp_batch

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4000, 1, 8, 8)
    y = torch.arange(4000) % 10
    mask = torch.zeros(8, 8)
    mask[5:8, 5:8] = 1
    one = {3: (mask, torch.ones(1, 8, 8))}
    out, applied = stamp_batch(x, y, one, 0.2, gen)
    assert not bool(((applied == 3) & (y == 3)).any())
    assert torch.equal(out[y == 3], x[y == 3])  # images of label 3 untouched
    changed = (out != x).flatten(1).any(1)
    assert torch.equal(changed, applied == 3)
    assert 0.15 < float((applied == 3)[y != 3].float().mean()) < 0.25  # the fraction, among eligible images
    two = {3: one[3], 7: (mask, torch.zeros(1, 8, 8))}
    for jitter in (0, 2):
        out, applied = stamp_batch(x, y, two, 0.5, gen, jitter)
        assert not bool((applied == y).any())  # never an image's own label's trigger
        assert set(applied.unique().tolist()) == {-1, 3, 7}


def _fake_run(scanned, tmp_path, flagged):
    """A copy of the scan's run folder whose report flags `flagged`."""
    run = tmp_path / "run"
    shutil.copytree(scanned["run"], run, ignore=shutil.ignore_patterns("mitigation", "trials"))
    report = json.loads((run / "report.json").read_text())
    report["flagged"] = flagged
    (run / "report.json").write_text(json.dumps(report))
    return run


def test_errors_are_one_line(scanned, tmp_path, capsys):
    from nc_engine.mitigate import MitigationOptions, load_options, run_mitigation
    from nc_tui.cli import main

    with pytest.raises(NCError, match="run folder not found"):
        run_mitigation(tmp_path / "nope", "unlearn")
    with pytest.raises(MitigationError, match="unknown method 'erase'"):
        run_mitigation(scanned["run"], "erase")
    clean_run = _fake_run(scanned, tmp_path, [])
    with pytest.raises(MitigationError, match="flagged no label.*nothing to mitigate"):
        run_mitigation(clean_run, "prune")
    with pytest.raises(MitigationError, match="label 12 is not in 0..9"):
        run_mitigation(clean_run, "prune", MitigationOptions(labels=[12]))
    with pytest.raises(MitigationError, match="--layer 'conv9' is not a Linear layer"):
        run_mitigation(scanned["run"], "prune", MitigationOptions(layer="conv9"))
    with pytest.raises(MitigationError, match="stamp_fraction"):
        run_mitigation(scanned["run"], "unlearn", MitigationOptions(stamp_fraction=0))
    bad = tmp_path / "opts.toml"
    bad.write_text("[mitigate]\nstamp_fractoin = 0.3\n")
    with pytest.raises(MitigationError, match="unknown key \\[mitigate\\].stamp_fractoin"):
        load_options(bad)
    bad.write_text('[mitigate]\nepochs = "two"\n')
    with pytest.raises(MitigationError, match="epochs must be an integer"):
        load_options(bad)
    (clean_run / "triggers" / "label_004.npz").unlink()
    with pytest.raises(NCError, match="label_004.npz: reversed trigger of label 4 not found"):
        run_mitigation(clean_run, "unlearn", MitigationOptions(labels=[4]))
    for argv, expected in (
        (["mitigate", str(clean_run), "--method", "unlearn"], "nothing to mitigate"),
        (["mitigate", str(tmp_path / "nope"), "--method", "prune"], "run folder not found"),
        (["mitigate", str(clean_run), "--method", "wipe"], "unknown method"),
        (["mitigate", str(clean_run), "--method", "prune", "--labels", "x"], "--labels"),
        (["filter", str(tmp_path / "det.json"), "a.png"], "detector file not found"),
        (["filter", str(bad), "a.png"], "not a detector"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err, err
    assert not (clean_run / "mitigation").exists()  # nothing written for a failed mitigation
