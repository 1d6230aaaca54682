"""Snapshots of the three screens at 80x24 and 120x40, and of the dialogs at 80x24, with every volatile part
fixed: paths, times, devices, progress. Update after an intended change with
`pytest tests/tui/test_tui_snapshots.py --snapshot-update` and look at the SVGs in tests/tui/__snapshots__/."""

from pathlib import Path

import numpy as np
import pytest

from nc_engine.config.settings import config_from_dict
from nc_engine.run import events as ev
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.report import Report, build_report
from nc_engine.verdict.rows import ScanInfo
from nc_tui.app import NCApp
from tests.event_factory import record, scan_started, step_progress, trial_finished

SIZES = [(80, 24), (120, 40)]
RUN = Path("/tmp/nc-tui-snapshots/run-20260101-000000")


def fixed_config():
    return config_from_dict(
        {
            "model": {
                "format": "torchscript",
                "path": "model.pt",
                "num_classes": 10,
                "input_shape": [1, 28, 28],
                "mean": [0.5],
                "std": [0.5],
            },
            "data": {"format": "npz", "path": "data.npz"},
            "output": {"dir": "runs"},
        },
        source="snapshot.toml",
        base_dir=Path("/nonexistent/nc-tui"),
    )


DEGENERATE = 5  # a search that ran to its step limit with a mask over nearly the whole image


def fixed_mask(label: int) -> np.ndarray:
    mask = np.zeros((28, 28), np.float32)
    if label == 8:
        mask[23:27, 1:5] = 1.0  # the backdoor's corner patch
    elif label == DEGENERATE:
        mask[:, :] = 0.9
    else:
        rng = np.random.default_rng(label)
        mask[rng.integers(4, 20) :, :][: 3 + label % 4, 6:22] = 0.6
    return mask


def fixed_report() -> Report:
    (RUN / "triggers").mkdir(parents=True, exist_ok=True)
    trials = []
    for label in range(10):
        mask = fixed_mask(label)
        pattern = np.stack([np.linspace(0, 1, 28, dtype=np.float32)[None].repeat(28, 0)])
        RunFolder(RUN).save_trigger(label, mask, pattern)
        trials.append(
            record(
                label,
                seed=100 + label,
                l1_norm=float(mask.sum()),
                asr=0.95 + label / 1000,
                steps=300 if label == DEGENERATE else 50 + label,
                stop_reason="max_steps" if label == DEGENERATE else "converged",
            )
        )
    info = ScanInfo(clean_accuracy=0.99, seconds=12.0, class_names=[str(i) for i in range(10)])
    return build_report(
        trials, labels_planned=list(range(10)), threshold=2.0, statistic="l1", info=info, run_dir=str(RUN)
    )


@pytest.mark.parametrize("size", SIZES)
def test_setup_screen(snap_compare, size):
    assert snap_compare(NCApp(config=fixed_config(), mode="setup"), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_results_screen(snap_compare, size):
    assert snap_compare(NCApp(mode="report", report=fixed_report()), terminal_size=size)


async def feed_scan(pilot) -> None:
    """The scan screen fed a fixed story of events instead of a running engine."""
    screen = pilot.app.screen
    started = scan_started(run_dir=str(RUN))
    screen.state.on_scan_started(started)
    screen.post_message(screen_message(started))
    await pilot.pause()
    for label in range(10):
        for step in range(1, 31):
            screen.state.on_step(
                step_progress(
                    label,
                    step,
                    loss=2.0 / step,
                    l1=100 - step - label,
                    best_l1=100 - step - label,
                    images=1000 * step,
                    mask=fixed_mask(label),
                )
            )
    for label in (8, 3):
        finished = ev.LabelFinished(
            label=label,
            name=str(label),
            l1_norm=float(fixed_mask(label).sum()),
            asr=0.97,
            converged=True,
            steps=40,
            seconds=3.0,
            mask_png=f"triggers/label_{label:03d}_mask.png",
            done=1,
            total=10,
        )
        screen.state.on_trial_finished(trial_finished(label, steps=40, seconds=3.0))
        screen.state.on_label_finished(finished)
        screen.post_message(screen_message(finished))
    await pilot.pause()
    screen._dirty = True
    screen._refresh_view()
    screen.query_one("#eta").update(" 42.0%  ETA 0:07")  # the real one depends on the clock
    await pilot.pause()


def screen_message(event):
    from nc_tui.messages import EngineEvent

    return EngineEvent(event)


@pytest.mark.parametrize("size", SIZES)
def test_scan_screen(snap_compare, size):
    assert snap_compare(NCApp(fixed_config(), mode="scan", autostart=False), terminal_size=size, run_before=feed_scan)


async def open_mitigation(pilot) -> None:
    from nc_tui.screens.mitigate import MitigateScreen

    pilot.app.push_screen(MitigateScreen(str(RUN)))
    await pilot.pause()


async def ask_to_quit(pilot) -> None:
    await feed_scan(pilot)
    pilot.app.screen.running = True  # as if the engine ran: q asks before stopping it
    await pilot.press("q")
    await pilot.pause()


async def open_help(pilot) -> None:
    await pilot.press("f1")
    await pilot.pause()


def test_mitigation_dialog(snap_compare):
    assert snap_compare(NCApp(mode="report", report=fixed_report()), terminal_size=(80, 24), run_before=open_mitigation)


def test_quit_confirmation(snap_compare):
    assert snap_compare(
        NCApp(fixed_config(), mode="scan", autostart=False), terminal_size=(80, 24), run_before=ask_to_quit
    )


def test_help_screen(snap_compare):
    assert snap_compare(NCApp(mode="report", report=fixed_report()), terminal_size=(80, 24), run_before=open_help)
