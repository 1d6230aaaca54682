"""Arrays as terminal pictures: two pixels per character cell with the upper half block, which works
over any SSH connection and inside tmux. Without colour (NO_COLOR), grey levels become shade glyphs."""

from __future__ import annotations

from functools import lru_cache

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


def _blocks(size: int, new: int) -> np.ndarray:
    """(new, k) source indices covered by each of `new` output pixels; short blocks repeat their last index."""
    start = np.arange(new) * size // new
    stop = np.maximum(start + 1, (np.arange(1, new + 1) * size) // new)
    k = int((stop - start).max())
    return np.minimum(start[:, None] + np.arange(k), stop[:, None] - 1)


def fit(rgb: np.ndarray, width: int, height_cells: int) -> np.ndarray:
    """Resample to at most width x (2 * height_cells) pixels, keeping the aspect ratio. Shrinking keeps the
    brightest pixel of each output pixel's area (by luminance, so colours stay real): a 4x4 trigger patch
    in a 28x28 mask must survive at 8x3 cells, where sampling or averaging would lose it."""
    h, w = rgb.shape[:2]
    scale = min(width / w, 2 * height_cells / h)
    scale = max(scale, 1 / max(h, w))
    new_w, new_h = max(1, int(w * scale)), max(2, int(h * scale) // 2 * 2)
    rows, cols = _blocks(h, new_h), _blocks(w, new_w)  # (new_h, kh), (new_w, kw)
    lum = rgb.astype(np.int32) @ np.array([299, 587, 114])  # ITU-R 601 weights, integers
    area = lum[rows[:, :, None, None], cols[None, None]]  # (new_h, kh, new_w, kw)
    kh, kw = rows.shape[1], cols.shape[1]
    best = area.transpose(0, 2, 1, 3).reshape(new_h, new_w, kh * kw).argmax(2)
    pick_r = np.take_along_axis(rows, best // kw, 1)
    pick_c = cols[np.arange(new_w)[None], best % kw]
    return rgb[pick_r, pick_c]


@lru_cache(maxsize=4096)
def _pair_style(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Style:
    """One style per (top, bottom) colour pair: a mask has few distinct levels, and Styles are costly."""
    return Style(color=Color.from_rgb(*top), bgcolor=Color.from_rgb(*bottom))


def halfblock_runs(rgb: np.ndarray, colour: bool = True) -> list[list[tuple[str, Style | None]]]:
    """Rows of (text, style) runs: each cell shows the top pixel as foreground of '▀' and the bottom as
    background; equal neighbouring cells share one run (masks are mostly flat), so drawing costs little.
    Without colour, a cell shows the brighter of its two pixels as a shade, so a one-pixel-high bright
    row is not halved into a blank."""
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, rgb[-1:]], axis=0)
    top, bottom = rgb[0::2], rgb[1::2]
    if not colour:
        level = np.maximum(top.astype(np.int32).sum(2), bottom.astype(np.int32).sum(2)) / (3 * 255)
        index = np.minimum(len(SHADES) - 1, (level * len(SHADES)).astype(int)).tolist()
        return [[("".join(SHADES[i] for i in row), None)] for row in index]
    lines = []
    for row in np.concatenate([top, bottom], axis=2).tolist():  # (rows, W, 6) as nested lists
        runs: list[tuple[str, Style | None]] = []
        start = 0
        for x in range(1, len(row) + 1):
            if x == len(row) or row[x] != row[start]:
                p = row[start]
                runs.append(("▀" * (x - start), _pair_style((p[0], p[1], p[2]), (p[3], p[4], p[5]))))
                start = x
        lines.append(runs)
    return lines


def halfblock_lines(rgb: np.ndarray, colour: bool = True) -> list[Text]:
    """halfblock_runs as Rich Text, one per row of cells."""
    # rich's annotation leaves out a None style, which Text.append (what assemble calls) takes
    return [Text.assemble(*runs) for runs in halfblock_runs(rgb, colour)]  # type: ignore[arg-type]


class ArrayImage(Widget):
    """Shows a mask or pattern array, scaled to the widget's size. The picture is rendered once per array
    and size (not per frame): the scan screen hands it a new mask a few times a second at most."""

    # no taller minimum than a narrow pane gives: a picture taller than its box is clipped, and at 80x24
    # the clipped bottom rows held the demo trigger (the whole mask looked blank)
    DEFAULT_CSS = "ArrayImage { width: 1fr; height: 1fr; min-height: 2; }"

    def __init__(self, array: np.ndarray | None = None, levels: int = 256, group: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._array = array
        # pictures of one group are drawn at the smallest member's size: side-by-side boxes that share out
        # a width unevenly would otherwise draw the same 28x28 trigger one row taller in one of them
        self.group = group
        self.levels = levels  # grey levels per channel: fewer make runs of equal cells, so fewer segments
        self._strips: list[Strip] = []
        self._rendered_for: tuple | None = None  # (width, height, id of the array, base style)
        self._rgb: np.ndarray | None = None  # the pixels of the strips shown

    def set_array(self, array: np.ndarray | None) -> None:
        if array is self._array:
            return  # the same picture: nothing to redraw
        self._array = array
        if self._rendered_for is not None and array is not None and self._rendered_for[:2] == tuple(self.size):
            picture = self._picture()
            if picture is not None and self._rgb is not None and np.array_equal(picture, self._rgb):
                # a new mask that looks the same at this size and these levels: no redraw (a running
                # search's mask often changes below one grey level between two frames)
                self._rendered_for = (*self._rendered_for[:2], id(array), self._rendered_for[3])
                return
        self._rendered_for = None
        self.refresh()

    def _fit_size(self) -> tuple[int, int]:
        """The cells a picture may fill: this widget's, or the smallest of its group's."""
        width, height = self.size.width, self.size.height
        if self.group and self.is_mounted:
            peers = [w for w in self.screen.query(ArrayImage) if w.group == self.group and w.display and w.size.width]
            width = min([width, *(w.size.width for w in peers)])
            height = min([height, *(w.size.height for w in peers)])
        return width, height

    def _picture(self) -> np.ndarray | None:
        """The array as the (rows, cols, 3) pixels drawn at this size and number of levels."""
        width, height = self._fit_size()
        if self._array is None or width < 2 or height < 1:
            return None
        rgb = fit(to_rgb(self._array), width, height)
        if self.levels < 256:
            step = 255 / (self.levels - 1)
            rgb = (np.rint(rgb / step) * step).astype(np.uint8)
        return rgb

    def _render_strips(self) -> list[Strip]:
        width, height = self.size.width, self.size.height
        if self._array is None or width < 2 or height < 1:
            return []
        base = self.rich_style
        key = (width, height, id(self._array), base)
        if self._rendered_for != key:
            colour = not getattr(self.app, "no_color", False)
            # Every segment gets a real Style: Textual's NO_COLOR (monochrome) filter reads `style.color`
            # and crashed on unstyled padding and blank lines, freezing the terminal.
            rgb = self._picture()
            assert rgb is not None  # the same test as above
            self._strips = [
                Strip([Segment(text, base + style if style else base) for text, style in runs]).extend_cell_length(
                    width, base
                )
                for runs in halfblock_runs(rgb, colour)
            ]
            self._rgb, self._rendered_for = rgb, key
        return self._strips

    def render_line(self, y: int) -> Strip:
        strips = self._render_strips()
        if y >= len(strips):
            return Strip.blank(self.size.width, self.rich_style)
        return strips[y]
