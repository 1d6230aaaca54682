"""A one-line title bar. Textual's Header updates itself from watchers that can fire while a screen is
being torn down (quitting right after a screen change raised NoMatches); a static line cannot."""

from __future__ import annotations

from textual.widgets import Static


class TitleBar(Static):
    DEFAULT_CSS = """
    TitleBar { dock: top; height: 1; width: 100%; background: $panel; color: $foreground;
               text-style: bold; content-align: center middle; }
    """

    def __init__(self, what: str) -> None:
        super().__init__(f"nc-tui — {what}")
