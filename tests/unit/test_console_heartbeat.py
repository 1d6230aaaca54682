"""Headless plain output says something at least every 10 s, even while no label finishes (batched mode)."""

import io

import numpy as np
from rich.console import Console

from nc_engine.run import events as ev
from nc_tui.console import HEARTBEAT_SECONDS, HeadlessProgress


def test_plain_output_prints_a_heartbeat_every_ten_seconds():
    now = [0.0]
    out = io.StringIO()
    progress = HeadlessProgress(Console(file=out, no_color=True, force_terminal=False, width=200), lambda: now[0])
    progress(
        ev.ScanStarted(
            run_dir="/tmp/run",
            labels=list(range(3)),
            class_names=["a", "b", "c"],
            trials=1,
            device="cpu",
            strategy="batched",
            group_size=3,
            clean_accuracy=0.99,
            samples=160,
            asr_samples=1000,
            max_steps=300,
        )
    )
    mask = np.zeros((4, 4), np.float32)
    for step in range(1, 61):  # one step a second for a minute, no label finished
        now[0] = float(step)
        for label in range(3):
            progress(
                ev.StepProgress(
                    label=label,
                    trial=0,
                    step=step,
                    loss=1.0,
                    ce=0.1,
                    l1=5.0,
                    attack_acc=1.0,
                    cost=1e-3,
                    best_l1=5.0,
                    images=160 * step,
                    mask=mask,
                )
            )
    beats = [line for line in out.getvalue().splitlines() if line.startswith("...")]
    assert len(beats) == 60 // HEARTBEAT_SECONDS
    assert "0/3 searches done" in beats[-1] and "running (label:step) 0:60 1:59 2:59" in beats[-1]
    assert "9600 images" in beats[-1] and "ETA <= " in beats[-1]  # an upper bound: running searches to their limit
