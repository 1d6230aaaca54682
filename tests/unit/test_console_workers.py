"""A scan spread over Ray workers says on the console where each label ran (no Ray needed: the events alone)."""

import io

from rich.console import Console

from nc_engine.run import events as ev
from nc_tui.console import HeadlessProgress
from tests.event_factory import scan_started


def test_plain_output_names_each_worker_once_and_each_label_s_worker():
    out = io.StringIO()
    progress = HeadlessProgress(Console(file=out, no_color=True, force_terminal=False, width=200))
    progress(scan_started(labels=[0, 1, 2], class_names=["a", "b", "c"], device="ray", group_size=3))
    for label, worker in (
        (0, "w0 cuda:0 (H100) @ node-1"),
        (1, "w1 cuda:1 (H100) @ node-1"),
        (2, "w0 cuda:0 (H100) @ node-1"),
    ):
        progress(ev.JobPlaced(label=label, trial=0, stage="trial", worker=worker))
    for label in (0, 1, 2):
        progress(
            ev.LabelFinished(
                label=label,
                name="abc"[label],
                l1_norm=40.0 + label,
                asr=0.99,
                converged=True,
                steps=50,
                seconds=1.5,
                mask_png="",
                done=label + 1,
                total=3,
            )
        )
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("worker ")] == [
        "worker w0: cuda:0 (H100) @ node-1",
        "worker w1: cuda:1 (H100) @ node-1",
    ]
    done = [line for line in lines if "done" in line]
    assert len(done) == 3 and "1.5s on w0" in done[0] and "on w1" in done[1] and "on w0" in done[2], done
