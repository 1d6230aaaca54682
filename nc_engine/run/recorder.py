"""The run folder's listener: writes what the event stream says as it happens.

It subscribes first, so a trial's files exist before any front end hears that the trial finished,
and a label's trigger images exist before the app is told to show them.
"""

from __future__ import annotations

from typing import IO

from nc_engine.run import events as ev
from nc_engine.run.runfolder import RunFolder, writing
from nc_engine.verdict.formatting import label_line, saved_line, table_lines, verdict_line
from nc_engine.verdict.html_page import write_page
from nc_engine.verdict.sentence import verdict_sentence


class RunRecorder:
    """events.jsonl, log.txt, trial and trigger files, and the report, from the scan's events."""

    def __init__(self, folder: RunFolder, header: list[str]) -> None:
        self.folder = folder
        self.header = header
        self.events = folder.events()
        self.log: IO[str] | None = None  # opened on the first line: a failed start leaves no empty log

    def __call__(self, event: ev.Event) -> None:
        ev.dispatch(self, event)  # files first: the line in events.jsonl says they are there
        with writing(self.folder.path, "the event log"):
            self.events.write(event.to_dict())

    def _log(self, *lines: str) -> None:
        if self.log is None:
            self.log = self.folder.log()
        with writing(self.folder.path, "the log"):
            self.log.write("".join(line + "\n" for line in lines))
            self.log.flush()

    def on_scan_started(self, e: ev.ScanStarted) -> None:
        self._log(*self.header)

    def on_trial_finished(self, e: ev.TrialFinished) -> None:
        assert e.mask is not None and e.pattern is not None  # a finished trial carries its trigger
        self.folder.save_trial(e.record, e.mask, e.pattern)
        self.folder.drop_inflight(e.key)

    def on_searches_saved(self, e: ev.SearchesSaved) -> None:
        if e.stopping:
            self._log(saved_line(e.searches))

    def on_label_finished(self, e: ev.LabelFinished) -> None:
        assert e.mask is not None and e.pattern is not None  # the kept trial's trigger
        self.folder.save_trigger(e.label, e.mask, e.pattern)
        self._log(label_line(e.label, e.name, e.l1_norm, e.asr, e.steps, e.converged))

    def on_detector_finished(self, e: ev.DetectorFinished) -> None:
        self._log(e.summary, *e.details)

    def on_scan_finished(self, e: ev.ScanFinished) -> None:
        report = e.report
        self.folder.write_report(report)
        if report.complete:
            write_page(report, self.folder)  # report.html: the page to hand on
        done = [*table_lines(report), verdict_line(report), verdict_sentence(report)]
        self._log(*done if report.complete else [f"stopped: {report.note}"])

    def close(self) -> None:
        self.events.close()
        if self.log is not None:
            try:
                self.log.close()
            except OSError:
                pass  # a full disk: the lines that could be written are there
