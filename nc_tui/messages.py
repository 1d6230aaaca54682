"""Messages from the engine's worker thread to the app."""

from __future__ import annotations

from textual.message import Message

from nc_engine import events as ev


class EngineEvent(Message):
    """Any engine event but a step: label finished, warnings, start and end. Never coalesced."""

    def __init__(self, event: ev.Event) -> None:
        super().__init__()
        self.event = event


class StepTick(Message):
    """New step progress is in the ScanState. A newer tick supersedes a pending one, so a fast model
    cannot flood the UI: the state always holds every step, the screen only redraws the latest."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StepTick)


class ScanEnded(Message):
    """The worker returned: `report` is the engine's report, or `error` says why it failed."""

    def __init__(self, report: dict | None, error: str | None = None) -> None:
        super().__init__()
        self.report = report
        self.error = error
