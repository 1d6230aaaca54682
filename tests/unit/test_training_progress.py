"""The demo's first screen shows its training (issue 14, item 3): the training loop reports the batches done
against the total, and plain output prints a line per epoch and at least one every 10 s."""

import io

import numpy as np
from rich.console import Console

from nc_engine.demo.training import SmallCNN, TrainingProgress, train_classifier
from nc_tui.console import HEARTBEAT_SECONDS, TrainingLines


def test_training_reports_every_batch_against_the_total():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8), rng.integers(0, 10, 100)
    seen = []
    train_classifier(SmallCNN(), x, y, (0.5,), (0.5,), epochs=2, seed=0, batch_size=32, on_batch=seen.append)
    assert [p.done for p in seen] == list(range(1, 9))  # 4 batches of 32 (the last 4 images) per epoch
    assert {p.total for p in seen} == {8} and [p.epoch for p in seen] == [1] * 4 + [2] * 4
    assert seen[-1].fraction == 1.0


def test_plain_output_prints_a_line_per_epoch_and_a_heartbeat_in_between():
    now = [0.0]
    out = io.StringIO()
    lines = TrainingLines(Console(file=out, no_color=True, force_terminal=False, width=200), lambda: now[0])
    for done in range(1, 501):  # 4 epochs of 125 batches, 0.2 s a batch: 25 s an epoch
        now[0] = done * 0.2
        lines(TrainingProgress(1 + (done - 1) // 125, 4, done, 500))
    printed = out.getvalue().splitlines()
    assert all(line.startswith("demo: training epoch ") for line in printed)
    assert printed[0].startswith("demo: training epoch 1/4, batch 50/500 (10%), ETA 1:30")  # 10 s in
    assert printed[-1] == "demo: training epoch 4/4, batch 500/500 (100%), ETA 0:00"
    assert sum("batch 125/500" in line or "batch 250/500" in line for line in printed) == 2  # epoch ends
    times = [int(line.split("batch ")[1].split("/")[0]) * 0.2 for line in printed]
    assert max(b - a for a, b in zip([0.0, *times[:-1]], times, strict=True)) <= HEARTBEAT_SECONDS


def test_nc_tui_demo_headless_prints_its_training(monkeypatch, capsys):
    import nc_engine.demo.build
    from nc_engine.errors import NCError
    from nc_tui.cli import main

    def fake_make_demo(folder, backdoor=True, seed=0, on_progress=None):  # the training, without the minute
        for done in range(1, 5):
            on_progress(TrainingProgress(done, 4, done, 4))
        raise NCError("stopped after training")

    monkeypatch.setattr(nc_engine.demo.build, "make_demo", fake_make_demo)
    assert main(["demo", "--headless", "--dir", "unused"]) == 2
    out = capsys.readouterr().out
    assert "demo: training epoch 2/4, batch 2/4 (50%)" in out and "batch 4/4 (100%), ETA 0:00" in out
