"""Config: presets, and errors that name the key and the file."""

import pytest

from nc_engine.config.settings import PRESETS, config_to_toml, load_config
from nc_engine.errors import ConfigError
from nc_engine.verdict.outliers import DEFAULT_SPREAD_FLOOR, DEFAULT_THRESHOLD

BASE = """
[model]
format = "torchscript"
path = "m.pt"
num_classes = 10
input_shape = [1, 28, 28]
"""


def write(tmp_path, text):
    path = tmp_path / "scan.toml"
    path.write_text(text)
    return path


def test_defaults_come_from_the_default_preset(tmp_path):
    loaded = load_config(write(tmp_path, BASE))
    cfg = loaded.resolved()
    for key, value in PRESETS["default"].items():
        assert getattr(cfg.scan, key) == value
        assert getattr(loaded.scan, key) is None  # the loaded config still says "the preset's value"
    assert cfg.scan.lr == 0.1 and cfg.scan.betas == [0.5, 0.9] and cfg.scan.patience == 5
    assert cfg.scan.cost_down == pytest.approx(2.8284271247461903)


def test_reference_preset_restores_the_reference_budget_exactly(tmp_path):
    cfg = load_config(write(tmp_path, BASE + '[scan]\npreset = "reference"\n')).resolved()
    assert (cfg.scan.samples, cfg.scan.batch_size, cfg.scan.max_steps) == (1000, 32, 1000)
    assert cfg.scan.converge_window == 0  # no shortcut


def test_presets_order_their_budgets(tmp_path):
    budgets = {}
    for name in ("fast", "default", "thorough"):
        cfg = load_config(write(tmp_path, BASE + f'[scan]\npreset = "{name}"\n')).resolved()
        budgets[name] = cfg.scan.trials * cfg.scan.samples * cfg.scan.max_steps
    assert budgets["fast"] < budgets["default"] < budgets["thorough"]


def test_threshold_follows_the_statistic_unless_set(tmp_path):
    assert load_config(write(tmp_path, BASE)).detect.statistic == "log_l1"
    detect = load_config(write(tmp_path, BASE)).resolved().detect
    assert (detect.threshold, detect.spread_floor) == (DEFAULT_THRESHOLD["log_l1"], DEFAULT_SPREAD_FLOOR["log_l1"])
    detect = load_config(write(tmp_path, BASE + '[detect]\nstatistic = "l1"\n')).resolved().detect
    assert (detect.threshold, detect.spread_floor) == (2.0, 0.0)  # the paper's test, no floor
    assert load_config(write(tmp_path, BASE + "[detect]\nspread_floor = 0.3\n")).resolved().detect.spread_floor == 0.3
    text = BASE + '[detect]\nstatistic = "l1"\nthreshold = 2.5\n'
    assert load_config(write(tmp_path, text)).resolved().detect.threshold == 2.5


def test_explicit_budget_keys_win_over_the_preset(tmp_path):
    cfg = load_config(write(tmp_path, BASE + '[scan]\npreset = "reference"\nsamples = 200\n')).resolved()
    assert cfg.scan.samples == 200 and cfg.scan.max_steps == 1000


def test_paths_are_relative_to_the_config_file(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.resolve_path(cfg.model.path) == tmp_path / "m.pt"


@pytest.mark.parametrize(
    "extra, words",
    [
        ("[scan]\nsampels = 10\n", ["[scan].sampels", "unknown key", "samples"]),
        ('[scan]\ntrials = "two"\n', ["[scan].trials", "integer", "'two'"]),
        ("[scan]\nlr = true\n", ["[scan].lr", "number"]),
        ("[scann]\n", ["unknown section [scann]"]),
        ('[scan]\nstrategy = "fast"\n', ["[scan].strategy", "batched"]),
        ("[scan]\nlabels = [0, 12]\n", ["[scan].labels", "0..9", "12"]),
        ('[scan]\ndevice = "gpu"\n', ["[scan].device"]),
        ("[scan]\nbatch_size = 64\nsamples = 32\n", ["[scan].batch_size", "32"]),
        ('[detect]\nthreshold = "2"\n', ["[detect].threshold", "number"]),
    ],
)
def test_bad_values_name_key_and_file(tmp_path, extra, words):
    path = write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message


def test_pickle_is_refused_unless_trusted_by_name(tmp_path):
    text = BASE.replace('"torchscript"', '"pickle"')
    with pytest.raises(ConfigError, match="trust_pickle = true"):
        load_config(write(tmp_path, text))
    cfg = load_config(write(tmp_path, text.replace("[model]", "[model]\ntrust_pickle = true")))
    assert cfg.model.trust_pickle


def test_missing_file_folder_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[model\n"))


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE + "[scan]\nlabels = [1, 3]\n"))
    out = tmp_path / "sub"
    out.mkdir()
    (out / "config.toml").write_text(config_to_toml(cfg))
    again = load_config(out / "config.toml")
    assert again.resolve_path(again.model.path) == (tmp_path / "m.pt").resolve()
    assert again.scan.labels == [1, 3] and again.scan.samples == cfg.scan.samples


def test_sample_demo_config_is_the_packaged_one():
    from pathlib import Path

    from nc_engine.demo.build import demo_config_text

    sample = Path(__file__).resolve().parents[2] / "sample_configs" / "demo.toml"
    assert sample.read_text() == demo_config_text()
    assert load_config(sample).model.input_shape == [1, 28, 28]


def test_search_knobs_are_declared_once(tmp_path):
    """[scan] builds the schedule rules and search settings by name: the defaults are the reference's,
    and a key set in the file reaches the search."""
    from nc_engine.detectors.neural_cleanse.schedule import ScheduleRules

    cfg = load_config(write(tmp_path, BASE)).resolved()
    assert cfg.scan.schedule_rules() == ScheduleRules(converge_window=10, converge_tol=0.02)
    text = BASE + "[scan]\npatience = 7\nlr = 0.05\n"
    settings = load_config(write(tmp_path, text)).resolved().scan.search_settings()
    assert settings.rules.patience == 7 and settings.lr == 0.05
    default = PRESETS["default"]
    assert (settings.batch_size, settings.max_steps) == (default["batch_size"], default["max_steps"])
