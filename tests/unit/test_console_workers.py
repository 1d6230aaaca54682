"""A scan spread over Ray workers says on the console where each label ran (no Ray needed: the events alone)."""

import io

from rich.console import Console

from nc_engine.run import events as ev
from nc_tui.console import HeadlessProgress


def test_plain_output_names_each_worker_once_and_each_label_s_worker():
    out = io.StringIO()
    progress = HeadlessProgress(Console(file=out, no_color=True, force_terminal=False, width=200))
    progress(ev.ScanStarted("/tmp/run", [0, 1, 2], ["a", "b", "c"], 1, "ray", "batched", 3, 0.99, 160, 1000, 300))
    for label, worker in (
        (0, "w0 cuda:0 (H100) @ node-1"),
        (1, "w1 cuda:1 (H100) @ node-1"),
        (2, "w0 cuda:0 (H100) @ node-1"),
    ):
        progress(ev.JobPlaced(label, 0, "trial", worker))
    for label in (0, 1, 2):
        progress(ev.LabelFinished(label, "abc"[label], 40.0 + label, 0.99, True, 50, 1.5, "", label + 1, 3))
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("worker ")] == [
        "worker w0: cuda:0 (H100) @ node-1",
        "worker w1: cuda:1 (H100) @ node-1",
    ]
    done = [line for line in lines if "done" in line]
    assert len(done) == 3 and "1.5s on w0" in done[0] and "on w1" in done[1] and "on w0" in done[2], done
