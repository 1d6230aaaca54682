"""The audit screen at 80x24 with NO_COLOR: live states fed as events, then a real audit of two cheap models
with Enter opening a model's results and Escape coming back."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from nc_engine.audit import events as ae
from nc_engine.audit.summary import AuditRow
from nc_tui.app import NCApp
from nc_tui.screens.audit import AuditResultsScreen, AuditScreen
from tests.audit_fixtures import cheap_zoo
from tests.event_factory import scan_started, step_progress, trial_finished
from tests.tui.screen_text import screen_text
from tests.tui.test_tui import wait_for

SIZE = (80, 24)
NAMES = ["resnet18_cifar10_poisoned_target_3", "b_clean", "c_dropout", "d_broken"]


@pytest.fixture
def no_color(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")  # before the app is created: Textual reads it in App.__init__


def finished(index, name, verdict, flagged, seconds, run_dir, reasons=()):
    row = AuditRow(name, name, verdict, flagged, list(reasons), 0.99, seconds, run_dir)
    return ae.ModelFinished(
        index=index,
        total=4,
        name=name,
        verdict=verdict,
        flagged=flagged,
        reasons=list(reasons),
        seconds=seconds,
        run_dir=run_dir,
        skipped=False,
        row=row,
    )


@pytest.mark.asyncio
async def test_live_states_fit_80x24_without_colour(no_color, tmp_path):
    spec = cheap_zoo(tmp_path, NAMES)
    app = NCApp(mode="audit", audit=spec, autostart=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, AuditScreen) and app.no_color
        names = [m.name for m in spec.models]
        feed = [
            ae.AuditStarted(spec=str(spec.path), out=str(spec.out), models=names, sources=names),
            ae.ModelStarted(index=0, total=4, name=names[0]),
            scan_started(
                run_dir="/runs/x",
                labels=[0, 1, 2, 3],
                class_names=["0", "1", "2", "3"],
                group_size=4,
                clean_accuracy=0.98,
                samples=64,
                asr_samples=200,
                max_steps=60,
            ),
            trial_finished(0, l1_norm=40.0, asr=0.99, steps=30, stop_reason="early_stop"),
            step_progress(1, 10, ce=0.5, l1=30.0, attack_acc=0.9, best_l1=30.0, images=640),
        ]
        for event in feed:
            screen.listener(event)
        await pilot.pause(0.6)
        text = screen_text(app)
        header = next(line for line in text.splitlines() if "model" in line and "verdict" in line)
        assert all(column in header for column in ("state", "flagged", "time"))
        # steps: 30 done + 10 running; left: 50 to the running one's limit, 30 for each waiting one
        assert "scanning 27%" in text and "waiting" in text
        screen.listener(finished(0, names[0], "backdoored", [3], 12.0, "/runs/x"))
        screen.listener(ae.ModelStarted(index=1, total=4, name=names[1]))
        screen.listener(finished(1, names[1], "unfinished", [], 3.0, "/runs/y"))
        await pilot.pause(0.6)
        lines = screen_text(app).splitlines()
        first = next(line for line in lines if line.strip().startswith(names[0][:20]))
        assert "BACKDOORED" in first and " 3 " in f"{first} " and "12s" in first
        assert "stopped" in next(line for line in lines if names[1] in line)


@pytest.mark.asyncio
async def test_a_real_audit_and_enter_opens_a_models_results(no_color, tmp_path):
    spec = cheap_zoo(tmp_path, ["c_dropout", "d_broken"])
    app = NCApp(mode="audit", audit=spec)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: app.audit_result is not None, timeout=120)
        table = screen.query_one("#audit-table", DataTable)
        assert [str(c) for c in table.get_row("c_dropout")][1:3] == ["done", "INCONCLUSIVE"]
        assert [str(c) for c in table.get_row("d_broken")][1:3] == ["error", "ERROR"]
        assert (spec.out / "audit.csv").is_file() and app.audit_result.complete
        table.move_cursor(row=1)
        await pilot.pause()
        text = screen_text(app)
        assert " d_broken:" in text and "not a TorchScript model" in text  # the selected model's error line
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is screen  # an error has no results to open
        table.move_cursor(row=0)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditResultsScreen))
        await pilot.pause()
        assert "inconclusive" in screen_text(app).lower()
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
    assert any("audit summary:" in line for line in app.exit_lines())
