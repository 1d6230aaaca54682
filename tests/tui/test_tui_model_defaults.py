"""The set-up form with a model that records its own preprocessing (timm here): mean, std and input shape left
out of the config stay empty in the form, F2 shows the model's own values, and a scan started from the form
runs with them (not with the form's fallbacks)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from textual.widgets import Input, Select, Static

from nc_engine import load_config
from nc_engine.config.settings import DATA_FORMATS, MODEL_FORMATS
from nc_tui.app import NCApp
from nc_tui.screens.results import ResultsScreen
from nc_tui.screens.scan import ScanScreen
from tests.conftest import require_module
from tests.tui.test_tui import wait_for

OWN = {"mean": "0.5, 0.5, 0.5", "std": "0.5, 0.5, 0.5", "input-shape": "3, 160, 160"}  # test_resnet's


def timm_config(tmp_path: Path) -> Path:
    timm = require_module("timm")
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet", pretrained=False, num_classes=3).state_dict(), tmp_path / "m.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (90, 16, 16, 3), dtype=np.uint8), y=np.arange(90) % 3)
    (tmp_path / "scan.toml").write_text(
        '[model]\nformat = "timm"\narchitecture = "test_resnet"\npath = "m.pt"\n'
        '[data]\nformat = "npz"\npath = "d.npz"\n'
        "[scan]\nlabels = [0, 1]\nsamples = 32\nasr_samples = 32\nbatch_size = 32\nmax_steps = 1\n"
        f'[output]\ndir = "{tmp_path / "runs"}"\n'
    )
    return tmp_path / "scan.toml"


@pytest.mark.asyncio
async def test_form_shows_and_scans_with_the_models_own_preprocessing(tmp_path):
    app = NCApp(config=load_config(timm_config(tmp_path)), mode="setup")
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.screen
        formats = screen.query_one("#model-format", Select)
        assert {"keras", "timm"} <= {v for _, v in formats._options} and set(MODEL_FORMATS) >= {"keras"}
        assert "hf" in {v for _, v in screen.query_one("#data-format", Select)._options} and "hf" in DATA_FORMATS
        for key in OWN:
            box = screen.query_one(f"#model-{key}", Input)
            assert box.value == "" and "the model's own" in box.placeholder
        await pilot.press("f2")
        result = screen.query_one("#check-result", Static)
        await wait_for(pilot, lambda: "clean accuracy" in str(result.render()), timeout=120)
        assert "the model's own: input shape c,h,w 3, 160, 160" in str(result.render())
        for key, value in OWN.items():
            assert screen.query_one(f"#model-{key}", Input).placeholder == f"{value} (the model's own)"
        await pilot.press("f5")
        # a one-step scan of two labels can pass through the scan screen between two polls
        await wait_for(pilot, lambda: isinstance(app.screen, ScanScreen | ResultsScreen))
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen), timeout=240)
        run = Path(app.screen.report.run_dir)
    recorded = load_config(run / "config.toml").model  # what the scan ran with
    assert (recorded.mean, recorded.std, recorded.input_shape) == ([0.5] * 3, [0.5] * 3, [3, 160, 160])


@pytest.mark.asyncio
async def test_empty_preprocessing_is_refused_for_a_format_without_its_own(tmp_path):
    cfg = load_config(timm_config(tmp_path))
    app = NCApp(config=cfg, mode="setup")
    async with app.run_test(size=(100, 40)) as pilot:
        app.screen.query_one("#model-format", Select).value = "torchscript"
        await pilot.pause()
        await pilot.press("f5")
        await pilot.pause()
        text = str(app.screen.query_one("#check-result", Static).render())
        assert "Input shape C,H,W: required with model format torchscript" in text
        assert not (tmp_path / "runs").exists()
