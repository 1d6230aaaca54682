"""The terminal app driven by key presses through Textual's pilot."""

import asyncio
import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from nc_engine import load_config, run_scan
from nc_engine.verdict.report import Report
from nc_tui.app import NCApp
from nc_tui.screens.results import ResultsScreen
from nc_tui.screens.scan import ScanScreen
from nc_tui.screens.setup import SetupScreen


async def wait_for(pilot, condition, timeout=120.0):
    waited = 0.0
    while not condition():
        await pilot.pause(0.2)
        waited += 0.2
        if waited > timeout:
            raise AssertionError("timed out waiting for the app")


async def type_into(pilot, app, selector, text):
    box = app.screen.query_one(selector, Input)
    box.focus()
    await pilot.pause()
    box.value = ""
    await pilot.press(*text)
    await pilot.pause()


def demo_config(info, tmp_path, slow=False):
    """slow: the reference budget, so the scan surely still runs when a test cancels or quits it."""
    cfg = load_config(info.config)
    cfg.output.dir = str(tmp_path / "runs")
    if slow:
        cfg.scan.samples, cfg.scan.max_steps, cfg.scan.converge_window = 1000, 1000, 0
    return cfg


@pytest.mark.asyncio
async def test_setup_by_keys_scan_and_results(demo_backdoored, tmp_path):
    app = NCApp(config=demo_config(demo_backdoored, tmp_path), mode="setup")
    async with app.run_test(size=(100, 40)) as pilot:
        assert isinstance(app.screen, SetupScreen)
        await pilot.pause()
        assert app.focused is not None and app.focused.id == "model-path"  # typing goes into the first field
        await type_into(pilot, app, "#scan-trials", "1")
        await type_into(pilot, app, "#output-dir", str(tmp_path / "tui-runs"))
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, ScanScreen))
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen), timeout=180)
        screen = app.screen
        await wait_for(pilot, lambda: bool(screen.query("#results-table")))  # pushed is not yet composed
        table = screen.query_one("#results-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 10)
        first_row = [str(c) for c in table.get_row_at(0)]
        assert str(demo_backdoored.target) in first_row[0] and "FLAGGED" in first_row[-1]
        assert "BACKDOORED" in str(screen.query_one("#verdict", Static).render())
        assert (tmp_path / "tui-runs").is_dir()


@pytest.mark.asyncio
async def test_invalid_inputs_show_errors_and_do_not_start(demo_backdoored, tmp_path):
    app = NCApp(config=demo_config(demo_backdoored, tmp_path), mode="setup")
    async with app.run_test(size=(100, 40)) as pilot:
        await type_into(pilot, app, "#model-num-classes", "ten")
        error = app.screen.query_one("#model-num-classes-error", Static)
        assert "expected a whole number" in str(error.render())
        await type_into(pilot, app, "#model-input-shape", "1, 28")
        assert "expected 3 values" in str(app.screen.query_one("#model-input-shape-error", Static).render())
        await pilot.press("f5")
        await pilot.pause()
        assert isinstance(app.screen, SetupScreen)
        assert "Classes" in str(app.screen.query_one("#check-result", Static).render())
        assert not (tmp_path / "runs").exists()


@pytest.mark.asyncio
async def test_preset_choice_fills_the_budget(demo_backdoored, tmp_path):
    from textual.widgets import Select

    from nc_engine.config.settings import PRESETS

    app = NCApp(config=demo_config(demo_backdoored, tmp_path), mode="setup")
    async with app.run_test(size=(100, 40)) as pilot:
        preset = app.screen.query_one("#scan-preset", Select)
        preset.focus()
        await pilot.press("enter")  # open the list, move to "thorough", choose it
        await pilot.pause()
        order = list(PRESETS)
        await pilot.press(*["down"] * (order.index("thorough") - order.index("default")), "enter")
        await pilot.pause()
        assert preset.value == "thorough"
        # empty budget fields take the preset's values, and their placeholders say which
        trials = app.screen.query_one("#scan-trials", Input)
        assert trials.value == "" and trials.placeholder.startswith(str(PRESETS["thorough"]["trials"]))
        samples = app.screen.query_one("#scan-samples", Input).placeholder
        assert samples.startswith(str(PRESETS["thorough"]["samples"])) and "thorough" in samples
        cfg = app.screen.form_config()
        assert cfg.scan.samples is None  # unset: the preset's, until the scan resolves it
        resolved = cfg.resolved().scan
        assert (resolved.preset, resolved.converge_window) == ("thorough", PRESETS["thorough"]["converge_window"])
        assert resolved.samples == PRESETS["thorough"]["samples"]
        await type_into(pilot, app, "#scan-samples", "64")  # an edited field wins
        assert app.screen.form_config().scan.samples == 64


@pytest.mark.asyncio
async def test_quick_check_reports_clean_accuracy(demo_backdoored, tmp_path):
    app = NCApp(config=demo_config(demo_backdoored, tmp_path), mode="setup")
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("f2")
        result = app.screen.query_one("#check-result", Static)
        await wait_for(pilot, lambda: "clean accuracy" in str(result.render()), timeout=60)
        assert "✓ model and data load" in str(result.render())


@pytest.mark.asyncio
async def test_cancel_mid_scan_keeps_a_resumable_run(demo_backdoored, tmp_path):
    cfg = demo_config(demo_backdoored, tmp_path)
    app = NCApp(config=cfg, mode="scan")
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, ScanScreen)
        await wait_for(pilot, lambda: screen.state.images > 0 and screen.run_dir is not None, timeout=60)
        await pilot.press("c")
        await wait_for(pilot, lambda: not screen.running, timeout=60)
        run = Path(screen.run_dir)
        assert screen.report is not None and not screen.report.complete
        assert isinstance(app.screen, ScanScreen)  # a stopped scan stays on its screen
        assert not Report.read(run).complete
        await pilot.press("r")  # resume in the app: the rest runs and the results open
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.is_mounted, timeout=180)
        await pilot.pause()
        results = app.screen.query_one("#results-table", DataTable)
        await wait_for(pilot, lambda: results.row_count == 10)
    final = Report.read(run)
    assert final.complete and final.verdict == "backdoored"


@pytest.mark.asyncio
async def test_help_lists_the_keys_and_quit_asks_during_a_scan(demo_backdoored, tmp_path):
    app = NCApp(config=demo_config(demo_backdoored, tmp_path, slow=True), mode="scan")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.press("f1")
        help_text = " ".join(str(w.render()) for w in app.screen.query(Static))
        assert "Cancel scan" in help_text and "Quit" in help_text
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.running and screen.state.images > 0, timeout=60)
        await pilot.press("q")
        await pilot.pause()
        assert "Stop it and quit" in " ".join(str(w.render()) for w in app.screen.query(Static))
        await pilot.press("n")  # keep scanning
        assert app.screen is screen and screen.running
        await pilot.press("q", "y")
        await wait_for(pilot, lambda: not screen.running or app.return_code is not None, timeout=60)
    assert screen.stop.is_set()


@pytest.mark.asyncio
async def test_save_then_load_config_by_keys(demo_backdoored, tmp_path):
    app = NCApp(config=demo_config(demo_backdoored, tmp_path), mode="setup")
    async with app.run_test(size=(100, 40)) as pilot:
        await type_into(pilot, app, "#scan-trials", "3")
        await pilot.press("ctrl+s")
        await pilot.pause()
        prompt = app.screen.query_one("#path", Input)
        prompt.value = str(tmp_path / "saved.toml")
        await pilot.press("enter")
        await wait_for(pilot, lambda: (tmp_path / "saved.toml").exists(), timeout=10)
        saved = load_config(tmp_path / "saved.toml")
        assert saved.scan.trials == 3 and saved.model.input_shape == [1, 28, 28]
        await type_into(pilot, app, "#scan-trials", "1")
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#path", Input).value = str(tmp_path / "saved.toml")
        await pilot.press("enter")

        def reloaded():
            boxes = app.screen.query("#scan-trials") if isinstance(app.screen, SetupScreen) else []
            return bool(boxes) and boxes.first(Input).value == "3"

        await wait_for(pilot, reloaded, timeout=10)


@pytest.mark.asyncio
async def test_results_sort_and_export(demo_backdoored, tmp_path, monkeypatch):
    cfg = demo_config(demo_backdoored, tmp_path)
    report = await asyncio.to_thread(run_scan, cfg)
    monkeypatch.chdir(tmp_path)
    app = NCApp(mode="report", report=report)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one("#results-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 10)
        await pilot.press("3")  # sort by L1 norm, ascending: the flagged label's tiny trigger comes first
        await pilot.pause()
        values = [float(plain(table.get_row_at(i)[2])) for i in range(10)]
        assert values == sorted(values)
        await pilot.press("3")
        await pilot.pause()
        values = [float(plain(table.get_row_at(i)[2])) for i in range(10)]
        assert values == sorted(values, reverse=True)
        await pilot.press("e")
        await pilot.pause()
    stem = Path(report.run_dir) / "export" / (Path(report.run_dir).name + "-report")  # the run folder, not cwd
    assert stem.with_suffix(".csv").read_text().count("\n") == 11
    assert '"verdict": "backdoored"' in stem.with_suffix(".json").read_text()
    assert not list(tmp_path.glob("*-report.*"))


def plain(cell) -> str:
    from nc_tui.screens.results import _plain

    return _plain(cell)


def test_no_color_images_use_shade_characters():
    import numpy as np

    from nc_tui.widgets.image import halfblock_lines, to_rgb

    ramp = np.linspace(0, 1, 8, dtype=np.float32)[None].repeat(4, 0)
    plain = "".join(t.plain for t in halfblock_lines(to_rgb(ramp), colour=False))
    assert plain[0] == " " and plain[7] == "█" and "▀" not in plain
    coloured = halfblock_lines(to_rgb(ramp), colour=True)
    assert coloured[0].plain == "▀" * 8 and len(coloured) == 2


@pytest.mark.asyncio
async def test_mitigate_from_the_results_screen(demo_backdoored, tmp_path):
    cfg = demo_config(demo_backdoored, tmp_path)
    report = await asyncio.to_thread(run_scan, cfg)
    app = NCApp(mode="report", report=report)
    async with app.run_test(size=(80, 24)) as pilot:  # the size where lines were cut (issue 25 item 5)
        await pilot.press("m")
        await pilot.pause()
        from nc_tui.screens.mitigate import MitigateScreen

        assert isinstance(app.screen, MitigateScreen)
        await pilot.press("f")  # the input filter: the quickest method
        screen = app.screen
        await pilot.pause(0.5)
        await wait_for(pilot, lambda: not screen.running, timeout=120)
        await pilot.pause(0.2)
        log = screen.query_one("#mitigate-log")
        lines = [line.text for line in log.lines]
        text = "\n".join(lines)
        assert "clean accuracy" in text and "report:" in text
        assert max(len(line.rstrip()) for line in lines) <= log.scrollable_content_region.width  # wrapped, not cut
        saved = Path(report.run_dir) / "mitigation" / "filter" / "report.json"
        assert str(saved) in "".join(line.strip() for line in lines)  # the path the user is told, whole
        from nc_engine.mitigate import table_lines

        first = table_lines(json.loads(saved.read_text()))[0].strip()
        assert lines[int(log.scroll_y)].strip() == first[: len(lines[int(log.scroll_y)].strip())]  # table on top
    assert (Path(report.run_dir) / "mitigation" / "filter" / "report.json").is_file()
