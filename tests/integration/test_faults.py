"""Run folder faults (issue 12, items 5-10): resuming another scan, torn files, two owners, SIGTERM, corrupt
folders, a full or read-only disk. Every scan here is a 3-label linear model on 4x4 images (about a second)."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nc_engine import run_scan
from nc_engine.config.settings import load_config
from nc_engine.errors import RunFolderError
from nc_engine.files import drop_torn_tail
from nc_engine.verdict.report import Report
from nc_tui import cli
from nc_tui.cli import main
from tests.tiny_scan import one_line_error, partial_run, tiny_model, write_tiny


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A config for a tiny model and data, in its own folder (tests may change the files)."""
    return write_tiny(tmp_path)


def sizes(run: Path) -> tuple[int, int]:
    return (run / "events.jsonl").stat().st_size, (run / "log.txt").stat().st_size


# ---- item 5: a resume continues the same scan


@pytest.mark.parametrize("change", ["config", "model", "data"])
def test_resume_refuses_a_changed_config_model_or_data(tiny, change):
    run = partial_run(tiny)
    assert set(json.loads((run / "fingerprints.json").read_text())) == {"config", "model", "data"}
    before = sizes(run)
    if change == "config":
        text = (run / "config.toml").read_text()
        (run / "config.toml").write_text(text.replace("seed = 0", "seed = 1"))
    elif change == "model":
        tiny_model(tiny.parent / "m.pt", 1)
    else:
        np.savez(tiny.parent / "d.npz", x_test=np.zeros((90, 4, 4), np.uint8), y_test=np.arange(90) % 3)
    with pytest.raises(RunFolderError, match=f"{change if change != 'config' else 'config.toml'}.* changed"):
        run_scan(None, resume=run)
    assert sizes(run) == before and not (run / ".lock").exists()


def test_resume_with_a_config_or_out_is_refused(tiny, tmp_path, capsys):
    run = partial_run(tiny)
    assert main(["scan", str(tiny), "--resume", str(run), "--headless"]) == 2
    one_line_error(capsys, "a CONFIG cannot be used with --resume")
    assert main(["scan", "--resume", str(run), "--out", str(tmp_path / "x"), "--headless"]) == 2
    one_line_error(capsys, "--out cannot be used with --resume")


# ---- item 6: atomic writes; damaged trial files run again


def test_engine_writes_only_through_files_py():
    """Every engine write goes through files.py's atomic helpers (appends to the logs excepted)."""
    root = Path(__file__).resolve().parents[2] / "nc_engine"
    # a save into an in-memory `buffer` (ray_parcel.py: a model shipped to Ray workers) writes no file
    bypass = re.compile(
        r"\.write_(text|bytes)\(|np\.savez?\w*\(|\)\.save\("
        r"|(?<!lambda f: )torch\.(jit\.)?save\((?![^)]*\bbuffer\b)|open\([^)]*[\"'][wx]"
    )
    offenders = [
        f"{p.name}:{n}: {line.strip()}"
        for p in root.rglob("*.py")
        if p.name != "files.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if bypass.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "content, kept",
    [
        (b"", b""),
        (b"a\n", b"a\n"),
        (b"abc", b""),
        (b"a\nbc", b"a\n"),
        (b"a\n" + b"x" * 9, b"a\n"),
        (b"a\nb\n" + b"x" * 9, b"a\nb\n"),
    ],
)
def test_drop_torn_tail_keeps_whole_lines(tmp_path, content, kept):
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    drop_torn_tail(path, chunk=4)  # a small chunk: the backwards search crosses chunks
    assert path.read_bytes() == kept


@pytest.mark.parametrize("damage", ["truncated", "wrong_shape"])
def test_a_damaged_trial_runs_again_on_resume(tiny, damage):
    run = partial_run(tiny)
    npz = next((run / "trials").glob("*.npz"))
    if damage == "truncated":
        npz.write_bytes(npz.read_bytes()[:40])
    else:
        np.savez(npz, mask=np.zeros((3, 3), np.float32), pattern=np.zeros((1, 3, 3), np.float32))
    label = int(npz.name.split("_")[1])
    events = []
    final = run_scan(None, events.append, resume=run)
    assert final.complete and {r.label for r in final.labels} == {0, 1, 2}
    warnings = [e.message for e in events if e.kind == "warning"]
    assert any(npz.name in w and "runs again" in w for w in warnings), warnings
    assert label in {e.label for e in events if e.kind == "trial_finished"}


# ---- item 7: one owner at a time


def test_a_second_owner_is_refused_naming_the_pid(tiny):
    refused = []

    def on_event(e):
        if e.kind == "scan_started":
            with pytest.raises(RunFolderError) as exc:
                run_scan(None, resume=e.run_dir)
            refused.append(str(exc.value))

    report = run_scan(tiny, on_event)
    assert report.complete and len(refused) == 1 and f"process {os.getpid()}" in refused[0]
    assert not (Path(report.run_dir) / ".lock").exists()


def test_a_live_lock_refuses_and_a_dead_ones_is_taken_over(tiny, capsys):
    run = partial_run(tiny)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        before = sizes(run)
        assert main(["scan", "--resume", str(run), "--headless"]) == 2
        one_line_error(capsys, f"in use by process {sleeper.pid}")
        assert sizes(run) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    events = []
    final = run_scan(None, events.append, resume=run)  # the pid is dead now
    assert final.complete and not (run / ".lock").exists()
    assert any(
        "taking over the lock" in e.message and str(sleeper.pid) in e.message for e in events if e.kind == "warning"
    )


def test_the_lock_is_released_when_a_resume_fails(tiny):
    run = partial_run(tiny)
    (run / "samples.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(RunFolderError, match="samples.npz"):
        run_scan(None, resume=run)
    assert not (run / ".lock").exists()


# ---- item 8: SIGTERM like Ctrl+C; a report without report.json


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_headless_scan_resumably(tiny, tmp_path, capsys, monkeypatch, signum, code):
    original = cli.HeadlessProgress.on_label_finished

    def and_signal(self, e):
        original(self, e)
        os.kill(os.getpid(), signum)

    monkeypatch.setattr(cli.HeadlessProgress, "on_label_finished", and_signal)
    handler = signal.getsignal(signal.SIGTERM)
    assert main(["scan", str(tiny), "--headless", "--out", str(tmp_path / "out")]) == code
    assert signal.getsignal(signal.SIGTERM) is handler  # restored
    out = capsys.readouterr().out
    run = next((tmp_path / "out").iterdir())
    assert f"resume with: nc-tui scan --resume {run}" in out
    assert not Report.read(run).complete
    assert out.count("--resume") == 1 and "1 of 3 labels done" in out  # said once, with how far it got


def test_a_stop_before_any_label_finished_shows_no_empty_table(tiny, tmp_path, capsys, monkeypatch):
    """Issue 25 item 8: Ctrl+C printed "0 label(s), most anomalous first" over an empty table."""
    original = cli.HeadlessProgress.on_scan_started

    def and_signal(self, e):
        original(self, e)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cli.HeadlessProgress, "on_scan_started", and_signal)
    assert main(["scan", str(tiny), "--headless", "--out", str(tmp_path / "out")]) == 130
    out = capsys.readouterr().out
    assert "0 label(s)" not in out and "Verdict" not in out and out.count("--resume") == 1, out
    assert "interrupted (0 of 3 labels done)" in out


def test_report_rebuilds_a_run_killed_before_its_first_report(tiny, capsys):
    run = partial_run(tiny)
    (run / "report.json").unlink()
    (run / "report.csv").unlink()
    report = Report.read(run)
    assert not report.complete and len(report.labels) == 1 and "rebuilt from 1 finished trial" in report.note
    assert report.labels_planned == [0, 1, 2] and report.info.clean_accuracy >= 0
    share = report.info.label_share  # as the scan started with it: the caution survives a lost report
    assert len(share) == len(report.info.class_names) and sum(share) == pytest.approx(1.0)
    assert main(["report", str(run), "--print"]) == 0
    assert "label" in capsys.readouterr().out


# ---- item 9: a corrupt run folder is one line naming the file


@pytest.mark.parametrize(
    "content", ['{"schema": 2, "comp', "[1, 2]", '{"schema": 2}', '{"schema": 2, "seconds": NaN}', "a folder"]
)
def test_a_damaged_report_json_is_one_line_and_does_not_block_a_resume(tiny, capsys, content):
    run = partial_run(tiny)
    if content == "a folder":
        (run / "report.json").unlink()
        (run / "report.json").mkdir()
    else:
        (run / "report.json").write_text(content)
    assert main(["report", str(run), "--print"]) == 2
    one_line_error(capsys, "report.json")
    if content == "a folder":  # the resume runs, then cannot write its report there: one line
        assert main(["scan", "--resume", str(run), "--headless"]) == 2
        one_line_error(capsys, "cannot write the report")
        return
    assert main(["scan", "--resume", str(run), "--headless"]) == 0
    capsys.readouterr()
    final = Report.read(run)
    assert final.complete and final.info.seconds < 60  # the lost previous time counts as 0


@pytest.fixture
def finished(tiny) -> Path:
    return Path(run_scan(tiny).run_dir)


@pytest.mark.parametrize("name", ["samples.npz", "config.toml", "triggers/label_000.npz", "report.json"])
def test_corrupt_files_are_one_line_for_report_resume_and_mitigate(finished, capsys, name):
    path = finished / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2] if name != "config.toml" else b"[model\n")
    commands = [["mitigate", str(finished), "--method", "prune", "--labels", "0"]]
    if name in ("samples.npz", "config.toml"):
        (finished / "report.json").unlink()  # a resume reads these; a report without report.json reads config
        commands += [["scan", "--resume", str(finished), "--headless"]]
    if name in ("config.toml", "report.json"):  # what `nc-tui report --print` reads
        commands += [["report", str(finished), "--print"]]
    for command in commands:
        before = sizes(finished)
        assert main(command) == 2, command
        one_line_error(capsys, Path(name).name)
        assert sizes(finished) == before


def test_a_torn_last_event_line_is_dropped_on_resume(tiny):
    run = partial_run(tiny)
    with (run / "events.jsonl").open("a") as f:
        f.write('{"event": "step", "lab')
    assert run_scan(None, resume=run).complete
    for line in (run / "events.jsonl").read_text().splitlines():
        json.loads(line)


# ---- item 10: a full or read-only disk


def test_a_read_only_output_folder_is_one_line(tiny, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):  # root ignores the mode: make mkdir fail on a file instead
            parent.chmod(0o700)
            parent.rmdir()
            parent.write_text("a file, not a folder")
        assert main(["scan", str(tiny), "--headless", "--out", str(parent / "runs")]) == 2
        one_line_error(capsys, str(parent))
    finally:
        if parent.is_dir():
            parent.chmod(0o700)
    assert not (parent.is_dir() and any(parent.iterdir()))


def leftovers(folder: Path) -> list[Path]:
    """Temporary or empty files: what a failed write must not leave behind."""
    return [p for p in folder.rglob("*") if p.is_file() and (p.name.endswith(".tmp") or p.stat().st_size == 0)]


def disk_full_after(monkeypatch, calls: int) -> None:
    """np.savez_compressed (samples, trials, triggers) writes a little, then fails with ENOSPC after `calls`."""
    real, count = np.savez_compressed, [0]

    def savez(f, **arrays):
        count[0] += 1
        if count[0] > calls:
            f.write(b"PK\x03\x04")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(f, **arrays)

    monkeypatch.setattr(np, "savez_compressed", savez)


def test_disk_full_when_the_run_folder_starts_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    disk_full_after(monkeypatch, 0)
    out = tmp_path / "out"
    assert main(["scan", str(tiny), "--headless", "--out", str(out)]) == 2
    one_line_error(capsys, str(out), "samples.npz", "No space left")
    assert list(out.iterdir()) == []  # the new run folder is removed again


def test_disk_full_mid_scan_is_one_line_and_leaves_whole_files(tiny, tmp_path, capsys, monkeypatch):
    disk_full_after(monkeypatch, 2)  # samples.npz and the first trial, then the first trigger fails
    out = tmp_path / "out"
    assert main(["scan", str(tiny), "--headless", "--out", str(out)]) == 2
    run = next(out.iterdir())
    one_line_error(capsys, str(run), "No space left")
    assert leftovers(run) == [] and not (run / ".lock").exists()
    for line in (run / "events.jsonl").read_text().splitlines():
        json.loads(line)
    monkeypatch.undo()
    assert run_scan(None, resume=run).complete  # and it resumes once there is room
    assert load_config(run / "config.toml").scan.max_steps == 4


def test_a_full_disk_names_the_first_write_that_failed(tiny, tmp_path, capsys, monkeypatch):
    """Issue 27 item 8: when a trial's write failed, the error named the report, whose write failed after."""
    import nc_engine.files as files

    real, calls = files.os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] > 5:  # config, fingerprints, samples, the first report, then a trial's arrays
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    assert main(["scan", str(tiny), "--headless", "--out", str(tmp_path / "out")]) == 2
    err = one_line_error(capsys, "No space left")
    assert "the report" not in err and "trials/label_000_trial_0" in err, err


def test_max_images_too_small_names_the_data_and_the_key(tiny, capsys):
    tiny.write_text(tiny.read_text().replace('path = "d.npz"\n', 'path = "d.npz"\nmax_images = 1\n'))
    assert main(["scan", str(tiny), "--headless"]) == 2
    one_line_error(capsys, "d.npz: only 1 image(s) to scan with [data].max_images = 1")
