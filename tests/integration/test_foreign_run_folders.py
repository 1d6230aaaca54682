"""Run folders someone else hands over (issue 28 items 1-2, issue 27 item 5): a symbolic link inside one
never carries a write outside it, and a FIFO never hangs a resume or a report."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nc_engine import run_scan
from nc_engine.config.fingerprint import scan_prints
from nc_engine.config.settings import load_config
from nc_engine.files import open_append
from nc_tui.cli import main
from tests.tiny_scan import one_line_error, partial_run, write_tiny

OUTSIDE_TEXT = "someone else's file, its last line unterminated"


@pytest.fixture
def stopped(tmp_path) -> Path:
    """A run folder stopped after its first label, in a folder with an outside file beside it."""
    (tmp_path / "outside.txt").write_text(OUTSIDE_TEXT)
    return partial_run(write_tiny(tmp_path))


@pytest.mark.parametrize("name", ["log.txt", "events.jsonl"])
def test_a_log_linked_outside_is_refused_and_the_outside_file_untouched(stopped, capsys, name):
    outside = stopped.parent.parent / "outside.txt"
    (stopped / name).unlink()
    (stopped / name).symlink_to(outside)
    for command in (["scan", "--resume", str(stopped), "--headless"], ["report", str(stopped), "--print"]):
        assert main(command) == 2, command
        one_line_error(capsys, name, "symbolic link")
    assert outside.read_text() == OUTSIDE_TEXT


def test_a_trials_folder_linked_outside_receives_nothing(stopped, capsys, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (stopped / "trials").rename(elsewhere)
    (stopped / "trials").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    assert main(["scan", "--resume", str(stopped), "--headless"]) == 2
    one_line_error(capsys, "trials", "symbolic link")
    assert sorted(p.name for p in elsewhere.iterdir()) == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize(
    "name", ["fingerprints.json", "trials/label_000_trial_0.json", "inflight/label_001_trial_0.npz"]
)
def test_a_fifo_in_a_run_folder_is_refused_at_once(stopped, name):
    path = stopped / name
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    # a subprocess with a deadline: before the fix, open() on the FIFO blocked for ever
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from nc_tui.cli import main; sys.exit(main(sys.argv[1:]))",
            "scan",
            "--resume",
            str(stopped),
            "--headless",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and Path(name).name in result.stderr, result.stderr
    assert "FIFO" in result.stderr


def test_appends_never_follow_a_link_or_a_second_name(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text(OUTSIDE_TEXT)
    (tmp_path / "link.txt").symlink_to(outside)
    os.link(outside, tmp_path / "hard.txt")
    for name in ("link.txt", "hard.txt"):
        with pytest.raises(OSError):
            open_append(tmp_path / name)
    assert outside.read_text() == OUTSIDE_TEXT
    with open_append(tmp_path / "own.txt") as f:
        f.write("a line\n")
    assert (tmp_path / "own.txt").read_text() == "a line\n"


# ---- issue 28 item 4: a run folder's trust_pickle counts only when the user says it again


class Payload:
    """Unpickling this writes `marker`: proof that loading the model ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def rewrite_as_trusted_pickle(run: Path, model: Path) -> None:
    """What someone who can write a run folder could do: point its config at a pickle, say trust_pickle,
    and recompute the fingerprints so that the resume's change check passes."""
    text = (run / "config.toml").read_text()
    text = text.replace('format = "torchscript"', 'format = "pickle"', 1).replace(
        "trust_pickle = false", "trust_pickle = true"
    )
    text = re.sub(r'(?m)^path = ".*m\.pt"$', f'path = "{model}"', text, count=1)
    (run / "config.toml").write_text(text)
    cfg = load_config(run / "config.toml")
    (run / "fingerprints.json").write_text(json.dumps(scan_prints(cfg, text)))


def test_a_run_folder_alone_cannot_opt_in_to_pickle(stopped, capsys, tmp_path):
    marker, model = tmp_path / "ran.txt", tmp_path / "evil.pkl"
    model.write_bytes(pickle.dumps(Payload(marker)))
    finished = Path(run_scan(tmp_path / "c.toml").run_dir)
    for run, command in (
        (stopped, ["scan", "--resume", str(stopped), "--headless"]),
        (finished, ["mitigate", str(finished), "--method", "prune", "--labels", "0"]),
    ):
        rewrite_as_trusted_pickle(run, model)
        assert main(command) == 2, command
        one_line_error(capsys, "config.toml", "trust_pickle", "--trust-pickle")
    assert not marker.exists()


def test_trust_pickle_given_again_resumes_a_pickle_scan(tmp_path, capsys):
    config = write_tiny(tmp_path)
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), tmp_path / "m.pkl")  # a whole module, pickled
    config.write_text(
        config.read_text()
        .replace('path = "m.pt"', 'path = "m.pkl"\ntrust_pickle = true')
        .replace('format = "torchscript"', 'format = "pickle"')
    )
    run = partial_run(config)
    assert main(["scan", "--resume", str(run), "--headless"]) == 2
    one_line_error(capsys, "trust_pickle")
    assert main(["scan", "--resume", str(run), "--headless", "--trust-pickle"]) == 0
    assert json.loads((run / "report.json").read_text())["complete"] is True


# ---- issue 27 item 5: a damaged run folder is one line, or a warning naming the file


@pytest.mark.parametrize("change", [{"l1_norm": "12.5"}, {"label": [0]}, {"steps": True}, {"stage": 3}])
def test_a_trial_of_the_wrong_types_runs_again_with_a_warning_naming_it(stopped, capsys, change):
    path = next((stopped / "trials").glob("label_*_trial_0.json"))
    (path).write_text(json.dumps({**json.loads(path.read_text()), **change}))
    assert main(["scan", "--resume", str(stopped), "--headless"]) == 0
    out = capsys.readouterr()
    assert f"{path}: not a trial result ({next(iter(change))} = " in out.out + out.err
    assert "Traceback" not in out.out + out.err
    assert json.loads(path.read_text())["label"] == 0  # it ran again and was written whole


def test_sample_indices_outside_the_data_are_one_line(stopped, capsys):
    np.savez(stopped / "samples.npz", opt_idx=np.array([0, 5, 10**6]), asr_idx=np.array([1, 2]))
    assert main(["scan", "--resume", str(stopped), "--headless"]) == 2
    one_line_error(capsys, "samples.npz: sample index 1000000 is outside the data's 90 images")


@pytest.mark.parametrize("key, value", [("l1_norm", "abc"), ("flagged", "yes"), ("trials", {"a": 1})])
def test_a_report_with_fields_of_the_wrong_type_is_one_line(tmp_path, capsys, key, value):
    run = Path(run_scan(write_tiny(tmp_path)).run_dir)
    report = json.loads((run / "report.json").read_text())
    report["labels"][0][key] = value
    (run / "report.json").write_text(json.dumps(report))
    assert main(["report", str(run), "--print"]) == 2
    one_line_error(capsys, "report.json: not a report written by nc-tui", f"labels[0].{key} = ")
