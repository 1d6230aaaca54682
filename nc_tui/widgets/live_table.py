"""A table of short cells for a view redrawn a few times a second: each row is one Strip, rebuilt only
when one of its cells changes. Textual's DataTable re-renders every cell of the table through Rich on any
change (about 16 ms a redraw of the scan screen's ten labels, most of that screen's cost); this one
renders the changed rows only, with a row cursor (↑ ↓, page keys, a click) and a fixed header."""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Parts = tuple[tuple[tuple[str, Style | None], ...], int]  # a cell's (text, style) runs and its width


class LiveTable(ScrollView, can_focus=True):
    """Rows of markup cells under a header, keyed by string; `cursor_row` is the highlighted row."""

    COMPONENT_CLASSES = {"live-table--header", "live-table--cursor", "live-table--even-row", "live-table--odd-row"}
    # the look of the DataTable it replaces (zebra stripes, block cursor), so the screen looks as before
    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        &:focus {
            background-tint: $foreground 5%;
            & > .live-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .live-table--header { background-tint: $foreground 5%; }
        }
        &:dark > .live-table--even-row { background: $surface-darken-1 40%; }
        & > .live-table--header { text-style: bold; background: $panel; color: $foreground; }
        &:ansi > .live-table--header { background: ansi_bright_blue; color: ansi_default; }
        & > .live-table--even-row { background: $surface-lighten-1 50%; }
        & > .live-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """
    BINDINGS = [
        Binding("up", "cursor(-1)", "Cursor up", show=False),
        Binding("down", "cursor(1)", "Cursor down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor(-1000000000)", "First row", show=False),
        Binding("end", "cursor(1000000000)", "Last row", show=False),
    ]

    cursor_row: reactive[int] = reactive(0, repaint=False)

    class RowHighlighted(Message):
        """The cursor moved to the row of `key`."""

        def __init__(self, table: LiveTable, key: str) -> None:
            super().__init__()
            self.table, self.key = table, key

        @property
        def control(self) -> LiveTable:
            return self.table

    def __init__(self, columns: Sequence[str], *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.columns = tuple(columns)
        self._widths = [cell_len(c) for c in self.columns]
        self._keys: list[str] = []
        self._cells: list[tuple[str, ...]] = []
        self._index: dict[str, int] = {}
        self._strips: dict[int, tuple[Strip, Style]] = {}  # row -> _strip(row); -1 is the header
        self._styles: tuple[Style, ...] = ()  # the styles the strips were built with
        self._parts: dict[str, Parts] = {}  # markup -> its rendered runs (states and numbers repeat)
        self._hidden: frozenset[int] = frozenset()  # columns not drawn (a narrow terminal)

    # ---- content
    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def cursor_key(self) -> str | None:
        return self._keys[self.cursor_row] if self._keys else None

    def has_row(self, key: str) -> bool:
        return key in self._index

    def hide_columns(self, names: Sequence[str]) -> None:
        """Draw every column except these (by name); an empty list shows them all again."""
        hidden = frozenset(i for i, c in enumerate(self.columns) if c in names)
        if hidden != self._hidden:
            self._hidden = hidden
            self._changed_all()

    def clear(self) -> None:
        self._keys, self._cells, self._index = [], [], {}
        self._widths = [cell_len(c) for c in self.columns]
        self.cursor_row = 0
        self._changed_all()

    def add_row(self, key: str, cells: Sequence[str]) -> None:
        cells = tuple(cells)
        self._index[key] = len(self._keys)
        self._keys.append(key)
        self._cells.append(cells)
        self._grow(cells)
        self._changed_all()
        if len(self._keys) == 1:
            self.post_message(self.RowHighlighted(self, key))

    def update_row(self, key: str, cells: Sequence[str]) -> None:
        """Set a row's cells: only this row is redrawn, unless a value is wider than its column."""
        row, cells = self._index[key], tuple(cells)
        if cells == self._cells[row]:
            return
        self._cells[row] = cells
        if self._grow(cells):
            self._changed_all()
        else:
            self._strips.pop(row, None)
            self._refresh_row(row)

    def _grow(self, cells: tuple[str, ...]) -> bool:
        grown = False
        for i, value in enumerate(cells):
            width = self._cell(value)[1]
            if width > self._widths[i]:
                self._widths[i], grown = width, True
        return grown

    def _changed_all(self) -> None:
        self._strips.clear()
        shown = [w for i, w in enumerate(self._widths) if i not in self._hidden]
        self.virtual_size = Size(sum(w + 2 for w in shown), len(self._keys) + 1)
        self.refresh()

    def _refresh_row(self, row: int) -> None:
        y = row + 1 - int(self.scroll_y)  # the header holds line 0
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    # ---- drawing
    def _cell(self, markup: str) -> Parts:
        parts = self._parts.get(markup)
        if parts is None:
            text = Text.from_markup(markup)
            runs = tuple((seg.text, seg.style) for seg in text.render(self.app.console) if seg.text)
            parts = self._parts[markup] = (runs, text.cell_len)
            if len(self._parts) > 4096:  # a long scan's numbers: keep the cache small
                self._parts = {markup: parts}
        return parts

    def _build(self, cells: Sequence[str], style: Style) -> Strip:
        segments = []
        total = 0
        for i, (value, width) in enumerate(zip(cells, self._widths, strict=False)):
            if i in self._hidden:
                continue
            total += width + 2
            runs, length = self._cell(value)
            segments.append(Segment(" ", style))
            segments.extend(Segment(text, style + s if s else style) for text, s in runs)
            segments.append(Segment(" " * (width - length + 1), style))
        return Strip(segments, total)

    def render_lines(self, crop: Region) -> list[Strip]:
        self._check_styles()
        return super().render_lines(crop)

    def _check_styles(self) -> None:
        styles = (
            self.rich_style,
            *(
                self.get_component_rich_style(name)
                for name in ("live-table--header", "live-table--even-row", "live-table--odd-row", "live-table--cursor")
            ),
        )
        if styles != self._styles:  # focus, theme: every row's colours change
            self._styles, self._strips = styles, {}

    def _strip(self, row: int) -> tuple[Strip, Style]:
        """The row's strip at the table's width, and its style (the rest of the line is drawn in it)."""
        built = self._strips.get(row)
        if built is None:
            if not self._styles:
                self._check_styles()
            base, header, even, odd, cursor = self._styles
            if row < 0:
                style = base + header
            else:
                style = base + (odd if row % 2 else even) + (cursor if row == self.cursor_row else Style())
            built = self._strips[row] = (self._build(self.columns if row < 0 else self._cells[row], style), style)
        return built

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        row = -1 if y == 0 else y - 1 + int(self.scroll_y)
        if row >= len(self._keys):
            return Strip.blank(width, self.rich_style)
        scroll_x = int(self.scroll_x)
        strip, style = self._strip(row)
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    # ---- the cursor
    def watch_cursor_row(self, old: int, new: int) -> None:
        for row in (old, new):
            self._strips.pop(row, None)
            self._refresh_row(row)
        visible = max(1, self.scrollable_content_region.height - 1)
        if new < self.scroll_y:
            self.scroll_to(y=new, animate=False)
        elif new >= self.scroll_y + visible:
            self.scroll_to(y=new - visible + 1, animate=False)
        if self._keys:
            self.post_message(self.RowHighlighted(self, self._keys[new]))

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, len(self._keys) - 1))

    def action_cursor(self, delta: int) -> None:
        self.cursor_row += delta

    def action_page(self, direction: int) -> None:
        self.cursor_row += direction * max(1, self.scrollable_content_region.height - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and offset.y >= 1:
            self.cursor_row = offset.y - 1 + int(self.scroll_y)
