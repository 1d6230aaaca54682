"""`nc-tui audit`: four small models scanned into their own run folders, one stopped mid-audit and then
resumed (the finished ones skipped), the summary files, and the exit codes of --fail-on."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import threading

import pytest

from nc_engine.audit import events as ae
from nc_engine.audit.run import run_audit
from nc_engine.audit.spec import load_spec
from nc_engine.audit.summary import read_summary
from nc_engine.run import events as ev
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.report import Report
from nc_tui import audit_console
from nc_tui.cli import main
from tests.audit_fixtures import MODELS, build_zoo, scan_section


class StopInSecondModel:
    """Records every event; stops the audit once the second model has finished its first search."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop, self.events, self.model = stop, [], -1

    def __call__(self, event: ev.Event) -> None:
        self.events.append(event)
        if isinstance(event, ae.ModelStarted):
            self.model = event.index
        if isinstance(event, ev.TrialFinished) and self.model == 1:
            self.stop.set()


@pytest.fixture(scope="module")
def audited(tmp_path_factory, demo_backdoored, demo_clean):
    """The zoo audited twice: stopped during b_clean, then run again to the end."""
    spec = load_spec(build_zoo(tmp_path_factory.mktemp("audit"), demo_backdoored, demo_clean))
    stop = threading.Event()
    first = StopInSecondModel(stop)
    stopped = run_audit(spec, first, stop)
    stopped_summary = read_summary(spec.out)
    stopped_summary["report_complete"] = Report.read(stopped.rows[1].run_folder).complete
    second: list[ev.Event] = []
    finished = run_audit(spec, second.append)
    return spec, stopped, stopped_summary, first.events, finished, second


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_a_stopped_audit_writes_its_summary_and_leaves_the_scan_resumable(audited):
    spec, stopped, summary, events, _, _ = audited
    assert [r.model for r in stopped.rows] == list(MODELS)
    assert [r.verdict for r in stopped.rows] == ["backdoored", "unfinished", "not run", "not run"]
    assert not stopped.complete and summary["complete"] is False
    assert [m["verdict"] for m in summary["models"]] == ["backdoored", "unfinished", "not run", "not run"]
    assert [e.name for e in of(events, ae.ModelStarted)] == ["a_backdoored", "b_clean"]  # none started after the stop
    unfinished = RunFolder(stopped.rows[1].run_folder)
    assert unfinished.path.parent == spec.out / "b_clean" and unfinished.is_resumable()
    assert summary["report_complete"] is False


def test_the_rerun_skips_finished_models_and_resumes_the_stopped_one(audited):
    _, stopped, _, _, finished, events = audited
    started = of(events, ae.ModelStarted)
    done = of(events, ae.ModelFinished)
    assert [e.skipped for e in done] == [True, False, False, False]
    assert started[0].resume == "" and started[1].resume == stopped.rows[1].run_folder
    scans = of(events, ev.ScanStarted)
    assert len(scans) == 2  # b_clean (resumed) and c_dropout; a_backdoored was skipped, d_broken never loaded
    assert scans[0].run_dir == stopped.rows[1].run_folder and scans[0].resumed_trials >= 1
    assert finished.rows[0].run_folder == stopped.rows[0].run_folder
    assert of(events, ae.AuditFinished)[0].complete and finished.complete


def test_verdicts_and_the_summary_files(audited, demo_backdoored):
    spec, _, _, _, finished, _ = audited
    rows = {r.model: r for r in finished.rows}
    assert rows["a_backdoored"].verdict == "backdoored" and rows["a_backdoored"].flagged == [demo_backdoored.target]
    assert rows["b_clean"].verdict == "clean" and rows["b_clean"].flagged == []
    assert rows["c_dropout"].verdict == "inconclusive"
    assert "differ between two identical forward passes" in rows["c_dropout"].reasons[0]
    assert rows["d_broken"].verdict == "error" and "d_broken.pt" in rows["d_broken"].reasons[0]
    for name in MODELS[:3]:  # each scanned model's run folder sits in its own folder and says the same
        report = Report.read(rows[name].run_folder)
        assert RunFolder(rows[name].run_folder).path.parent == spec.out / name
        assert report.verdict == rows[name].verdict and report.info.seconds == pytest.approx(rows[name].seconds)
    with open(spec.out / "audit.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["model", "config", "verdict", "flagged", "reasons", "accuracy", "seconds", "run_folder"]
    assert [(t["model"], t["verdict"], t["flagged"]) for t in table] == [
        ("a_backdoored", "backdoored", str(demo_backdoored.target)),
        ("b_clean", "clean", ""),
        ("c_dropout", "inconclusive", ""),
        ("d_broken", "error", ""),
    ]
    assert float(table[1]["accuracy"]) > 0.9 and table[0]["config"].endswith("a_backdoored.pt")
    data = json.loads((spec.out / "audit.json").read_text())
    assert data["complete"] is True and data["spec"] == str(spec.path)
    assert data["models"][0]["flagged"] == [demo_backdoored.target] and data["models"][0]["run_folder"]
    assert not list(spec.out.glob(".*.tmp"))  # written atomically: no temporary file left
    page = (spec.out / "audit.html").read_text()  # one page for the zoo, linking each model's own page
    assert "4 models: 1 backdoored, 1 clean, 1 error, 1 inconclusive" in page
    links = re.findall(r'<a href="([^"]+)">report</a>', page)
    assert len(links) == 3 and all((spec.out / link).is_file() for link in links)
    assert f"BACKDOORED: label {demo_backdoored.target}" in (spec.out / links[0]).read_text()


def test_fail_on_exit_codes_over_all_models(audited, capsys):
    spec = str(audited[0].path)
    assert main(["audit", spec, "--headless"]) == 2  # d_broken could not be scanned
    out = capsys.readouterr().out
    assert "[1/4] a_backdoored  BACKDOORED flagged 8" in out and "(finished earlier)" in out
    assert "d_broken  ERROR" in out and "run folder" in out  # the summary table follows the model lines
    assert main(["audit", spec, "--headless", "--fail-on", "backdoored"]) == 3
    assert main(["audit", spec, "--headless", "--fail-on", "inconclusive"]) == 4
    assert main(["audit", spec, "--headless", "--fail-on", "inconclusive,backdoored"]) == 3


def test_configs_spec_exit_zero_and_sigterm_leaves_a_resumable_audit(
    tmp_path, demo_backdoored, demo_clean, monkeypatch, capsys
):
    zoo = tmp_path / "zoo"
    build_zoo(zoo, demo_backdoored, demo_clean)
    for name in ("a_backdoored", "c_dropout"):
        (zoo / f"{name}.toml").write_text(
            f'[model]\nformat = "torchscript"\npath = "models/{name}.pt"\nnum_classes = 10\n'
            'input_shape = [1, 28, 28]\nmean = [0.5]\nstd = [0.5]\n[data]\npath = "data.npz"\n' + scan_section()
        )
    spec = zoo / "configs.toml"
    spec.write_text('configs = ["c_dropout.toml"]\n')
    assert main(["audit", str(spec), "--headless", "--out", str(tmp_path / "out")]) == 0
    assert main(["audit", str(spec), "--headless", "--out", str(tmp_path / "out"), "--fail-on", "inconclusive"]) == 4
    capsys.readouterr()
    spec.write_text('configs = ["a_backdoored.toml", "c_dropout.toml"]\n')
    original = audit_console.AuditProgress.on_scan_started

    def terminate_once_started(self, e):  # SIGTERM as a scheduler would send it, mid-scan
        original(self, e)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(audit_console.AuditProgress, "on_scan_started", terminate_once_started)
    assert main(["audit", str(spec), "--headless"]) == 143
    out = capsys.readouterr().out
    assert "interrupted; continue with: nc-tui audit" in out
    summary = read_summary(zoo / "configs-runs")
    assert [m["verdict"] for m in summary["models"]] == ["unfinished", "not run"]
    assert RunFolder(summary["models"][0]["run_folder"]).is_resumable()


def test_a_model_file_named_with_a_newline_is_one_error_row_and_the_rest_scan(tmp_path):
    """Issue 27 item 7: one file with a newline in its name refused the whole audit before any scan."""
    from tests.tiny_scan import write_tiny

    write_tiny(tmp_path)
    (tmp_path / "zoo").mkdir()
    (tmp_path / "m.pt").rename(tmp_path / "zoo" / "good.pt")
    (tmp_path / "zoo" / "bad\nname.pt").write_bytes((tmp_path / "zoo" / "good.pt").read_bytes())
    shared = (tmp_path / "c.toml").read_text().replace('path = "m.pt"\n', "").split("[output]")[0]
    (tmp_path / "audit.toml").write_text('models = "zoo"\n' + shared)
    spec = load_spec(tmp_path / "audit.toml")
    result = run_audit(spec)
    verdicts = {row.model: (row.verdict, row.reasons) for row in result.rows}
    assert verdicts["bad_name"][0] == "error" and "control characters" in verdicts["bad_name"][1][0]
    assert verdicts["good"][0] in ("clean", "backdoored", "inconclusive") and result.complete
