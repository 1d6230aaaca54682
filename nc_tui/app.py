"""The nc-tui terminal app: set up a scan by keyboard, watch it live, read the verdict and triggers.

Screens: SetupScreen -> ScanScreen -> ResultsScreen, with MitigateScreen over the results and the
dialogs (help, confirm, path prompt) over any of them. The engine knows nothing of Textual: the scan
screen runs `run_scan` in a thread worker and adapts its events into messages; screens ask the app
for navigation by posting the requests in messages.py.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.filter import Monochrome, NoColor
from textual.screen import Screen

from nc_engine.audit.events import AuditFinished
from nc_engine.audit.spec import AuditSpec
from nc_engine.config.settings import Config, load_config
from nc_engine.errors import NCError
from nc_engine.verdict.report import Report

from .messages import LoadConfigFile, NewScan, ScanStatus, ShowResults, StartScan
from .screens.audit import AuditScreen
from .screens.dialogs import Confirm, HelpScreen
from .screens.results import ResultsScreen
from .screens.scan import ScanScreen
from .screens.setup import SetupScreen


class NCApp(App[int]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute, so subclasses elsewhere find it
    TITLE = "nc-tui"
    SUB_TITLE = "Neural Cleanse backdoor scanner"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("f1", "help", "Help", id="help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("q", "quit_app", "Quit", id="quit"),
        Binding("ctrl+q", "quit_app", "Quit", show=False, priority=True),
        Binding("ctrl+c", "cancel_or_quit", "Cancel", show=False, priority=True),
    ]

    def __init__(
        self,
        config: Config | None = None,
        mode: str = "setup",
        report: Report | None = None,
        resume: str | None = None,
        prepare: Callable[[Callable], Config] | None = None,
        autostart: bool = True,
        audit: AuditSpec | None = None,
        trust_pickle: bool = False,
    ) -> None:
        super().__init__()
        if self.no_color:  # NO_COLOR means no colour: Textual's own filter sends 256-colour greys instead
            self._filters = [f for f in self._filters if not isinstance(f, Monochrome)] + [NoColor()]
        self.autostart = autostart  # False: the scan screen waits for events fed by a test
        self.start_config = config or Config()
        self.mode = mode
        self.start_report = report
        self.resume = resume
        self.trust_pickle = trust_pickle  # --trust-pickle: a resumed folder's trust_pickle = true may load
        self.prepare = prepare
        self.scan_stops: list[threading.Event] = []  # every scan's stop event, set when the app ends
        self.runs: dict[str, bool] = {}  # run folder -> scan complete, for the lines printed on exit
        self.audit = audit
        self.audit_result: AuditFinished | None = None  # the audit's last end, for the exit code and lines
        self.audit_hint = ""

    def exit_lines(self) -> list[str]:
        """Printed after the app leaves the terminal: where each scan's results are, how to resume."""
        lines = []
        for run_dir, complete in self.runs.items():
            lines.append(f"run folder: {run_dir}")
            lines.append(
                f"interrupted; resume with: nc-tui scan --resume {run_dir}"
                if not complete
                else f"results again: nc-tui report {run_dir}"
            )
        if self.audit is not None:
            result = self.audit_result
            if result is not None:
                lines.append(f"audit summary: {result.summary_csv}")
            if result is None or not result.complete:
                lines.append(f"audit unfinished; continue with: {self.audit_hint or 'nc-tui audit SPEC'}")
        return lines

    def audit_finished(self, result: AuditFinished, hint: str) -> None:
        self.audit_result, self.audit_hint = result, hint

    def stop_all_scans(self) -> None:
        """Called after the app ends, however it ends: no engine thread may outlive the UI."""
        for stop in self.scan_stops:
            stop.set()

    def on_mount(self) -> None:
        try:  # a dropped SSH session sends SIGHUP: stop the scan (keeping its folder) and leave
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._hang_up)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        if self.mode == "report" and self.start_report is not None:
            self.push_screen(ResultsScreen(self.start_report))
        elif self.mode == "audit" and self.audit is not None:
            screen = AuditScreen(self.audit, self.autostart)
            self.audit_hint = screen.resume_hint
            self.push_screen(screen)
        elif self.mode == "scan":
            scan = ScanScreen(self.start_config, self.resume, self.prepare, self.autostart, self.trust_pickle)
            self.push_screen(scan)
        else:
            self.push_screen(SetupScreen(self.start_config))

    # ---- navigation the screens ask for (messages.py)
    def on_start_scan(self, message: StartScan) -> None:
        self.push_screen(ScanScreen(message.config))

    def on_show_results(self, message: ShowResults) -> None:
        self.push_screen(ResultsScreen(message.report))

    def on_new_scan(self, message: NewScan) -> None:
        config = self.start_config
        for screen in self.screen_stack:
            if isinstance(screen, ScanScreen) and screen.config is not None:
                config = screen.config
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.push_screen(SetupScreen(config))

    def on_scan_status(self, message: ScanStatus) -> None:
        self.runs[message.run_dir] = message.complete

    def on_load_config_file(self, message: LoadConfigFile) -> None:
        path = message.path
        try:
            config = load_config(path)
        except NCError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        if isinstance(self.screen, SetupScreen):
            self.switch_screen(SetupScreen(config))
        else:
            self.push_screen(SetupScreen(config))
        self.notify(f"loaded {path}")

    def running_scan(self) -> ScanScreen | AuditScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, ScanScreen | AuditScreen) and s.running), None)

    # ---- actions
    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        rows: list[tuple[str, str]] = []
        seen = set()
        for bindings in (self.screen.BINDINGS, self.BINDINGS):
            for b in bindings:
                if isinstance(b, Binding) and b.description and b.action not in seen:
                    seen.add(b.action)
                    rows.append((self.get_key_display(b), b.description))
        rows += [
            ("ctrl+p", "command palette: every action by name"),
            ("tab / shift+tab", "next / previous field"),
            ("↑ ↓", "move in tables"),
        ]
        self.push_screen(HelpScreen(rows))

    def action_quit_app(self) -> None:
        scan = self.running_scan()
        if scan is None:
            self.exit(0)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                scan.stop_and_wait()
                self.exit(0)

        hint = (
            scan.resume_hint if isinstance(scan, AuditScreen) else f"nc-tui scan --resume {scan.run_dir or 'RUN_DIR'}"
        )
        self.push_screen(
            Confirm(f"A scan is running. Stop it and quit? Finished labels are kept; `{hint}` continues it."), answered
        )

    def action_cancel_or_quit(self) -> None:
        scan = self.running_scan()
        if scan is not None and self.screen is scan:
            scan.action_cancel()
        else:
            self.action_quit_app()

    def _hang_up(self) -> None:
        scan = self.running_scan()
        if scan is not None:
            scan.stop.set()
        self.exit(0)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in getattr(screen, "BINDINGS", []):
            if isinstance(binding, Binding) and binding.description and binding.show:
                yield SystemCommand(
                    binding.description, f"key: {binding.key}", partial(screen.run_action, binding.action)
                )
        yield SystemCommand("Help", "list every key (F1)", self.action_help)
