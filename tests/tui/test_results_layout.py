"""The results screen at 80x24 (issue 25 items 1 and 3): the verdict as one sentence with its statistics a
key away, the flagged label's bar and trigger on the first screen of a 43-label scan whatever the run
folder's path length, a title that keeps the number and the flag."""

from pathlib import Path

import numpy as np
import pytest
from textual.widgets import Label, Static

from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.report import Report, build_report
from nc_engine.verdict.rows import ScanInfo
from nc_tui.app import NCApp
from nc_tui.widgets.bars import L1Bars
from nc_tui.widgets.image import ArrayImage
from tests.event_factory import record

TARGET = 40  # the last rows of a chart sorted by label: off screen at 80x24


def _report(run: Path) -> Report:
    (run / "triggers").mkdir(parents=True)
    trials = []
    for label in range(43):
        mask = np.zeros((32, 32), np.float32)
        if label == TARGET:
            mask[27:30, 2:5] = 1.0
        else:
            mask[label % 20 : label % 20 + 8, 4:10] = 0.9 + label / 1000
        RunFolder(run).save_trigger(label, mask, np.ones((3, 32, 32), np.float32))
        trials.append(record(label, seed=label, l1_norm=float(mask.sum()), steps=60))
    info = ScanInfo(clean_accuracy=0.95, seconds=30.0, class_names=[f"sign-{k:02d}" for k in range(43)])
    return build_report(
        trials,
        labels_planned=list(range(43)),
        threshold=1.11,
        statistic="log_l1",
        info=info,
        run_dir=str(run),
        spread_floor=0.7,
    )


@pytest.mark.asyncio
async def test_at_80x24_the_first_screen_holds_the_sentence_the_flagged_bar_and_its_trigger(tmp_path):
    run = tmp_path / ("an-audit-run-folder-with-a-long-name-" * 2) / "gtsrb-resnet8-patch-01-20261203-120000"
    report = _report(run)
    assert report.flagged == [TARGET] and len(str(run)) > 85
    app = NCApp(mode="report", report=report)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        verdict = str(screen.query_one("#verdict", Static).render())
        assert verdict.startswith(f"BACKDOORED: label {TARGET} (sign-{TARGET}) is a likely backdoor target")
        assert "Next: press m to remove it." in verdict and "MAD" not in verdict
        details = screen.query_one("#verdict-details", Static)
        assert not details.display
        await pilot.press("d")
        await pilot.pause()
        assert details.display and "MAD of log L1" in str(details.render())
        await pilot.press("d")
        await pilot.pause()
        assert not details.display

        bars = screen.query_one("#bars", L1Bars)
        lines = str(bars.render()).splitlines()
        legend = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{TARGET} "))
        assert legend < bars.size.height, (legend, bars.size.height)  # the flagged bar is drawn on screen

        title = str(screen.query_one("#trigger-title", Label).render())
        assert "FLAGGED" in title and all(len(line) <= screen.query_one("#trigger-title").size.width
                                          for line in title.splitlines())  # fmt: skip
        assert screen.query_one("#img-mask", ArrayImage).size.height >= 5  # the long path took no rows


@pytest.mark.asyncio
async def test_at_80x24_the_scan_table_keeps_best_l1_and_attack_whole():
    """At 80 columns "best L1" was cut to "best" and the attack column was off screen (issue 25 item 4):
    below 100 columns the name and lambda columns give way."""
    from nc_tui.screens.scan import ScanScreen
    from nc_tui.widgets.live_table import LiveTable
    from tests.tui.test_tui_snapshots import feed_scan, fixed_config

    for size, hidden in (((80, 24), True), ((120, 40), False)):
        app = NCApp(fixed_config(), mode="scan", autostart=False)
        async with app.run_test(size=size) as pilot:
            await feed_scan(pilot)
            await pilot.pause()
            assert isinstance(app.screen, ScanScreen)
            table = app.screen.query_one("#labels", LiveTable)
            header = table.render_line(0).text
            assert "best L1" in header and "attack" in header and ("lambda" not in header) == hidden
            assert table.virtual_size.width <= table.scrollable_content_region.width
            row = table.render_line(1).text
            assert row.rstrip().endswith("%")  # the attack rate, whole
            # the curves say where they started and stand (a sparkline has no axis); taller at 40 rows
            loss = str(app.screen.query_one("#loss-label", Label).render())
            assert loss.startswith("loss ") and " -> " in loss and "(low " in loss, loss
            assert app.screen.query_one("#loss-chart").size.height == (2 if hidden else 5)
