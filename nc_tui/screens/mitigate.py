"""Mitigation from the results screen: pick a method, watch it run, read the before/after table."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import RichLog, Static

from nc_engine.errors import NCError

TRAIN_LINES = 10  # fine-tuning progress lines per epoch


class MitigateScreen(ModalScreen[None]):
    """u / p / f run unlearning, pruning or the input filter on this run; Escape closes."""

    BINDINGS = [
        Binding("u", "mitigate('unlearn')", "Unlearn", id="unlearn"),
        Binding("p", "mitigate('prune')", "Prune", id="prune"),
        Binding("f", "mitigate('filter')", "Filter", id="filter"),
        Binding("escape", "close", "Close", id="close"),
    ]

    def __init__(self, run_dir: str) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.running = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog mitigate"):
            yield Static("[b]Mitigate[/] the flagged label(s) of this run with their reversed triggers")
            yield Static(
                "[b]u[/] unlearn (fine-tune, the paper's repair)  [b]p[/] prune units\n"
                "[b]f[/] input filter  [b]Esc[/] close",
                classes="hint",
            )
            # min_width: RichLog draws at least 78 columns by default, wider than the dialog at 80x24, and cut
            # the repaired model's path
            yield RichLog(id="mitigate-log", wrap=True, markup=True, max_lines=400, min_width=20)

    def action_mitigate(self, method: str) -> None:
        if self.running:
            return
        self.running = True
        self.query_one(RichLog).write(f"[b]{method}[/]: starting ...")
        self.run_method(method)

    def action_close(self) -> None:
        if not self.running:
            self.dismiss(None)
        else:
            self.notify("mitigation still running; it cannot be interrupted midway", timeout=3)

    @work(thread=True, exclusive=True, group="mitigate")
    def run_method(self, method: str) -> None:
        from nc_engine.mitigate import run_mitigation, table_lines

        try:
            report = run_mitigation(self.run_dir, method, on_event=lambda e: self.app.call_from_thread(self._show, e))
        except NCError as exc:
            self.app.call_from_thread(self._finish, [f"[b red]error:[/] {exc}"])
            return
        lines = [f"[b red]{line}[/]" if line.startswith("NOT REPAIRED") else line for line in table_lines(report)]
        lines.append(f"report: {report['report_path']}")
        if report.get("config_path"):
            lines.append(f"repaired model's config (scan it with nc-tui scan): {report['config_path']}")
        self.app.call_from_thread(self._finish, lines)

    def _show(self, e: Any) -> None:  # an nc_engine Event subclass, told apart by its kind
        log = self.query_one(RichLog)
        if e.kind == "train_progress":
            step = max(1, e.batches // TRAIN_LINES)
            if e.batch % step == 0 or e.batch == e.batches:
                log.write(f"epoch {e.epoch} batch {e.batch}/{e.batches} loss {e.loss:.3f}")
        elif e.kind == "prune_step":
            asr = ", ".join(f"{k}: {v:.0%}" for k, v in e.asr.items())
            log.write(f"pruned {e.units} units ({e.fraction:.0%}): accuracy {e.accuracy:.1%}, ASR {asr}")
        elif e.kind == "stage":
            log.write(e.message)
        elif e.kind == "warning":
            log.write(f"[b yellow]warning:[/] {e.message}")
        elif e.kind == "mitigation_started":
            log.write(
                f"labels {e.labels} on {e.device}: {e.train_images} clean images to work with, "
                f"{e.eval_images} held-out for the before/after table"
            )

    def _finish(self, lines: list[str]) -> None:
        self.running = False
        log = self.query_one(RichLog)
        start = len(log.lines)
        for line in lines:
            log.write(line, scroll_end=False)
        # the before/after table first: the progress lines above it are history
        self.call_after_refresh(log.scroll_to, y=start, animate=False)
