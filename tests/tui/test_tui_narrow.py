"""Every screen with NO_COLOR set (it crashed when a mask was drawn) and the essentials visible at 80x24,
read from the rendered screen as a person would."""

import pytest
from textual.widgets import DataTable

from nc_tui.app import NCApp
from nc_tui.screens.mitigate import MitigateScreen
from tests.tui.screen_text import screen_text
from tests.tui.test_tui_snapshots import RUN, feed_scan, fixed_config, fixed_report

SIZE = (80, 24)


@pytest.fixture
def no_color(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")  # before the app is created: Textual reads it in App.__init__


def shows_pictures_without_colour(text: str) -> bool:
    return "▀" not in text and any(c in text for c in "░▒▓█")


@pytest.mark.asyncio
async def test_no_color_results_mitigation_and_help(no_color):
    app = NCApp(mode="report", report=fixed_report())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.no_color
        text = screen_text(app)
        assert shows_pictures_without_colour(text)
        lines = text.splitlines()
        header = next(line for line in lines if "label" in line and "L1 norm" in line)
        assert "status" in header and "anomaly ▼" in header  # the sorted column says so
        rows = [line.split() for line in lines[lines.index(header) + 1 :]]
        assert {r[0] for r in rows[:10]} == {str(i) for i in range(10)}  # all ten rows, no scrolling
        assert any("degenerate" in line for line in lines)
        await pilot.press("f1")
        await pilot.pause()
        assert "nc-tui keys  (Escape closes; ctrl+p lists the actions by name)" in screen_text(app)
        await pilot.press("escape")
        app.push_screen(MitigateScreen(str(RUN)))
        await pilot.pause()
        text = screen_text(app)
        assert "Mitigate the flagged label(s) of this run with their reversed triggers" in text
        assert "f input filter  Esc close" in text


@pytest.mark.asyncio
async def test_no_color_setup_and_f2_result_in_view(no_color):
    app = NCApp(config=fixed_config(), mode="setup")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f2")
        await pilot.pause(1.0)
        for _ in range(20):
            if "checking" not in screen_text(app):
                break
            await pilot.pause(0.5)
        text = screen_text(app)
        assert "✗" in text and "model.pt" in text  # the check's answer (the model is missing) is on screen
        assert "Model file" in text


@pytest.mark.asyncio
async def test_no_color_scan_screen_and_quit_confirmation(no_color):
    app = NCApp(fixed_config(), mode="scan", autostart=False)
    async with app.run_test(size=SIZE) as pilot:
        await feed_scan(pilot)
        text = screen_text(app)
        assert shows_pictures_without_colour(text)
        assert text.splitlines()[1].startswith(" clean accuracy 99.0%")
        app.screen.running = True
        await pilot.press("q")
        await pilot.pause()
        text = screen_text(app)
        assert f"`nc-tui scan --resume {RUN}`" in text and "continues it." in text and "Yes [y]" in text
        app.pop_screen()
        app.screen.running = False


@pytest.mark.asyncio
async def test_s_changes_the_order_and_the_header_shows_it():
    app = NCApp(mode="report", report=fixed_report())
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#results-table", DataTable)

        def order():
            return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]

        seen = [order()]
        for _ in range(3):
            await pilot.press("s")
            await pilot.pause()
            assert order() != seen[-1]
            seen.append(order())
            arrows = [str(c.label) for c in table.columns.values() if "▲" in str(c.label) or "▼" in str(c.label)]
            assert len(arrows) == 1
