"""Headless front end: the engine's events on a plain console (servers, scripts, CI).

With a colour terminal it shows a live progress line per running label group with an ETA; when
piped, or with NO_COLOR set, it prints one unstyled line per finished label instead.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from nc_engine.run import events as ev
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.formatting import (
    TABLE_COLUMNS,
    fmt_eta,
    label_line,
    saved_line,
    table_lines,
    table_rows,
    verdict_line,
)
from nc_engine.verdict.report import Report
from nc_engine.verdict.sentence import verdict_sentence

from .state import ScanState

if TYPE_CHECKING:  # nc_engine.demo.training imports torch, which `nc-tui --help` must not wait for
    from nc_engine.demo.training import TrainingProgress


def make_console(stream=None) -> Console:
    """Plain when not a terminal or NO_COLOR is set (rich honours NO_COLOR itself for colour)."""
    stream = stream or sys.stdout
    plain = not stream.isatty() or "NO_COLOR" in os.environ
    return Console(
        file=stream,
        no_color=plain,
        highlight=False,
        force_terminal=None if not plain else False,
        soft_wrap=plain,
        width=None if not plain else 100,
    )


HEARTBEAT_SECONDS = 10.0  # plain output: the longest silence (batched scans finish no label for 40-50 s)


class ConsoleListener:
    """What the scan's and the audit's console handlers share: the event dispatch, the scan state the
    events build up, and the time of the last printed line (plain output's heartbeat is measured from it)."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self.last_line = clock()
        self.state = ScanState()

    def __call__(self, event: ev.Event) -> None:
        ev.dispatch(self, event)

    def _print(self, *args) -> None:
        self.console.print(*args)
        self.last_line = self.clock()

    def heartbeat_due(self) -> bool:
        return self.clock() - self.last_line >= HEARTBEAT_SECONDS

    def searches_done(self) -> str:
        """ "3/10 searches done" for heartbeat lines."""
        with self.state.lock:
            return f"{self.state.done_jobs}/{self.state.total_jobs} searches done"

    def on_trial_finished(self, e: ev.TrialFinished) -> None:
        self.state.on_trial_finished(e)

    def on_screening_finished(self, e: ev.ScreeningFinished) -> None:
        self.state.on_screening_finished(e)


class HeadlessProgress(ConsoleListener):
    """An on_event handler that renders progress on a console."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(console, clock)
        self.live = console.is_terminal and not console.no_color
        self.progress: Progress | None = None
        self.workers: set[str] = set()  # Ray workers named so far

    def on_scan_started(self, e: ev.ScanStarted) -> None:
        self.state.on_scan_started(e)
        c = self.console
        c.print(f"run folder   {e.run_dir}")
        c.print(f"device       {e.device}, strategy {e.strategy}, {e.group_size} label search(es) at a time")
        c.print(
            f"budget       {e.samples} optimisation samples, {e.asr_samples} held-out, up to "
            f"{e.max_steps} steps, {e.trials} trial(s) per label"
        )
        c.print(f"clean accuracy on the scan samples: {e.clean_accuracy:.2%}")
        if e.screening:
            c.print(
                "screening   every label at a cheap budget first, then the candidates and a few reference "
                "labels at the full budget"
            )
        if e.resumed_trials or e.continued_searches:
            c.print(
                f"resuming: {e.resumed_trials} finished trial(s) kept, {e.continued_searches} running "
                "search(es) continued where they stopped"
            )
        self.last_line = self.clock()
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[eta]}"),
                TimeElapsedColumn(),
                console=c,
                transient=True,
            )
            self.task = self.progress.add_task("labels", total=1.0, eta="ETA --")
            self.group_task = self.progress.add_task("", total=None, eta="")
            self.progress.start()

    def on_warning(self, e: ev.ScanWarning) -> None:
        self._print(Text(f"warning: {e.message}", style="bold yellow"))

    def heartbeat(self) -> None:
        """Plain output's sign of life: labels done, the running labels' steps, images, ETA."""
        with self.state.lock:
            running = [r for r in self.state.labels.values() if r.state == "running"]
            images = self.state.images
        steps = " ".join(f"{r.label}:{r.step}" for r in running[:10]) + (" ..." if len(running) > 10 else "")
        self._print(
            f"... {self.searches_done()}; running (label:step) {steps or 'none'}; "
            f"{images} images; {fmt_eta(self.state.eta_seconds(), True)}"
        )

    def on_step(self, e: ev.StepProgress) -> None:
        self.state.on_step(e)
        if self.progress is None and self.heartbeat_due():
            self.heartbeat()
        if self.progress is not None:
            with self.state.lock:
                running = [r for r in self.state.labels.values() if r.state == "running"]
            group = "  ".join(f"{r.label}:s{r.step} L1 {r.l1:.0f}" for r in running[:8])
            eta = fmt_eta(self.state.eta_seconds(), True)
            self.progress.update(
                self.task,
                completed=self.state.fraction(),
                eta=eta,
                description=f"labels {self.state.done_jobs}/{self.state.total_jobs}",
            )
            room = max(20, self.console.width - 24 - 20)  # the bar and the times need the rest of the line
            self.progress.update(self.group_task, description=f"  running {group}"[:room])

    def on_job_placed(self, e: ev.JobPlaced) -> None:
        """A scan spread over Ray workers: each worker is named once, then by its short name."""
        self.state.on_job_placed(e)
        name, _, where = e.worker.partition(" ")
        if name not in self.workers:
            self.workers.add(name)
            self._print(f"worker {name}: {where}")

    def on_screening_finished(self, e: ev.ScreeningFinished) -> None:
        super().on_screening_finished(e)
        if e.second_round:
            self.console.print(
                f"the verdict depended on the scale shift: confirming {len(e.second_round)} more "
                f"references ({', '.join(map(str, e.second_round))})"
            )
            return
        confirm = sorted(set(e.candidates) | set(e.references))
        refs = ", ".join(map(str, e.references)) or "-"
        self.console.print(
            f"screening done ({e.images} images): confirming {len(confirm)} of "
            f"{len(self.state.labels)} labels at the full budget: candidates "
            f"{', '.join(map(str, e.candidates))}; references {refs}"
        )

    def on_searches_saved(self, e: ev.SearchesSaved) -> None:
        if e.stopping:
            self._print(saved_line(e.searches))

    def on_label_finished(self, e: ev.LabelFinished) -> None:
        self.state.on_label_finished(e)
        row = self.state.labels.get(e.label)
        where = f" on {row.worker.split()[0]}" if row is not None and row.worker else ""
        self._print(
            f"{label_line(e.label, e.name, e.l1_norm, e.asr, e.steps, e.converged)}, "
            f"{e.seconds:.1f}s{where}  [{e.done}/{e.total}, {fmt_eta(self.state.eta_seconds(), True)}]"
        )

    def on_detector_finished(self, e: ev.DetectorFinished) -> None:
        self._print(e.summary)
        for line in e.details:
            self._print(line)

    def on_scan_finished(self, e: ev.ScanFinished) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class TrainingLines:
    """The demo model's training on the console: a line at the end of each epoch, and one at least every
    HEARTBEAT_SECONDS (on a loaded machine an epoch takes longer), with the batches done and an ETA."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.clock = console, clock
        self.started = self.last = clock()

    def __call__(self, p: TrainingProgress) -> None:
        now = self.clock()
        epoch_end = p.done % max(1, p.total // max(1, p.epochs)) == 0 or p.done == p.total
        if not epoch_end and now - self.last < HEARTBEAT_SECONDS:
            return
        self.last = now
        eta = (now - self.started) * (1 - p.fraction) / p.fraction if p.fraction > 0 else None
        self.console.print(
            f"demo: training epoch {p.epoch}/{p.epochs}, batch {p.done}/{p.total} ({p.fraction:.0%}), {fmt_eta(eta)}"
        )


def _mask_area(report: Report) -> int | None:
    """The masks' H*W from the run folder's trigger files (the report has no input shape), if readable."""
    return RunFolder(Path(report.run_dir)).mask_area([r.label for r in report.labels]) if report.run_dir else None


def print_report(console: Console, report: Report, verdict: bool = True) -> None:
    """The ASR / L1 / anomaly table and (unless `verdict` is False) the verdict."""
    area = _mask_area(report)
    if console.no_color or not console.is_terminal:
        console.print("\n".join(table_lines(report, area)))
        if verdict:
            console.print(verdict_line(report), verdict_sentence(report), sep="\n")
        return
    table = Table(title=f"{len(report.labels)} label(s), most anomalous first", title_justify="left")
    for i, name in enumerate(TABLE_COLUMNS):
        table.add_column(name, justify="left" if i in (1, 6) else "right")
    for row in table_rows(report, area):
        table.add_row(*row["cells"], style="bold red" if row["flagged"] else None)
    console.print(table)
    if not verdict:
        return
    style = {"backdoored": "bold white on red", "clean": "bold green"}.get(report.verdict or "", "bold yellow")
    console.print(Text(verdict_line(report), style="dim"))  # the statistics, then the sentence to act on
    console.print(Text(verdict_sentence(report), style=style))
