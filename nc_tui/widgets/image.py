"""Arrays as terminal pictures: two pixels per character cell with the upper half block, which works
over any SSH connection and inside tmux. Without colour (NO_COLOR), grey levels become shade glyphs."""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

SHADES = " ░▒▓█"


def to_rgb(array: np.ndarray) -> np.ndarray:
    """(H, W) or (C, H, W) floats in [0, 1] -> (H, W, 3) uint8."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 3:
        a = np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a[:3]
        a = np.transpose(a, (1, 2, 0))
    else:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)


def fit(rgb: np.ndarray, width: int, height_cells: int) -> np.ndarray:
    """Nearest-neighbour resample to at most width x (2 * height_cells) pixels, keeping the aspect ratio."""
    h, w = rgb.shape[:2]
    scale = min(width / w, 2 * height_cells / h)
    scale = max(scale, 1 / max(h, w))
    new_w, new_h = max(1, int(w * scale)), max(2, int(h * scale) // 2 * 2)
    rows = np.minimum((np.arange(new_h) / new_h * h).astype(int), h - 1)
    cols = np.minimum((np.arange(new_w) / new_w * w).astype(int), w - 1)
    return rgb[rows][:, cols]


def halfblock_lines(rgb: np.ndarray, colour: bool = True) -> list[Text]:
    """Rows of Rich Text: each cell shows the top pixel as foreground of '▀' and the bottom as background."""
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, rgb[-1:]], axis=0)
    lines = []
    for top, bottom in zip(rgb[0::2], rgb[1::2], strict=True):
        text = Text()
        for (r1, g1, b1), (r2, g2, b2) in zip(top.tolist(), bottom.tolist(), strict=True):
            if colour:
                text.append("▀", Style(color=Color.from_rgb(r1, g1, b1), bgcolor=Color.from_rgb(r2, g2, b2)))
            else:
                level = (r1 + g1 + b1 + r2 + g2 + b2) / (6 * 255)
                text.append(SHADES[min(len(SHADES) - 1, int(level * len(SHADES)))])
        lines.append(text)
    return lines


class ArrayImage(Widget):
    """Shows a mask or pattern array, scaled to the widget's size."""

    DEFAULT_CSS = "ArrayImage { width: 1fr; height: 1fr; min-height: 4; }"

    def __init__(self, array: np.ndarray | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._array = array
        self._lines: list[Text] = []
        self._rendered_for = (0, 0)

    def set_array(self, array: np.ndarray | None) -> None:
        self._array = array
        self._rendered_for = (0, 0)  # forces a re-render at the next paint
        self.refresh()

    def _render_lines(self) -> list[Text]:
        width, height = self.size.width, self.size.height
        if self._array is None or width < 2 or height < 1:
            return []
        if self._rendered_for != (width, height):
            colour = not getattr(self.app, "no_color", False)
            self._lines = halfblock_lines(fit(to_rgb(self._array), width, height), colour)
            self._rendered_for = (width, height)
        return self._lines

    def render_line(self, y: int) -> Strip:
        # Every segment gets a real Style: Textual's NO_COLOR (monochrome) filter reads `style.color`
        # and crashed on the unstyled padding and blank lines, freezing the terminal.
        base = self.rich_style
        lines = self._render_lines()
        if y >= len(lines):
            return Strip.blank(self.size.width, base)
        segments = [Segment(text, base + style if style else base, control)
                    for text, style, control in lines[y].render(self.app.console)]
        return Strip(segments).extend_cell_length(self.size.width, base) if segments else Strip.blank(1, base)
