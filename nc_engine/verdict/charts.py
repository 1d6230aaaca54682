"""Inline SVG bar charts for the HTML report: every label's trigger size with its flagging line, and every
label's max-margin with the detector's cut. Plain SVG elements, no script, so the page works offline and
prints as drawn."""

from __future__ import annotations

import math
from html import escape

ROW = 18  # pixels per bar
LEFT = 150  # room for "label name" on the left
WIDTH = 420  # the bars' room
RIGHT = 70  # room for the value on the right


def _log_scale(values: list[float], extra: list[float]):
    """x for a positive value on a log scale from half the smallest to the largest shown."""
    shown = [v for v in [*values, *extra] if v > 0 and math.isfinite(v)]
    low, top = (min(shown) / 2, max(shown)) if shown else (0.5, 1.0)
    span = max(1e-9, math.log(top) - math.log(low))
    return lambda v: LEFT + max(1.0, min(WIDTH, (math.log(max(v, low)) - math.log(low)) / span * WIDTH))


def bar_chart(
    bars: list[tuple[str, float, float | None, bool]],
    caption: str,
    line_label: str,
    element_id: str,
    digits: str = ".1f",
) -> str:
    """One horizontal bar per (name, value, its cut or None, flagged); the cut is drawn across each bar as
    a dark tick, flagged bars in red. Values on a log scale (one huge mask must not flatten the rest)."""
    if not bars:
        return f'<p id="{element_id}">nothing to chart</p>'
    x = _log_scale([b[1] for b in bars], [b[2] for b in bars if b[2] is not None])
    height = ROW * len(bars) + 6
    parts = [
        f'<svg id="{element_id}" class="chart" viewBox="0 0 {LEFT + WIDTH + RIGHT} {height}" '
        f'width="{LEFT + WIDTH + RIGHT}" height="{height}" role="img" aria-label="{escape(caption)}">',
        f"<title>{escape(caption)}</title>",
    ]
    for i, (name, value, cut, flagged) in enumerate(bars):
        y = 4 + i * ROW
        end = x(value) if value > 0 and math.isfinite(value) else LEFT + 1
        css = "bar flagged" if flagged else "bar"
        parts.append(f'<text x="{LEFT - 6}" y="{y + 12}" text-anchor="end" class="name">{escape(name)}</text>')
        parts.append(f'<rect x="{LEFT}" y="{y}" width="{end - LEFT:.1f}" height="{ROW - 4}" class="{css}"/>')
        parts.append(f'<text x="{LEFT + WIDTH + 6}" y="{y + 12}" class="value">{value:{digits}}</text>')
        if cut is not None and cut > 0:
            cx = x(cut)
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y - 2}" y2="{y + ROW - 2}" class="cut"/>')
    parts.append("</svg>")
    parts.append(f'<p class="caption">{escape(line_label)}</p>')
    return "\n".join(parts)
