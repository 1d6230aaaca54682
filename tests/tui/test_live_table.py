"""The scan screen's label table (nc_tui/widgets/live_table.py): rows redrawn one by one, a row cursor."""

import pytest
from textual.app import App, ComposeResult

from nc_tui.widgets.live_table import LiveTable

COLUMNS = ("label", "state", "L1")


class OneTable(App):
    CSS = "LiveTable { height: 6; width: 40; }"

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows
        self.highlighted: list[str] = []

    def compose(self) -> ComposeResult:
        yield LiveTable(COLUMNS, id="t")

    def on_mount(self) -> None:
        table = self.query_one(LiveTable)
        for i in range(self.rows):
            table.add_row(str(i), (str(i), "waiting", "0.0"))
        table.focus()

    def on_live_table_row_highlighted(self, event: LiveTable.RowHighlighted) -> None:
        self.highlighted.append(event.key)


def lines(table: LiveTable) -> list[str]:
    return [table.render_line(y).text.rstrip() for y in range(table.size.height)]


@pytest.mark.asyncio
async def test_rows_under_a_header_and_a_changed_row_alone_is_rebuilt(monkeypatch):
    app = OneTable(3)
    async with app.run_test(size=(50, 10)) as pilot:
        await pilot.pause()
        table = app.query_one(LiveTable)
        assert lines(table)[:4] == [
            " label  state    L1",
            " 0      waiting  0.0",
            " 1      waiting  0.0",
            " 2      waiting  0.0",
        ]
        built = []
        original = table._build
        monkeypatch.setattr(table, "_build", lambda cells, style: built.append(cells) or original(cells, style))
        table.update_row("1", ("1", "[green]done[/]", "2.5"))
        table.update_row("2", ("2", "waiting", "0.0"))  # unchanged: nothing to do
        assert lines(table)[2] == " 1      done     2.5"
        assert built == [("1", "[green]done[/]", "2.5")]  # the other rows kept their strips
        table.update_row("0", ("0", "running trial 2", "3.0"))  # wider than its column: all rows re-laid
        assert lines(table)[:3] == [
            " label  state            L1",
            " 0      running trial 2  3.0",
            " 1      done             2.5",
        ]


@pytest.mark.asyncio
async def test_the_cursor_moves_scrolls_and_says_which_row():
    app = OneTable(12)  # 6 lines: the header and 5 rows in view
    async with app.run_test(size=(50, 10)) as pilot:
        await pilot.pause()
        table = app.query_one(LiveTable)
        assert table.cursor_key == "0" and app.highlighted == ["0"]
        await pilot.press("down", "down")
        assert table.cursor_key == "2" and app.highlighted[-1] == "2"
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_key == "11"
        assert lines(table)[0].startswith(" label") and lines(table)[-1] == " 11     waiting  0.0"  # scrolled
        await pilot.press("up")
        assert table.cursor_key == "10"
        await pilot.press("home")
        await pilot.pause()
        assert table.cursor_key == "0" and lines(table)[1] == " 0      waiting  0.0"
        await pilot.click(LiveTable, offset=(3, 3))  # the third row under the header
        assert table.cursor_key == "2"


@pytest.mark.asyncio
async def test_moving_the_scan_screens_cursor_shows_that_labels_detail():
    from textual.widgets import Label

    from nc_tui.app import NCApp
    from tests.tui.test_tui_snapshots import feed_scan, fixed_config

    app = NCApp(fixed_config(), mode="scan", autostart=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await feed_scan(pilot)
        title = app.screen.query_one("#detail-title", Label)
        assert str(title.render()).startswith("label 0: step 30\n")  # a name equal to the label is not repeated
        await pilot.press("down", "down", "down")
        await pilot.pause()
        assert app.screen.selected == 3
        assert str(title.render()).startswith("label 3: step 40\nL1 67.0, best 57.6")  # done at step 40
