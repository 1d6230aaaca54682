"""The audit on a plain console: a line when each model starts and finishes, the running scan's
heartbeat while it works, and the summary table at the end."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from nc_engine.audit import events as ae
from nc_engine.audit.summary import AuditRow, summary_lines, verdict_text
from nc_engine.run import events as ev
from nc_engine.verdict.formatting import fmt_eta

from .console import ConsoleListener

STYLES = {"backdoored": "bold red", "clean": "green", "inconclusive": "yellow", "error": "bold red"}


class AuditProgress(ConsoleListener):
    """An on_event handler for run_audit: model lines, and a `...` line at least every 10 s while a scan runs."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(console, clock)
        self.current = ""

    def on_audit_started(self, e: ae.AuditStarted) -> None:
        self._print(
            f"audit: {len(e.models)} model(s) from {e.spec}, run folders in {e.out}"
            + (" (in parallel on Ray)" if e.backend == "ray" else "")
        )

    def on_model_started(self, e: ae.ModelStarted) -> None:
        self.current = e.name
        if e.resume:
            self._print(f"[{e.index + 1}/{e.total}] {e.name}: resuming {e.resume}")

    def on_scan_started(self, e: ev.ScanStarted) -> None:
        self.state.on_scan_started(e)
        kept = f", {e.resumed_trials} finished trial(s) kept" if e.resumed_trials else ""
        self._print(f"  {self.current}: scanning in {e.run_dir} (clean accuracy {e.clean_accuracy:.1%}{kept})")

    def on_step(self, e: ev.StepProgress) -> None:
        self.state.on_step(e)
        if self.heartbeat_due():
            self._print(
                f"  ... {self.current}: {self.searches_done()}, {self.state.images} images, "
                f"{fmt_eta(self.state.eta_seconds(), True)}"
            )

    def on_warning(self, e: ev.ScanWarning) -> None:
        self._print(Text(f"  {self.current}: warning: {e.message}", style="yellow"))

    def on_model_finished(self, e: ae.ModelFinished) -> None:
        row: AuditRow = e.row
        flagged = f" flagged {' '.join(map(str, e.flagged))}" if e.flagged else ""
        skipped = " (finished earlier)" if e.skipped else ""
        where = f"  {e.run_dir}" if e.run_dir else ""
        why = f"  {e.reasons[0]}" if e.verdict == "error" and e.reasons else ""
        self._print(
            Text.assemble(
                f"[{e.index + 1}/{e.total}] {e.name}  ",
                (verdict_text(row), STYLES.get(e.verdict, "")),
                f"{flagged}  {e.seconds:.1f}s{skipped}{where}{why}",
            )
        )


def print_summary(console: Console, rows: list[AuditRow]) -> None:
    console.print()
    for line in summary_lines(rows):
        console.print(line, highlight=False, markup=False)
