"""Mask pictures shrunk to a few character cells keep small bright regions (NO_COLOR shades and colour)."""

import numpy as np
import pytest
from textual.app import App, ComposeResult

from nc_tui.widgets.image import ArrayImage, fit, halfblock_lines, to_rgb

# (top, left) of a 4x4 patch in a 28x28 mask: the demo's corners, and a spot that nearest-neighbour
# sampling at 8x3 cells (rows and columns 0, 4, 9, 14, 18, 23) missed entirely
PATCHES = [(23, 1), (1, 1), (1, 23), (23, 23), (5, 5), (10, 10)]


def patch_mask(top: int, left: int, value: float = 1.0) -> np.ndarray:
    mask = np.zeros((28, 28), np.float32)
    mask[top : top + 4, left : left + 4] = value
    return mask


def cell_of(top: int, left: int, lines: list[str]) -> str:
    """The characters of the cells over the patch's centre, where it must show."""
    rows, cols = len(lines), len(lines[0])
    return "".join(
        lines[r][c]
        for r in {(top + 1) * rows // 28, (top + 2) * rows // 28}
        for c in {(left + 1) * cols // 28, (left + 2) * cols // 28}
    )


@pytest.mark.parametrize("top,left", PATCHES)
@pytest.mark.parametrize("value", [1.0, 0.45])  # a reversed trigger is rarely pure white
def test_a_4x4_patch_survives_8x3_shade_cells(top, left, value):
    lines = [t.plain for t in halfblock_lines(fit(to_rgb(patch_mask(top, left, value)), 8, 3), colour=False)]
    assert len(lines) == 3 and "".join(lines).strip(), f"the patch vanished: {lines}"
    assert cell_of(top, left, lines).strip(), f"the patch's cell is blank: {lines}"


def test_shrinking_keeps_the_brightest_pixel_and_its_colour():
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[12, 12] = (200, 30, 40)  # one red pixel: kept as it is, not averaged away or turned grey
    small = fit(rgb, 4, 2)
    assert small.shape == (4, 4, 3)
    assert [tuple(p) for p in small.reshape(-1, 3) if p.any()] == [(200, 30, 40)]


def test_enlarging_repeats_pixels():
    rgb = to_rgb(np.eye(4, dtype=np.float32))
    big = fit(rgb, 8, 4)
    assert big.shape == (8, 8, 3)
    assert (big[..., 0] == np.kron(np.eye(4), np.ones((2, 2))) * 255).all()


class OneImage(App):
    CSS = "ArrayImage { width: 8; height: 3; min-height: 3; }"

    def __init__(self, mask: np.ndarray) -> None:
        super().__init__()
        self.mask = mask

    def compose(self) -> ComposeResult:
        yield ArrayImage(self.mask, id="img")


@pytest.mark.asyncio
@pytest.mark.parametrize("top,left", [(23, 1), (10, 10)])
async def test_no_color_widget_at_8x3_shows_the_patch(monkeypatch, top, left):
    """The results screen at 80x24 under NO_COLOR showed the trigger pictures blank."""
    monkeypatch.setenv("NO_COLOR", "1")
    app = OneImage(patch_mask(top, left, 0.45))
    async with app.run_test(size=(20, 5)) as pilot:
        await pilot.pause()
        widget = app.query_one("#img", ArrayImage)
        assert app.no_color and (widget.size.width, widget.size.height) == (8, 3)
        lines = [widget.render_line(y).text[:6] for y in range(3)]  # the picture: 28x28 at 6x6 pixels
    assert "▀" not in "".join(lines)
    assert cell_of(top, left, lines).strip(), f"the patch's cell is blank: {lines}"


@pytest.mark.asyncio
async def test_a_picture_is_no_taller_than_a_short_box(monkeypatch):
    """At 80x24 the results pane can leave a picture 3 rows (long run-folder paths below it); a picture
    with a taller minimum was clipped there, and the demo trigger, in the mask's bottom rows, vanished."""
    from textual.containers import Vertical

    monkeypatch.setenv("NO_COLOR", "1")  # shade characters: a blank cell is a space
    mask = np.zeros((28, 28), np.float32)
    mask[23:27, 2:6] = 1.0  # the demo's patch, bottom left

    class Short(App):
        def compose(self) -> ComposeResult:
            with Vertical(id="box"):
                yield ArrayImage(mask)

        CSS = "#box { height: 3; width: 8; }"

    app = Short()
    async with app.run_test(size=(20, 6)) as pilot:
        await pilot.pause()
        picture = app.query_one(ArrayImage)
        assert picture.size.height <= 3
        rows = [picture.render_line(y).text for y in range(picture.size.height)]
        assert any(ch.strip() for ch in rows[-1])  # the patch, in the last visible row


@pytest.mark.asyncio
async def test_a_new_mask_that_looks_the_same_is_not_redrawn(monkeypatch):
    """The live mask changes every step, mostly below one of its grey levels: only a change the picture
    shows costs a redraw (the scan screen's UI thread keeps to a few percent of a core)."""
    app = OneImage(patch_mask(23, 1, 1.0))
    async with app.run_test(size=(20, 5)) as pilot:
        await pilot.pause()
        widget = app.query_one("#img", ArrayImage)
        widget.levels = 16
        before = [list(widget.render_line(y)) for y in range(3)]  # the segments: text and colours
        refreshes = []
        monkeypatch.setattr(widget, "refresh", lambda *a, **k: refreshes.append(1))
        widget.set_array(patch_mask(23, 1, 1.0) * 0.999)  # a new array, the same picture at 16 levels
        assert refreshes == [] and [list(widget.render_line(y)) for y in range(3)] == before
        widget.set_array(patch_mask(5, 5, 1.0))  # the patch moved: redrawn
        assert refreshes == [1]
        assert [list(widget.render_line(y)) for y in range(3)] != before
