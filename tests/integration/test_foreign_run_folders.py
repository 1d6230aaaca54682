"""Run folders someone else hands over (issue 28 items 1-2, issue 27 item 5): a symbolic link inside one
never carries a write outside it, and a FIFO never hangs a resume or a report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nc_engine.files import open_append
from nc_tui.cli import main
from tests.tiny_scan import partial_run, write_tiny

OUTSIDE_TEXT = "someone else's file, its last line unterminated"


@pytest.fixture
def stopped(tmp_path) -> Path:
    """A run folder stopped after its first label, in a folder with an outside file beside it."""
    (tmp_path / "outside.txt").write_text(OUTSIDE_TEXT)
    return partial_run(write_tiny(tmp_path))


def one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("name", ["log.txt", "events.jsonl"])
def test_a_log_linked_outside_is_refused_and_the_outside_file_untouched(stopped, capsys, name):
    outside = stopped.parent.parent / "outside.txt"
    (stopped / name).unlink()
    (stopped / name).symlink_to(outside)
    for command in (["scan", "--resume", str(stopped), "--headless"], ["report", str(stopped), "--print"]):
        assert main(command) == 2, command
        one_line(capsys, name, "symbolic link")
    assert outside.read_text() == OUTSIDE_TEXT


def test_a_trials_folder_linked_outside_receives_nothing(stopped, capsys, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (stopped / "trials").rename(elsewhere)
    (stopped / "trials").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    assert main(["scan", "--resume", str(stopped), "--headless"]) == 2
    one_line(capsys, "trials", "symbolic link")
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
