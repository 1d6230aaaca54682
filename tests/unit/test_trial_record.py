"""The trial record: one frozen shape from the search's event to the trial file, the resume and the report."""

import dataclasses
import json

import numpy as np
import pytest

from nc_engine.errors import RunFolderError
from nc_engine.run import events as ev
from nc_engine.run.runfolder import RunFolder
from nc_engine.run.trial import TRIAL_KEYS, TrialRecord, problem
from nc_engine.verdict.report import Report, build_report
from nc_engine.verdict.rows import ScanInfo

RECORD = TrialRecord(
    label=3, trial=1, seed=7, l1_norm=12.5, asr=0.98, steps=40, converged=True, stop_reason="converged", seconds=1.5
)


def test_a_record_is_frozen_and_keyed_by_label_trial_and_stage():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECORD.l1_norm = 1.0  # type: ignore[misc]
    assert RECORD.key == (3, 1, "trial")
    assert dataclasses.replace(RECORD, stage="screen").key == (3, 1, "screen")


def test_the_trial_file_keeps_its_keys_in_their_order_and_reads_back_equal(tmp_path):
    folder = RunFolder(tmp_path)
    (tmp_path / "trials").mkdir()
    folder.save_trial(RECORD, np.zeros((4, 4), np.float32), np.zeros((1, 4, 4), np.float32))
    written = json.loads((tmp_path / "trials" / "label_003_trial_1.json").read_text())
    assert list(written) == [*TRIAL_KEYS, "stage"]
    assert folder.trials([1, 4, 4]) == [RECORD]


def test_a_trial_file_from_before_stages_is_a_full_search():
    old = {k: v for k, v in RECORD.to_dict().items() if k != "stage"}
    assert problem(old) is None
    assert TrialRecord.from_dict(old) == RECORD


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"stage": "../../x"}, "stage"),
        ({"steps": "40"}, "steps"),
        ({"converged": 1}, "converged"),
        ({"l1_norm": None}, "l1_norm"),
        ({"seconds": None}, "seconds"),
    ],
)
def test_a_trial_file_of_the_wrong_shape_is_named(change, named):
    assert named in problem({**RECORD.to_dict(), **change})


def test_the_event_carries_the_record_and_logs_the_flat_line_it_always_had():
    event = ev.TrialFinished(record=RECORD)
    assert (event.label, event.trial, event.stage, event.key) == (3, 1, "trial", RECORD.key)
    assert event.to_dict() == {"event": "trial_finished", **RECORD.to_dict()}


def test_events_are_built_by_keyword_only():
    with pytest.raises(TypeError):
        ev.ScanWarning("positional")  # type: ignore[misc]
    with pytest.raises(TypeError):
        ScanInfo(0.9)  # type: ignore[misc]


def _report() -> Report:
    return build_report(
        [
            RECORD,
            dataclasses.replace(RECORD, label=4, l1_norm=50.0),
            dataclasses.replace(RECORD, label=5, l1_norm=60.0),
        ],
        labels_planned=[3, 4, 5],
        threshold=1.11,
        statistic="log_l1",
        info=ScanInfo(class_names=[str(k) for k in range(6)]),
    )


def test_a_report_lists_the_records_and_reads_them_back():
    report = _report()
    assert report.row(3).trials == [RECORD]
    again = Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.row(3).trials == [RECORD]


def test_a_report_from_before_whole_records_still_reads():
    data = json.loads(json.dumps(_report().to_dict()))
    for row in data["labels"]:  # the seven keys such reports listed per trial
        row["trials"] = [{k: t[k] for k in ("trial", "seed", "l1_norm", "asr", "steps", "converged", "stop_reason")}
                         for t in row["trials"]]  # fmt: skip
    again = Report.from_dict(data)
    kept = again.row(3).trials[0]
    assert (kept.label, kept.stage, kept.l1_norm, kept.stop_reason) == (3, "trial", 12.5, "converged")


def test_a_report_trial_entry_of_the_wrong_type_is_one_line():
    data = json.loads(json.dumps(_report().to_dict()))
    data["labels"][0]["trials"][0]["l1_norm"] = "small"
    with pytest.raises(RunFolderError, match=r"trials\[0\].*l1_norm"):
        Report.from_dict(data, "report.json")


@pytest.mark.parametrize("row", [0, "x", None, [1, 2]])
def test_a_report_row_that_is_not_a_table_is_one_line(row):
    data = json.loads(json.dumps(_report().to_dict()))
    data["labels"][1] = row
    with pytest.raises(RunFolderError, match="not a report written by nc-tui"):
        Report.from_dict(data, "report.json")


def test_a_null_attack_rate_is_a_nan_one_and_still_a_record():
    assert problem({**RECORD.to_dict(), "asr": None}) is None
