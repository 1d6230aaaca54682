"""The L1 norms as horizontal bars, with the flagging threshold drawn across them."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from nc_engine.report import Report


def l1_bars(report: Report, width: int = 40) -> Text:
    """One bar per label (sorted by label); '|' marks the flagging line (the report's cutoff_l1): bars
    ending left of it belong to flagged labels."""
    rows = sorted(report.labels, key=lambda r: r.label)
    if not rows:
        return Text("no labels")
    top = max(r.l1_norm for r in rows) or 1.0
    cut = report.cutoff_l1
    text = Text()
    name_w = min(10, max(len(r.name) for r in rows))
    for r in rows:
        n = max(1, round(r.l1_norm / top * width))
        bar = list("█" * n + " " * (width - n))
        if cut is not None and cut > 0:
            pos = min(width - 1, round(cut / top * width))
            bar[pos] = "|" if bar[pos] == " " else "┃"
        style = "bold red" if r.flagged else ("yellow" if not r.converged else "cyan")
        text.append(f"{r.label:>3} {r.name[:name_w]:<{name_w}} ")
        text.append("".join(bar), style=style)
        text.append(f" {r.l1_norm:.1f}\n")
    if cut is not None:
        scale = "log L1" if report.statistic == "log_l1" else "L1"
        text.append(f"| = flagging line: L1 {cut:.1f} (median {scale} - {report.threshold:g} x MAD of {scale}; "
                    f"median L1 {report.median_l1:.1f})", style="dim")
    return text


class L1Bars(Static):
    def show(self, report: Report) -> None:
        self.update(l1_bars(report, max(10, self.size.width - 24) if self.size.width else 40))
