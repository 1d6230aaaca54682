"""Headless front end: the engine's events on a plain console (servers, scripts, CI).

With a colour terminal it shows a live progress line per running label group with an ETA; when
piped, or with NO_COLOR set, it prints one unstyled line per finished label instead.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from nc_engine import events as ev
from nc_engine.formatting import TABLE_COLUMNS, fmt_eta, label_line, table_lines, table_rows, verdict_line
from nc_engine.report import Report

from .state import ScanState


def make_console(stream=None) -> Console:
    """Plain when not a terminal or NO_COLOR is set (rich honours NO_COLOR itself for colour)."""
    stream = stream or sys.stdout
    plain = not stream.isatty() or "NO_COLOR" in os.environ
    return Console(file=stream, no_color=plain, highlight=False, force_terminal=None if not plain else False,
                   soft_wrap=plain, width=None if not plain else 100)


class HeadlessProgress:
    """An on_event handler that renders progress on a console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal and not console.no_color
        self.progress: Progress | None = None
        self.state = ScanState()

    def __call__(self, event: ev.Event) -> None:
        ev.dispatch(self, event)

    def on_scan_started(self, e: ev.ScanStarted) -> None:
        self.state.on_scan_started(e)
        c = self.console
        c.print(f"run folder   {e.run_dir}")
        c.print(f"device       {e.device}, strategy {e.strategy}, {e.group_size} label search(es) at a time")
        c.print(f"budget       {e.samples} optimisation samples, {e.asr_samples} held-out, up to "
                f"{e.max_steps} steps, {e.trials} trial(s) per label")
        c.print(f"clean accuracy on the scan samples: {e.clean_accuracy:.2%}")
        if e.screening:
            c.print("screening   every label at a cheap budget first, then the candidates and a few reference "
                    "labels at the full budget")
        if e.resumed_trials:
            c.print(f"resuming: {e.resumed_trials} finished trial(s) kept")
        if self.live:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                     TextColumn("{task.fields[eta]}"), TimeElapsedColumn(), console=c, transient=True)
            self.task = self.progress.add_task("labels", total=1.0, eta="ETA --")
            self.group_task = self.progress.add_task("", total=None, eta="")
            self.progress.start()

    def on_warning(self, e: ev.ScanWarning) -> None:
        self.console.print(Text(f"warning: {e.message}", style="bold yellow"))

    def on_step(self, e: ev.StepProgress) -> None:
        self.state.on_step(e)
        if self.progress is not None:
            with self.state.lock:
                running = [r for r in self.state.labels.values() if r.state == "running"]
            group = "  ".join(f"{r.label}:s{r.step} L1 {r.l1:.0f}" for r in running[:8])
            self.progress.update(self.task, completed=self.state.fraction(), eta=fmt_eta(self.state.eta_seconds()),
                                 description=f"labels {self.state.done_jobs}/{self.state.total_jobs}")
            room = max(20, self.console.width - 24 - 20)  # the bar and the times need the rest of the line
            self.progress.update(self.group_task, description=f"  running {group}"[:room])

    def on_trial_finished(self, e: ev.TrialFinished) -> None:
        self.state.on_trial_finished(e)

    def on_screening_finished(self, e: ev.ScreeningFinished) -> None:
        self.state.on_screening_finished(e)
        confirm = sorted(set(e.candidates) | set(e.references))
        refs = ", ".join(map(str, e.references)) or "-"
        self.console.print(f"screening done ({e.images} images): confirming {len(confirm)} of "
                           f"{len(self.state.labels)} labels at the full budget: candidates "
                           f"{', '.join(map(str, e.candidates))}; references {refs}")

    def on_label_finished(self, e: ev.LabelFinished) -> None:
        self.state.on_label_finished(e)
        self.console.print(f"{label_line(e.label, e.name, e.l1_norm, e.asr, e.steps, e.converged)}, "
                           f"{e.seconds:.1f}s  [{e.done}/{e.total}, {fmt_eta(self.state.eta_seconds())}]")

    def on_scan_finished(self, e: ev.ScanFinished) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def print_report(console: Console, report: Report) -> None:
    """The ASR / L1 / anomaly table and the verdict."""
    if console.no_color or not console.is_terminal:
        console.print("\n".join(table_lines(report)))
        console.print(verdict_line(report))
        return
    table = Table(title=f"{len(report.labels)} label(s), most anomalous first", title_justify="left")
    for i, name in enumerate(TABLE_COLUMNS):
        table.add_column(name, justify="left" if i in (1, 6) else "right")
    for row in table_rows(report):
        table.add_row(*row["cells"], style="bold red" if row["flagged"] else None)
    console.print(table)
    style = {"backdoored": "bold white on red", "clean": "bold green"}.get(report.verdict, "bold yellow")
    console.print(Text(verdict_line(report), style=style))
