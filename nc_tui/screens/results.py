"""Results screen: verdict, sortable label table, L1 bars, and the selected label's trigger images."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static
from textual.widgets.data_table import ColumnKey

from nc_engine.files import write_csv, write_json
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.formatting import TABLE_COLUMNS, table_rows, verdict_line
from nc_engine.verdict.report import Report
from nc_engine.verdict.sentence import verdict_sentence

from ..messages import NewScan
from ..widgets.bars import L1Bars
from ..widgets.image import ArrayImage
from ..widgets.titlebar import TitleBar

# sort keys per column: numbers sort as numbers, "-" last
_NUMERIC = {"label", "L1 norm", "ASR", "anomaly", "steps"}


def _sort_value(text: str) -> tuple[int, float | str]:
    cleaned = text.rstrip("%")
    try:
        return (0, float(cleaned))
    except ValueError:
        return (1, text)


class ResultsScreen(Screen):
    """A finished scan. Keys 1-7 sort by a column (again: reverse), d shows the verdict's statistics, e
    exports, n starts a new scan."""

    BINDINGS = [
        Binding("d", "details", "Details", id="details"),
        Binding("e", "export", "Export CSV/JSON", id="export"),
        Binding("s", "sort_next", "Sort", id="sort"),
        Binding("m", "mitigate", "Mitigate", id="mitigate"),
        Binding("n", "new_scan", "New scan", id="new"),
        *[Binding(str(i + 1), f"sort({i})", show=False) for i in range(len(TABLE_COLUMNS))],
    ]

    def __init__(self, report: Report) -> None:
        super().__init__()
        self.report = report
        self.folder = RunFolder(Path(report.run_dir))
        self.sort_column = 4  # anomaly
        self.sort_reverse = True

    def compose(self) -> ComposeResult:
        r = self.report
        style = {"backdoored": "verdict-bad", "clean": "verdict-good"}.get(r.verdict or "", "verdict-unsure")
        yield TitleBar("results")
        yield Static(verdict_sentence(r, "press m to remove it"), id="verdict", classes=style, markup=False)
        yield Static(verdict_line(r), id="verdict-details", markup=False)
        with Horizontal(id="results-main"):
            with Vertical(id="results-left"):
                yield DataTable(id="results-table", cursor_type="row", zebra_stripes=True)
                yield L1Bars(id="bars")
            with Vertical(id="results-right"):
                yield Label("", id="trigger-title")
                with Horizontal(id="trigger-images"):
                    for kind in ("mask", "pattern", "fusion"):
                        with Vertical(classes="trigger-box", id=f"box-{kind}"):
                            yield Label(kind, classes="image-label")
                            yield ArrayImage(id=f"img-{kind}", group="trigger")
                yield Static("", id="trigger-paths")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#results-table", DataTable)
        for name in TABLE_COLUMNS:
            table.add_column(name, key=name)
        rows = table_rows(self.report, self.folder.mask_area([r.label for r in self.report.labels]))
        for row in rows:
            cells = [
                f"[b red]{c}[/]" if row["flagged"] else f"[yellow]{c}[/]" if row["degenerate"] else c
                for c in row["cells"]
            ]
            table.add_row(*cells, key=str(row["label"]))
        degenerate = frozenset(row["label"] for row in rows if row["degenerate"])
        self.call_after_refresh(self.query_one("#bars", L1Bars).show, self.report, degenerate)
        self._mark_sorted_header(table)
        table.focus()
        if rows:
            self.show_label(rows[0]["label"])

    def on_resize(self) -> None:
        self.set_class(self.size.width < 110, "-narrow")

    # ---- selected label's trigger
    @on(DataTable.RowHighlighted, "#results-table")
    def row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.show_label(int(event.row_key.value))

    def show_label(self, label: int) -> None:
        row = self.report.row(label)
        if row is None or not self.query("#img-mask"):  # a highlight can arrive while the app closes
            return
        arrays = self.folder.trigger_arrays(label)
        if arrays is not None:
            mask, pattern = arrays
            self.query_one("#img-mask", ArrayImage).set_array(mask)
            self.query_one("#img-pattern", ArrayImage).set_array(pattern)
            self.query_one("#img-fusion", ArrayImage).set_array(mask[None] * pattern)
        flag = " [b red]FLAGGED[/]" if row.flagged else ""
        name = "" if row.name == str(label) else f" ({row.name})"
        # two lines: the number and the flag must survive the 20-column panel of an 80-column terminal
        self.query_one("#trigger-title", Label).update(f"label {label}{name}\nL1 {row.l1_norm:.2f}{flag}")
        # relative to the run folder, one line each: a long folder path must not take the pictures' rows
        self.query_one("#trigger-paths", Static).update(
            "\n".join(p for p in (row.mask_png, row.pattern_png, row.fusion_png) if p)
        )

    def action_details(self) -> None:
        """Show or hide the statistics behind the verdict sentence."""
        self.query_one("#verdict-details").toggle_class("-shown")

    # ---- sorting
    def action_sort(self, column: int) -> None:
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, TABLE_COLUMNS[column] in ("anomaly",)
        name = TABLE_COLUMNS[column]
        table = self.query_one("#results-table", DataTable)
        table.sort(name, key=_sort_key(name), reverse=self.sort_reverse)
        self._mark_sorted_header(table)
        self.notify(f"sorted by {name}" + (" (descending)" if self.sort_reverse else ""), timeout=2)

    def _mark_sorted_header(self, table: DataTable) -> None:
        """An arrow in the sorted column's header says which column and which way."""
        for i, name in enumerate(TABLE_COLUMNS):
            column = table.columns[ColumnKey(name)]
            column.label = Text(name + ((" ▼" if self.sort_reverse else " ▲") if i == self.sort_column else ""))
            column.content_width = max(column.content_width, column.label.cell_len)
        table._require_update_dimensions = True  # no public call re-measures a relabelled header
        table.refresh()

    def _order(self, column: int, reverse: bool) -> list[str]:
        name = TABLE_COLUMNS[column]
        table = self.query_one("#results-table", DataTable)
        key = _sort_key(name)
        rows = sorted(table.rows, key=lambda k: key(table.get_cell(k, name)), reverse=reverse)
        return [k.value or "" for k in rows]

    def action_sort_next(self) -> None:
        """The next column whose order differs from the one shown (label and name often sort alike)."""
        table = self.query_one("#results-table", DataTable)
        shown = [table.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value for i in range(table.row_count)]
        n = len(TABLE_COLUMNS)
        for step in range(1, n + 1):
            column = (self.sort_column + step) % n
            if self._order(column, TABLE_COLUMNS[column] in ("anomaly",)) != shown:
                self.action_sort(column)
                return
        self.action_sort((self.sort_column + 1) % n)

    @on(DataTable.HeaderSelected, "#results-table")
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        self.action_sort(event.column_index)

    # ---- export and navigation
    def action_export(self) -> None:
        """Write the report as CSV and JSON into the run folder (not wherever the app was started)."""
        try:
            stem = self.folder.export_stem()
            write_csv(stem.with_suffix(".csv"), self.report.csv_columns(), self.report.csv_rows())
            write_json(stem.with_suffix(".json"), self.report.to_dict())
        except OSError as exc:
            self.notify(f"export failed: {exc}", severity="error", timeout=8)
            return
        self.notify(f"exported {stem.name}.csv and .json to {stem.parent}", timeout=8)

    def action_mitigate(self) -> None:
        if not self.report.flagged:
            self.notify("nothing to mitigate: no label was flagged", timeout=4)
            return
        from .mitigate import MitigateScreen

        self.app.push_screen(MitigateScreen(str(self.folder.path)))

    def action_new_scan(self) -> None:
        self.post_message(NewScan())


def _sort_key(name: str):
    return (lambda v: _sort_value(_plain(v))) if name in _NUMERIC else _plain


def _plain(value: object) -> str:
    text = str(value)
    return text.replace("[b red]", "").replace("[yellow]", "").replace("[/]", "")
