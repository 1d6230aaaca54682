"""Messages: from the engine's worker thread to the scan screen, and from the screens to the app.

Screens never call the app by method name: they post one of the requests below, which bubble up to
NCApp's handlers (`on_start_scan`, ...), so the dependency is visible in the imports.
"""

from __future__ import annotations

from textual.message import Message

from nc_engine.config.settings import Config
from nc_engine.run import events as ev
from nc_engine.verdict.report import Report


class EngineEvent(Message):
    """Any engine event but a step: label finished, warnings, start and end. Never coalesced. Steps send
    no message at all: the worker updates the ScanState and the scan screen's timer draws the latest."""

    def __init__(self, event: ev.Event) -> None:
        super().__init__()
        self.event = event


class ScanEnded(Message):
    """The worker returned: `report` is the engine's report, or `error` says why it failed."""

    def __init__(self, report: Report | None, error: str | None = None) -> None:
        super().__init__()
        self.report = report
        self.error = error


class ScanStatus(Message):
    """A scan screen's run folder and whether its scan finished, for the lines printed on exit."""

    def __init__(self, run_dir: str, complete: bool) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.complete = complete


class StartScan(Message):
    """Run a scan of `config` on a new scan screen."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config


class ShowResults(Message):
    """Open the results screen of a finished scan."""

    def __init__(self, report: Report) -> None:
        super().__init__()
        self.report = report


class NewScan(Message):
    """Back to the set-up form, filled from the last scan's config."""


class LoadConfigFile(Message):
    """Fill the set-up form from a TOML config file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
