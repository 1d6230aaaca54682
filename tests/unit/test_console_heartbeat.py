"""Headless plain output says something at least every 10 s, even while no label finishes (batched mode)."""

import io

import numpy as np
from rich.console import Console

from nc_tui.console import HEARTBEAT_SECONDS, HeadlessProgress
from tests.event_factory import scan_started, step_progress


def test_plain_output_prints_a_heartbeat_every_ten_seconds():
    now = [0.0]
    out = io.StringIO()
    progress = HeadlessProgress(Console(file=out, no_color=True, force_terminal=False, width=200), lambda: now[0])
    progress(scan_started(labels=list(range(3)), class_names=["a", "b", "c"], group_size=3))
    mask = np.zeros((4, 4), np.float32)
    for step in range(1, 61):  # one step a second for a minute, no label finished
        now[0] = float(step)
        for label in range(3):
            progress(step_progress(label, step, mask=mask))
    beats = [line for line in out.getvalue().splitlines() if line.startswith("...")]
    assert len(beats) == 60 // HEARTBEAT_SECONDS
    assert "0/3 searches done" in beats[-1] and "running (label:step) 0:60 1:59 2:59" in beats[-1]
    assert "9600 images" in beats[-1] and "ETA <= " in beats[-1]  # an upper bound: running searches to their limit
