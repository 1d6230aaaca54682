"""Scan screen: the engine runs in a thread worker; per-label progress, charts and the current mask."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Label, ProgressBar, RichLog, Sparkline, Static

from nc_engine.config.settings import Config
from nc_engine.errors import NCError
from nc_engine.run import events as ev
from nc_engine.verdict.formatting import fmt_eta, fmt_num, label_line, saved_line
from nc_engine.verdict.report import Report

from ..messages import EngineEvent, ScanEnded, ScanStatus, ShowResults
from ..redraw import RedrawBudget
from ..state import ScanState
from ..widgets.image import ArrayImage
from ..widgets.live_table import LiveTable
from ..widgets.titlebar import TitleBar

if TYPE_CHECKING:  # nc_engine.demo.training imports torch: the app starts without it
    from nc_engine.demo.training import TrainingProgress

    from ..app import NCApp

# The view is redrawn from the latest state, never per step: at most at this rate, and less often when
# redrawing costs the UI thread more than its share of a core (redraw.py): every millisecond the UI thread
# runs on a 2-core machine is one the engine's threads lose (bench/bench_app.py).
REFRESH_SECONDS = 0.25
LIVE_LEVELS = 16  # the live mask in 16 grey levels: redrawn a few times a second, it must be cheap to draw
COLUMNS = ("label", "name", "state", "step", "lambda", "L1", "best L1", "attack")
NARROW = 100  # columns below which the label table drops its name and lambda columns
TALL = 40  # rows from which the loss and mask-L1 curves get five rows each instead of two


def _curve_label(name: str, values: list[float]) -> str:
    """'loss 11.2 -> 0.83 (low 0.80)': the ends of the curve drawn below it, and its lowest point."""
    if not values:
        return name
    return f"{name} {values[0]:.3g} -> {values[-1]:.3g} (low {min(values):.3g})"


class ScanScreen(Screen):
    """Live view of a running scan. c cancels (the run folder stays resumable), r resumes."""

    BINDINGS = [
        Binding("c", "cancel", "Cancel scan", id="cancel"),
        Binding("r", "resume", "Resume", id="resume"),
        Binding("v", "results", "Results", id="results"),
    ]

    def __init__(
        self,
        config: Config | None,
        resume: str | None = None,
        prepare: Callable[[Callable[[TrainingProgress], None]], Config] | None = None,
        autostart: bool = True,
        trust_pickle: bool = False,
    ) -> None:
        super().__init__()
        self.autostart = autostart  # False: show the screen without running the engine (snapshot tests)
        self.config = config
        self.prepare = prepare  # run in the worker before the scan (the demo trains its model there)
        self.training_shown = self.training_started = 0.0
        self.resume_dir = resume
        self.trust_pickle = trust_pickle  # --trust-pickle given with --resume
        self.state = ScanState()
        self.stop = threading.Event()
        self.run_dir: str | None = resume
        self.report: Report | None = None
        self.running = False
        self.idle = threading.Event()  # set while no engine thread runs
        self.idle.set()
        self.selected: int | None = None
        self._dirty = False  # set by the engine's thread on every step; the timer redraws and clears it
        self._detail_key: tuple = ()  # what the detail pane shows, to redraw it only when it changes
        self._eta_text = ""
        self._budget = RedrawBudget()

    def compose(self) -> ComposeResult:
        yield TitleBar("scan")
        yield Static("starting: loading the model and the data ...", id="scan-info")
        with Horizontal(id="progress-row"):
            yield ProgressBar(total=1.0, show_eta=False, id="overall")
            yield Static("", id="eta")
        with Horizontal(id="scan-main"):
            yield LiveTable(COLUMNS, id="labels")  # redrawn row by row: cheaper than a DataTable
            with Vertical(id="detail"):
                yield Label("", id="detail-title")
                yield Label("loss", id="loss-label", classes="chart-label")
                yield Sparkline([], id="loss-chart")
                yield Label("mask L1", id="l1-label", classes="chart-label")
                yield Sparkline([], id="l1-chart")
                yield ArrayImage(id="current-mask", levels=LIVE_LEVELS)
        yield RichLog(id="log", max_lines=500, wrap=True, markup=True)
        yield Footer()

    def on_resize(self) -> None:
        # below 100 columns the name (in the detail title too) and lambda give way, so that best L1 and
        # the attack rate, the columns that say how a search goes, are never cut off
        narrow = self.size.width < NARROW
        self.query_one("#labels", LiveTable).hide_columns(("name", "lambda") if narrow else ())
        self.set_class(narrow, "-narrow")
        self.set_class(self.size.height >= TALL, "-tall")

    def on_mount(self) -> None:
        cast("NCApp", self.app).scan_stops.append(self.stop)
        self.set_interval(REFRESH_SECONDS, self._refresh_view)
        if self.autostart:
            self.running = True
            self.run_engine(self.config, self.resume_dir, self.prepare)

    # ---- the worker: the engine runs here and talks back through messages only
    @work(thread=True, exclusive=True, group="scan")
    def run_engine(
        self,
        config: Config | None,
        resume: str | None,
        prepare: Callable[[Callable[[TrainingProgress], None]], Config] | None = None,
    ) -> None:
        from nc_engine.run.scan import run_scan

        def on_event(event: ev.Event) -> None:
            ev.dispatch(self.state, event)
            # A step only marks the view dirty (no message, no wake-up of the UI thread): the timer draws
            # the latest state of every label. The rest are few and shown as they come.
            if isinstance(event, ev.StepProgress):
                self._dirty = True
            else:
                self.post_message(EngineEvent(event))

        self.idle.clear()
        try:
            if prepare is not None:
                self.app.call_from_thread(
                    self.query_one("#scan-info", Static).update,
                    "preparing the demo model (trained once, then cached) ...",
                )
                self.training_started = time.monotonic()
                config = prepare(self.training_progress)
                self.config = config
            # resuming the scan this screen started from the user's config: that config's say-so stands
            trust = self.trust_pickle or (self.config is not None and self.config.model.trust_pickle)
            report = run_scan(config, on_event, self.stop, resume=resume, trust_pickle=trust)
        except NCError as exc:
            self.post_message(ScanEnded(None, str(exc)))
            return
        except Exception as exc:  # an engine bug: say so without killing the app
            self.post_message(ScanEnded(None, f"internal error: {type(exc).__name__}: {exc}"))
            return
        finally:
            self.idle.set()
        self.post_message(ScanEnded(report))

    def training_progress(self, p: TrainingProgress) -> None:
        """From the worker: the demo model's training, drawn on the progress bar a few times a second."""
        now = time.monotonic()
        if p.done < p.total and now - self.training_shown < REFRESH_SECONDS:
            return
        self.training_shown = now
        elapsed = now - self.training_started
        eta = elapsed * (1 - p.fraction) / p.fraction if p.fraction > 0 else None
        self.app.call_from_thread(self.show_training, p, eta)

    def show_training(self, p: TrainingProgress, eta: float | None) -> None:
        self.query_one("#overall", ProgressBar).update(progress=p.fraction)
        self.query_one("#eta", Static).update(f" {p.fraction:5.1%}  {fmt_eta(eta)}")
        self.query_one("#scan-info", Static).update(
            f"training the demo model (once, then cached): epoch {p.epoch} of {p.epochs}, batch {p.done} of {p.total}"
        )

    # ---- messages from the worker
    @on(EngineEvent)
    def engine_event(self, message: EngineEvent) -> None:
        ev.dispatch(self, message.event, prefix="show_")

    def show_scan_started(self, e: ev.ScanStarted) -> None:
        self.run_dir = e.run_dir
        self.query_one("#overall", ProgressBar).update(progress=0.0)  # the demo's training may have filled it
        self.query_one("#eta", Static).update("")
        self.post_message(ScanStatus(e.run_dir, False))
        # clean accuracy first: the number that says whether the scan means anything, never cut at 80 columns
        self.query_one("#scan-info", Static).update(
            f"clean accuracy [b]{e.clean_accuracy:.1%}[/]  {Path(e.run_dir).name}  {e.device}, {e.strategy}, "
            f"{e.group_size} at a time, {e.samples} samples"
        )
        self._fill_table()
        self.query_one("#log", RichLog).write(f"run folder {e.run_dir}")

    def show_warning(self, e: ev.ScanWarning) -> None:
        self.query_one("#log", RichLog).write(Text.assemble(("warning: ", "bold yellow"), e.message))

    def show_screening_finished(self, e: ev.ScreeningFinished) -> None:
        log = self.query_one("#log", RichLog)
        if e.second_round:
            log.write(
                Text(f"the verdict depended on the scale shift: confirming references {e.second_round}", style="bold")
            )
            self._update_rows()
            return
        confirm = sorted(set(e.candidates) | set(e.references))
        log.write(
            Text(
                f"screening done: confirming {len(confirm)} labels at the full budget "
                f"(candidates {e.candidates}, references {e.references})",
                style="bold",
            )
        )
        for label in e.candidates:
            log.write(Text(f"  label {label}: {e.why.get(label, '')}"))
        self._update_rows()

    def show_label_finished(self, e: ev.LabelFinished) -> None:
        self.query_one("#log", RichLog).write(Text(label_line(e.label, e.name, e.l1_norm, e.asr, e.steps, e.converged)))
        self._update_rows()

    def show_searches_saved(self, e: ev.SearchesSaved) -> None:
        if e.stopping:
            self.query_one("#log", RichLog).write(Text(saved_line(e.searches)))

    def show_scan_finished(self, e: ev.ScanFinished) -> None:
        if not e.completed:
            self.state.stopped()
            self._update_rows()
            self.query_one("#log", RichLog).write(
                "[b]stopped.[/] Finished labels and running searches are kept; press [b]r[/] to resume."
            )

    def _refresh_view(self) -> None:
        """Redraw at most a few times a second: the engine's thread needs the GIL more than we do."""
        if not self._dirty or not self._budget.allows():
            return
        self._dirty = False
        self._update_rows()
        self._update_detail()
        frac = self.state.fraction()
        self.query_one("#overall", ProgressBar).update(progress=frac)
        self._set_eta(f" {frac:5.1%}  {fmt_eta(self.state.eta_seconds(), True)}")
        self._budget.drawn()

    def _set_eta(self, text: str) -> None:
        if text != self._eta_text:  # an unchanged Static would still be re-rendered
            self._eta_text = text
            self.query_one("#eta", Static).update(text, layout=False)  # a fixed box: no layout pass

    @on(ScanEnded)
    def scan_ended(self, message: ScanEnded) -> None:
        self.running = False
        log = self.query_one("#log", RichLog)
        if message.error:
            log.write(f"[b red]error:[/] {message.error}")
            self.query_one("#scan-info", Static).update(f"[b red]✗ {message.error}[/]")
            return
        self.report = message.report
        assert self.report is not None  # no error: the worker returned its report
        self.post_message(ScanStatus(self.report.run_dir, self.report.complete))
        self._update_rows()
        if self.report.complete:
            self.query_one("#overall", ProgressBar).update(progress=1.0)
            self._set_eta(" done")
            self.post_message(ShowResults(self.report))
        else:
            self._set_eta(" stopped: r resumes")

    # ---- drawing
    def _fill_table(self) -> None:
        table = self.query_one("#labels", LiveTable)
        table.clear()
        with self.state.lock:
            for label, row in self.state.labels.items():
                table.add_row(str(label), self._cells(row))
        if self.selected is None and self.state.labels:
            self.selected = next(iter(self.state.labels))

    def _cells(self, row) -> tuple[str, ...]:
        state = {
            "running": f"running t{row.trial}",
            "not converged": "[yellow]not conv.[/]",
            "done": "[green]done[/]",
            "stopped": "[dim]stopped[/]",
            "screening": "screening",
            "screened": "screened",
            "confirming": "[b]to confirm[/]",
        }.get(row.state, "waiting")
        return (
            str(row.label),
            row.name[:10],
            state,
            str(row.step),
            fmt_num(row.cost, ".1e"),
            fmt_num(row.l1, ".1f"),
            fmt_num(row.best_l1, ".1f"),
            fmt_num(row.attack_acc, ".0%"),
        )

    def _update_rows(self) -> None:
        """The table redraws only the rows whose cells changed (LiveTable)."""
        table = self.query_one("#labels", LiveTable)
        with self.state.lock:
            rows = [(str(row.label), self._cells(row)) for row in self.state.labels.values()]
        for key, cells in rows:
            if table.has_row(key):
                table.update_row(key, cells)

    def _update_detail(self) -> None:
        if self.selected is None:
            return
        with self.state.lock:
            row = self.state.labels.get(self.selected)
            if row is None:
                return
            key = (row.label, row.trial, row.step, row.state, row.l1, row.best_l1, len(row.loss_history), id(row.mask))
            if key == self._detail_key:
                return  # nothing new for this label: leave its charts and picture alone
            self._detail_key = key
            losses, l1s, mask = row.loss_history[-60:], row.l1_history[-60:], row.mask
            name = "" if row.name == str(row.label) else f" ({row.name})"
            title = (
                f"label {row.label}{name}: step {row.step}\nL1 {fmt_num(row.l1, '.1f')}, "
                f"best {fmt_num(row.best_l1, '.1f')}" + (f", on {row.worker}" if row.worker else "")
            )
        self.query_one("#detail-title", Label).update(title, layout=False)  # a fixed box (app.tcss)
        self.query_one("#loss-chart", Sparkline).data = losses
        self.query_one("#l1-chart", Sparkline).data = l1s
        # a sparkline has no axis: its label says where the curve started and where it is now
        self.query_one("#loss-label", Label).update(_curve_label("loss", losses), layout=False)
        self.query_one("#l1-label", Label).update(_curve_label("mask L1", l1s), layout=False)
        self.query_one("#current-mask", ArrayImage).set_array(mask)

    @on(LiveTable.RowHighlighted, "#labels")
    def row_highlighted(self, event: LiveTable.RowHighlighted) -> None:
        self.selected = int(event.key)
        self._update_detail()

    # ---- actions
    def action_cancel(self) -> None:
        if self.running:
            self.stop.set()
            self.query_one("#log", RichLog).write("cancelling: stopping after the current mini-batch ...")

    def action_resume(self) -> None:
        if self.running or self.run_dir is None or (self.report and self.report.complete):
            return
        self.stop = threading.Event()
        cast("NCApp", self.app).scan_stops.append(self.stop)
        self.running = True
        self.query_one("#log", RichLog).write(f"resuming {self.run_dir}")
        self.run_engine(None, self.run_dir)

    def action_results(self) -> None:
        if self.report is not None and self.report.complete:
            self.post_message(ShowResults(self.report))

    def stop_and_wait(self, timeout: float = 30.0) -> None:
        """For quitting: ask the engine to stop and give it time to leave a resumable folder."""
        self.stop.set()
        self.idle.wait(timeout)
