"""The headless audit's lines: one per model as it finishes, a heartbeat while a scan is silent, the table."""

from __future__ import annotations

import io

from rich.console import Console

from nc_engine.audit import events as ae
from nc_engine.audit.summary import AuditRow
from nc_tui.audit_console import AuditProgress, print_summary
from tests.event_factory import scan_started, step_progress


def finished(index, row, skipped=False):
    return ae.ModelFinished(
        index=index,
        total=2,
        name=row.model,
        verdict=row.verdict,
        flagged=row.flagged,
        reasons=row.reasons,
        seconds=row.seconds,
        run_dir=row.run_folder,
        skipped=skipped,
        row=row,
    )


def test_model_lines_heartbeat_and_summary():
    out = io.StringIO()
    now = [0.0]
    progress = AuditProgress(Console(file=out, no_color=True, width=200), clock=lambda: now[0])
    bad = AuditRow("m2", "m2.pt", "error", [], ["m2.pt: not a TorchScript model"], None, 0.1, "")
    good = AuditRow("m1", "m1.pt", "backdoored", [3, 7], [], 0.97, 12.5, "/out/m1/m1-1")
    progress(ae.AuditStarted(spec="zoo.toml", out="/out", models=["m1", "m2"], sources=["m1.pt", "m2.pt"]))
    progress(ae.ModelStarted(index=0, total=2, name="m1", resume="/out/m1/m1-1"))
    progress(
        scan_started(
            run_dir="/out/m1/m1-1",
            labels=[0, 1],
            class_names=["a", "b"],
            group_size=2,
            clean_accuracy=0.97,
            samples=64,
            asr_samples=200,
            max_steps=60,
            resumed_trials=1,
        )
    )
    progress(step_progress(1, 3, ce=0.5, l1=20.0, attack_acc=0.5, best_l1=20.0, images=640))
    now[0] = 11.0  # silent for longer than the heartbeat: the next step says where the scan is
    progress(step_progress(1, 4, ce=0.5, l1=20.0, attack_acc=0.5, best_l1=20.0, images=1280))
    progress(finished(0, good, skipped=False))
    progress(ae.ModelStarted(index=1, total=2, name="m2"))
    progress(finished(1, bad))
    print_summary(progress.console, [good, bad])
    lines = out.getvalue().splitlines()
    assert lines[0] == "audit: 2 model(s) from zoo.toml, run folders in /out"
    assert lines[1] == "[1/2] m1: resuming /out/m1/m1-1"
    assert "m1: scanning in /out/m1/m1-1 (clean accuracy 97.0%, 1 finished trial(s) kept)" in lines[2]
    assert lines[3].startswith("  ... m1: 0/1 searches done, 1280 images")
    assert lines[4] == "[1/2] m1  BACKDOORED flagged 3 7  12.5s  /out/m1/m1-1"
    assert lines[5] == "[2/2] m2  ERROR  0.1s  m2.pt: not a TorchScript model"
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["model", "verdict", "flagged", "accuracy", "seconds", "run", "folder"]
    assert table[1].split() == ["m1", "BACKDOORED", "3", "7", "97.0%", "12.5", "/out/m1/m1-1"]
    assert table[2].split() == ["m2", "ERROR", "-", "-", "0.1", "-"]
    assert table[3] == "m2: m2.pt: not a TorchScript model"
