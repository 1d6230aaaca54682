"""Audit screen: every model of a zoo with its live state, verdict, flagged labels and time; Enter opens
the selected model's results. The audit runs in a thread worker and talks back through messages."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static

from nc_engine.audit import events as ae
from nc_engine.audit.spec import AuditSpec
from nc_engine.audit.summary import AuditRow
from nc_engine.errors import NCError
from nc_engine.run import events as ev
from nc_engine.verdict.report import Report

from ..messages import EngineEvent
from ..state import ScanState
from ..widgets.titlebar import TitleBar
from .results import ResultsScreen

if TYPE_CHECKING:
    from ..app import NCApp

REFRESH_SECONDS = 0.4
COLUMNS = ("model", "state", "verdict", "flagged", "time")
VERDICT_STYLE = {"backdoored": "b red", "clean": "green", "inconclusive": "yellow", "error": "b red"}


@dataclass
class ModelLine:
    """One model as the table shows it."""

    name: str
    state: str = "waiting"  # waiting | scanning | done | done earlier | stopped | error
    verdict: str = ""
    flagged: str = ""
    seconds: float | None = None
    run_dir: str = ""
    note: str = ""  # an error's line, or an inconclusive verdict's first reason
    started: float | None = None


class AuditFailed(Message):
    """The audit's worker ended without finishing: `error` says why."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class AuditResultsScreen(ResultsScreen):
    """A model's results opened from the audit: Escape goes back to the audit."""

    BINDINGS = [Binding("escape", "back", "Back to audit", id="back"), *ResultsScreen.BINDINGS]

    def action_back(self) -> None:
        self.dismiss()


class AuditScreen(Screen):
    """c stops the audit (the running scan stays resumable), r runs it again (finished models are skipped)."""

    BINDINGS = [
        Binding("enter", "open", "Results", show=False),
        Binding("o", "open", "Open results", id="open"),
        Binding("c", "cancel", "Stop audit", id="cancel"),
        Binding("r", "resume", "Resume", id="resume"),
    ]

    def __init__(self, spec: AuditSpec, autostart: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.autostart = autostart  # False: events are fed by a test
        self.lines = {m.name: ModelLine(m.name) for m in spec.models}
        self.state = ScanState()  # the running model's scan
        self.current: str | None = None
        self.stop = threading.Event()
        self.running = False
        self.idle = threading.Event()
        self.idle.set()
        self.finished: ae.AuditFinished | None = None

    @property
    def resume_hint(self) -> str:
        return f"nc-tui audit {self.spec.path} --out {self.spec.out}"

    def compose(self) -> ComposeResult:
        yield TitleBar("audit")
        yield Static(
            f"{len(self.spec.models)} model(s) from {self.spec.path.name}; run folders in {self.spec.out}",
            id="audit-info",
        )
        yield DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="audit-detail")
        yield RichLog(id="audit-log", max_lines=500, wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#audit-table", DataTable)
        for name in COLUMNS:
            table.add_column(name, key=name)
        for line in self.lines.values():
            table.add_row(*self._cells(line), key=line.name)
        table.focus()
        self.set_interval(REFRESH_SECONDS, self._refresh_running)
        if self.autostart:
            self.start()

    def start(self) -> None:
        self.stop = threading.Event()
        cast("NCApp", self.app).scan_stops.append(self.stop)
        self.running = True
        self.run_audit()

    # ---- the worker
    def listener(self, event: ev.Event) -> None:
        """The engine's events, in the worker's thread: steps only mark the view dirty."""
        ev.dispatch(self.state, event)
        if not isinstance(event, ev.StepProgress):  # steps: the refresh timer draws the state they updated
            self.post_message(EngineEvent(event))

    @work(thread=True, exclusive=True, group="audit")
    def run_audit(self) -> None:
        from nc_engine.audit.run import run_audit

        self.idle.clear()
        try:
            run_audit(self.spec, self.listener, self.stop)
        except NCError as exc:
            self.post_message(AuditFailed(str(exc)))
        except Exception as exc:  # an engine bug: say so without killing the app
            self.post_message(AuditFailed(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self.idle.set()

    # ---- events, in the UI's thread
    @on(AuditFailed)
    def audit_failed(self, message: AuditFailed) -> None:
        self.running = False
        self.query_one("#audit-log", RichLog).write(f"error: {message.error}")

    @on(EngineEvent)
    def engine_event(self, message: EngineEvent) -> None:
        ev.dispatch(self, message.event, prefix="show_")

    def show_model_started(self, e: ae.ModelStarted) -> None:
        line = self.lines[e.name]
        self.current, line.state, line.started = e.name, "scanning", time.monotonic()
        line.run_dir = e.resume or line.run_dir
        self._update(line)

    def show_scan_started(self, e: ev.ScanStarted) -> None:
        if self.current:
            self.lines[self.current].run_dir = e.run_dir
            self.query_one("#audit-log", RichLog).write(f"{self.current}: scanning in {e.run_dir}")

    def show_warning(self, e: ev.ScanWarning) -> None:
        self.query_one("#audit-log", RichLog).write(f"{self.current}: warning: {e.message}")

    def show_model_finished(self, e: ae.ModelFinished) -> None:
        row: AuditRow = e.row
        line = self.lines[e.name]
        line.state = {"error": "error", "unfinished": "stopped"}.get(e.verdict, "done earlier" if e.skipped else "done")
        line.verdict = "" if e.verdict == "unfinished" else e.verdict
        line.flagged = " ".join(map(str, e.flagged))
        line.seconds, line.run_dir, line.started = e.seconds, e.run_dir or line.run_dir, None
        line.note = row.reasons[0] if row.reasons else ""
        self.current = None
        self._update(line)
        self.query_one("#audit-log", RichLog).write(
            f"[{e.index + 1}/{e.total}] {e.name}: {e.verdict}" + (f" ({line.note})" if line.note else "")
        )

    def show_audit_finished(self, e: ae.AuditFinished) -> None:
        self.running, self.finished = False, e
        cast("NCApp", self.app).audit_finished(e, self.resume_hint)
        what = "finished" if e.complete else "stopped: r resumes"
        self.query_one("#audit-info", Static).update(f"audit {what}; summary {e.summary_csv}")

    # ---- drawing
    def _cells(self, line: ModelLine) -> tuple[str | Text, ...]:
        state = line.state
        if state == "scanning" and self.current == line.name and self.state.total_jobs:
            state = f"scanning {self.state.fraction():.0%}"
        seconds = line.seconds if line.started is None else time.monotonic() - line.started
        verdict = Text(line.verdict.upper() if line.verdict else "-", style=VERDICT_STYLE.get(line.verdict, ""))
        return (line.name[:28], state, verdict, line.flagged or "-", "-" if seconds is None else f"{seconds:.0f}s")

    def _update(self, line: ModelLine) -> None:
        table = self.query_one("#audit-table", DataTable)
        for column, value in zip(COLUMNS, self._cells(line), strict=True):
            table.update_cell(line.name, column, value, update_width=True)
        self._show_detail()

    def _refresh_running(self) -> None:
        if self.current is not None and self.running:  # the running model's progress and elapsed time
            self._update(self.lines[self.current])

    def selected(self) -> ModelLine | None:
        table = self.query_one("#audit-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.lines.get(key or "")

    @on(DataTable.RowHighlighted, "#audit-table")
    def _show_detail(self) -> None:
        line = self.selected()
        text = "" if line is None else f"{line.name}: {line.note or line.run_dir or 'not scanned yet'}"
        self.query_one("#audit-detail", Static).update(Text(text))

    # ---- actions
    @on(DataTable.RowSelected, "#audit-table")
    def action_open(self) -> None:
        line = self.selected()
        if line is None or line.state not in ("done", "done earlier", "stopped") or not line.run_dir:
            self.notify(
                "no results yet for this model"
                if line is None or line.state != "error"
                else f"{line.name}: {line.note}",
                timeout=5,
            )
            return
        try:
            report = Report.read(line.run_dir)
        except NCError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self.app.push_screen(AuditResultsScreen(report))

    def action_cancel(self) -> None:
        if self.running:
            self.stop.set()
            self.query_one("#audit-log", RichLog).write("stopping: the running scan stops after its mini-batch ...")

    def action_resume(self) -> None:
        if not self.running and not (self.finished and self.finished.complete):
            self.query_one("#audit-log", RichLog).write("resuming: finished models are skipped")
            self.start()

    def stop_and_wait(self, timeout: float = 30.0) -> None:
        self.stop.set()
        self.idle.wait(timeout)
