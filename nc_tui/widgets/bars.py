"""The L1 norms as horizontal bars on a log scale, with the flagging threshold drawn across them."""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import Static

from nc_engine.verdict.report import Report


def _scale(low: float, top: float, width: int):
    """Bar length for an L1 norm on a log scale from low/2 to top: one huge (degenerate) mask must not
    squash every other label into the same one-cell bar."""
    floor = math.log(low / 2)
    span = max(1e-9, math.log(top) - floor)
    return lambda v: max(1, min(width, round((math.log(max(v, low / 2)) - floor) / span * width)))


def l1_bars(report: Report, width: int = 40, degenerate: frozenset[int] = frozenset()) -> Text:
    """One bar per label, flagged labels first and then smallest L1 first, so the labels that matter are on
    screen even when a 43-label chart is cut at 80x24; '|' marks the label's own flagging line (report.cutoff_of: one
    line for all unless the class-frequency correction moved it): bars ending left of it are flagged.
    Degenerate searches (`degenerate` labels) are marked."""
    rows = sorted(report.labels, key=lambda r: (not r.flagged, r.l1_norm if math.isfinite(r.l1_norm) else math.inf))
    positive = [r.l1_norm for r in rows if r.l1_norm > 0 and math.isfinite(r.l1_norm)]
    if not positive:
        return Text("no labels")
    length = _scale(min(positive), max(positive), width)
    text = Text(_legend(report) + "\n", style="dim")  # first: the bars may scroll, the scale must be seen
    name_w = min(10, max(len(r.name) for r in rows))
    for r in rows:
        n = length(r.l1_norm) if math.isfinite(r.l1_norm) else 1
        bar = list("█" * n + " " * (width - n))
        cut = report.cutoff_of(r)
        if cut is not None and cut > 0:
            pos = min(width - 1, length(cut) - 1)
            bar[pos] = "|" if bar[pos] == " " else "┃"
        bad = r.label in degenerate
        style = "bold red" if r.flagged else ("yellow" if bad or not r.converged else "cyan")
        text.append(f"{r.label:>3} {r.name[:name_w]:<{name_w}} ")
        text.append("".join(bar), style=style)
        text.append(f" {r.l1_norm:.1f}" + (" degenerate" if bad else "") + "\n")
    return text


def _legend(report: Report) -> str:
    legend = "L1 on a log scale, flagged then smallest first"
    cut = report.cutoff_l1
    if cut is not None:
        scale = "log L1" if report.statistic == "log_l1" else "L1"
        spread = f"max(MAD, {report.spread_floor:g})" if report.spread_floor else "MAD"
        legend += (
            f"; | = flagging line: L1 {cut:.1f} (median {scale} - {report.threshold:g} x {spread} of {scale}; "
            f"median L1 {report.median_l1:.1f})"
        )
        if report.frequency_slope:
            legend += "; each label's line moves with its class's share (class-frequency correction)"
    return legend


class L1Bars(Static):
    def show(self, report: Report, degenerate: frozenset[int] = frozenset()) -> None:
        self.update(l1_bars(report, max(10, self.size.width - 30) if self.size.width else 40, degenerate))
