"""The text of a Textual screenshot (SVG): what a person would read on the terminal, row by row."""

from __future__ import annotations

import html
import re

_TEXT = re.compile(
    r'<text class="[^"]*" x="([\d.]+)" y="[\d.]+" textLength="[\d.]+" '
    r'clip-path="url\(#terminal-(?:\d+-)?line-(\d+)\)">([^<]*)</text>'
)
CELL = 12.2  # Textual's SVG export: 0.61 x the 20px font size per column


def svg_lines(svg: str) -> list[str]:
    """The screen's rows as plain strings (spaces where nothing is drawn)."""
    rows: dict[int, dict[int, str]] = {}
    for x, line, content in _TEXT.findall(svg):
        col = round(float(x) / CELL)
        for i, char in enumerate(html.unescape(content).replace("\xa0", " ")):
            rows.setdefault(int(line), {})[col + i] = char
    height = max(rows, default=-1) + 1
    return [
        "".join(rows.get(r, {}).get(c, " ") for c in range(max(rows.get(r, {0: ""}), default=0) + 1)).rstrip()
        for r in range(height)
    ]


def screen_text(app) -> str:
    """The app's current screen as text."""
    return "\n".join(svg_lines(app.export_screenshot()))
