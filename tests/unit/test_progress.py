"""Honest progress (issue 14, item 3): the bar and the ETA count the steps running searches have left to
their limits, so one label grinding on to its step limit keeps them short of done. Synthetic step events."""

import io

import numpy as np
import pytest
from rich.console import Console

from nc_engine.run import events as ev
from nc_engine.run.progress import ScanProgress
from nc_tui.console import HeadlessProgress
from nc_tui.state import ScanState
from tests.event_factory import scan_started, step_progress, trial_finished


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def grind(on_step, on_finish, clock, until: int) -> list[tuple[int, float, float | None]]:
    """10 searches in one batched group, one step a second: 9 stop at step 50, label 9 runs on to `until`.
    Returns (step, fraction, eta) of the grinding label from step 50 on."""
    seen = []
    for step in range(1, until + 1):
        clock.now = float(step)
        for label in range(10):
            if step <= 50 or label == 9:
                on_step(label, step)
        if step == 50:
            for label in range(9):
                on_finish(label, 50)
        if step >= 50:
            seen.append(step)
    return seen


def test_one_label_grinding_to_its_step_limit_keeps_progress_short_of_done():
    clock = Clock()
    p = ScanProgress(10, 300, clock=clock)
    readings = {}

    def on_step(label, step):
        p.step((label, 0, "trial"), step)
        if label == 9:  # the front ends read it every step or a few times a second
            readings[step] = (p.fraction(), p.eta_seconds())

    grind(on_step, lambda label, steps: p.finish((label, 0, "trial"), steps), clock, 300)
    # at step 60: 450 + 60 steps done of 450 + 300; the old count (9 of 10 labels done) said 99%
    assert readings[60][0] == pytest.approx(510 / 750)
    assert readings[60][1] > 30  # the old ETA said 0:00 here
    # once the window has seen it go alone (one step a second, not ten): 210 steps left, three and a half minutes
    assert readings[90][1] == pytest.approx(210, rel=0.05)
    assert readings[150][0] < readings[290][0] < 1.0
    assert readings[150][1] == pytest.approx(150, rel=0.05) and readings[290][1] == pytest.approx(10, rel=0.05)
    assert all(readings[s][0] <= readings[s + 1][0] for s in range(50, 299))  # never goes back
    p.finish((9, 0, "trial"), 300)
    assert p.fraction() == 1.0


def test_the_app_and_the_console_read_the_same_progress():
    """ScanState (the scan screen and the headless console) goes through the same counting."""
    clock = Clock()
    state = ScanState(clock)
    state.on_scan_started(scan_started())
    mask = np.zeros((2, 2), np.float32)

    def on_step(label, step):
        state.on_step(step_progress(label, step, mask=mask))
        state.eta_seconds()  # read as the screen reads it

    def on_finish(label, steps):
        state.on_trial_finished(trial_finished(label, steps=steps, seconds=3.0))

    grind(on_step, on_finish, clock, 120)
    assert state.done_jobs == 9
    assert state.fraction() == pytest.approx((450 + 120) / 750)
    assert state.eta_seconds() > 150  # 180 steps left at one a second


def test_waiting_searches_count_the_length_of_those_finished():
    p = ScanProgress(4, 300, clock=Clock())
    assert p.fraction() == 0.0 and p.eta_seconds() is None  # nothing done yet: no rate to go by
    p.step((0, 0, "trial"), 40)
    p.finish((0, 0, "trial"), 40)
    p.step((1, 0, "trial"), 10)
    # done 40 + 10; expected 40 + 300 (running, to its limit) + 2 waiting x 40
    assert p.fraction() == pytest.approx(50 / 420)


def test_a_resumed_search_counts_its_earlier_steps_as_done_but_not_in_the_rate():
    clock = Clock()
    p = ScanProgress(1, 100, clock=clock)
    p.eta_seconds()
    clock.now = 10.0
    p.step((3, 0, "trial"), 51)  # continued from step 50
    p.step((3, 0, "trial"), 60)
    assert p.fraction() == pytest.approx(0.6)
    assert p.eta_seconds() == pytest.approx(40 / (10 / 10))  # 10 steps in 10 s here, 40 left


def test_screening_counts_its_own_limit_then_the_confirmations():
    p = ScanProgress(3, 300, screen_steps=40, clock=Clock())
    for label in range(3):
        p.step((label, 0, "screen"), 20)
    assert p.fraction() == pytest.approx(60 / 120)
    for label in range(3):
        p.finish((label, 0, "screen"), 40)
    p.set_jobs(5)  # 2 labels confirmed at the full budget
    assert p.fraction() == pytest.approx(120 / (120 + 2 * 300))
    p.step((0, 0, "trial"), 1)
    assert p.fraction() == pytest.approx(121 / (121 + 299 + 300))


def test_a_second_round_of_references_adds_its_searches_to_those_counted():
    state = ScanState(Clock())
    state.on_scan_started(
        scan_started(labels=list(range(20)), class_names=[str(i) for i in range(20)], screening=True, screen_steps=48)
    )
    for label in range(20):
        state.on_trial_finished(
            trial_finished(label, l1_norm=50.0, asr=0.99, steps=48, stop_reason="max_steps", stage="screen")
        )
    state.on_screening_finished(ev.ScreeningFinished(candidates=[3, 7], references=[1, 2, 5], why={}, images=20 * 1536))
    assert state.total_jobs == 20 + 5 and state.labels[5].state == "confirming"
    for label in (1, 2, 3, 5, 7):
        state.on_trial_finished(trial_finished(label, l1_norm=40.0, asr=0.99))
    state.on_screening_finished(
        ev.ScreeningFinished(
            candidates=[3, 7], references=[1, 2, 4, 5, 6, 9], why={}, images=60000, second_round=[4, 6, 9]
        )
    )
    assert state.total_jobs == 20 + 5 + 3 and state.labels[9].state == "confirming"
    assert state.progress.jobs == 28 and state.labels[4].state == "confirming"


def test_the_console_says_when_a_second_round_of_references_runs():
    out = io.StringIO()
    progress = HeadlessProgress(Console(file=out, no_color=True, force_terminal=False, width=200))
    progress(
        scan_started(labels=list(range(20)), class_names=[str(i) for i in range(20)], screening=True, screen_steps=48)
    )
    progress(ev.ScreeningFinished(candidates=[3, 7], references=[1, 2, 5], why={}, images=30000))
    progress(
        ev.ScreeningFinished(
            candidates=[3, 7], references=[1, 2, 4, 5, 6, 9], why={}, images=60000, second_round=[4, 6, 9]
        )
    )
    lines = out.getvalue().splitlines()
    assert any(line.startswith("screening done (30000 images): confirming 5 of 20") for line in lines), lines
    assert "the verdict depended on the scale shift: confirming 3 more references (4, 6, 9)" in lines
