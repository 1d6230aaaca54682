"""The demo's first screen draws its training on the progress bar (issue 14, item 3), not 0% throughout."""

import threading
import time

import pytest
from textual.widgets import ProgressBar, Static

from nc_engine.demo.training import TrainingProgress
from nc_engine.errors import NCError
from nc_tui.app import NCApp
from nc_tui.screens.scan import REFRESH_SECONDS, ScanScreen


@pytest.mark.asyncio
async def test_the_demo_training_fills_the_progress_bar():
    halfway, finish = threading.Event(), threading.Event()

    def prepare(progress):  # the demo's training, 3 of 8 batches done, then held until the test has looked
        for done in range(1, 4):
            progress(TrainingProgress(1 + (done - 1) // 4, 2, done, 8))
            time.sleep(REFRESH_SECONDS + 0.05)  # the bar is redrawn a few times a second, not every batch
        halfway.set()
        finish.wait(30)
        raise NCError("no scan in this test")

    app = NCApp(mode="scan", prepare=prepare)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(150):
            await pilot.pause(0.1)
            if halfway.is_set() and app.screen.query_one("#overall", ProgressBar).progress > 0:
                break
        screen = app.screen
        assert isinstance(screen, ScanScreen)
        assert screen.query_one("#overall", ProgressBar).progress == pytest.approx(3 / 8)
        assert "37.5%" in str(screen.query_one("#eta", Static).render())
        assert "epoch 1 of 2, batch 3 of 8" in str(screen.query_one("#scan-info", Static).render())
        finish.set()
