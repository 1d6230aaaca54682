"""Every sample config parses (its files need not exist), and each format has an example."""

from pathlib import Path

import pytest

from nc_engine.config.settings import DATA_FORMATS, MODEL_FORMATS, config_to_toml, load_config

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "sample_configs").glob("*.toml"))


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_sample_config_parses_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    again = tmp_path / "config.toml"
    again.write_text(config_to_toml(cfg))
    assert load_config(again).model.format == cfg.model.format


def test_one_example_per_model_and_data_format():
    configs = [load_config(p) for p in SAMPLES]
    assert {c.model.format for c in configs} == set(MODEL_FORMATS)
    assert {c.data.format for c in configs} == set(DATA_FORMATS)
