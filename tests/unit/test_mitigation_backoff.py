"""Unlearning keeps the user's accuracy limit (learning-rate back-off, rejection) and a mitigation never
overwrites an earlier one: fast, with the fine-tuning replaced by a stand-in whose damage depends on lr."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch

from nc_engine.mitigate.common import MitigationOptions
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.formatting import mitigation_lines

unlearn_mod = importlib.import_module("nc_engine.mitigate.unlearn")  # the package re-exports a function of that name


def fake_context() -> SimpleNamespace:
    x = torch.zeros(8, 1, 4, 4)
    return SimpleNamespace(
        x_train=x,
        y_train=torch.zeros(8, dtype=torch.long),
        x_eval=x,
        y_eval=torch.zeros(8, dtype=torch.long),
        labels=[3],
        model=object(),
    )


@pytest.fixture
def damage_by_lr(monkeypatch):
    """Clean accuracy 0.5 before; after fine-tuning at lr, 0.5 - drop(lr). Records the lrs tried and saves."""
    tried, saved = [], []

    def install(drop):
        monkeypatch.setattr(unlearn_mod, "clean_accuracy", lambda *a: 0.5)
        monkeypatch.setattr(
            unlearn_mod,
            "_fine_tune",
            lambda ctx, o, lr, emit: (tried.append(lr) or SimpleNamespace(lr=lr, net=None), 4),
        )
        monkeypatch.setattr(unlearn_mod, "evaluate", lambda m, ctx: {"accuracy": 0.5 - drop(m.lr), "asr": {3: 0.0}})
        monkeypatch.setattr(
            unlearn_mod,
            "save_repaired",
            lambda ctx, net, out: saved.append(out) or (out / "model.pt", out / "config.toml"),
        )
        return tried, saved

    return install


def test_learning_rate_backs_off_until_within_the_limit(damage_by_lr, tmp_path):
    tried, saved = damage_by_lr(lambda lr: 0.4 if lr > 1.5e-3 else 0.01)
    events = []
    result = unlearn_mod.unlearn(
        fake_context(), MitigationOptions(lr=4e-3, max_accuracy_drop=0.02), tmp_path, events.append
    )
    assert tried == [4e-3, 2e-3, 1e-3]
    assert result["accepted"] and result["lr"] == 1e-3 and saved == [tmp_path] and "model_path" in result
    assert [a["lr"] for a in result["attempts"]] == tried
    assert sum("trying" in getattr(e, "message", "") or "again" in getattr(e, "message", "") for e in events) == 2


def test_a_ruined_model_is_rejected_not_saved(damage_by_lr, tmp_path):
    tried, saved = damage_by_lr(lambda lr: 0.395)  # 49.5% -> 10.0%, whatever the learning rate
    result = unlearn_mod.unlearn(fake_context(), MitigationOptions(lr=4e-3), tmp_path, lambda e: None)
    assert len(tried) == 1 + unlearn_mod.LR_BACKOFFS and tried[-1] == 4e-3 / 8
    assert not result["accepted"] and saved == [] and "model_path" not in result
    report = {
        "method": "unlearn",
        "clean_accuracy": {"before": 0.5, "after": 0.105},
        "asr": {},
        "seconds": 1.0,
        **{k: v for k, v in result.items() if k != "after"},
    }
    lines = mitigation_lines(report)
    rejected = [line for line in lines if line.startswith("NOT REPAIRED")]
    assert len(rejected) == 1 and "39.5% points" in rejected[0] and "no repaired model saved" in rejected[0]
    assert not any(line.startswith("repaired model") for line in lines)


def test_mitigation_folders_are_never_reused(tmp_path):
    folder = RunFolder(tmp_path)
    first = folder.mitigation_dir("unlearn")
    (first / "report.json").write_text("{}")
    assert [folder.mitigation_dir("unlearn").name for _ in range(2)] == ["unlearn-2", "unlearn-3"]
    assert folder.mitigation_dir("prune").name == "prune"
    assert (first / "report.json").read_text() == "{}"
