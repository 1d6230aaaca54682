"""The audit spec: both ways of naming models, and every mistake as one line naming the spec (no scans)."""

from __future__ import annotations

import pytest

from nc_engine.audit.spec import default_out, load_spec
from nc_engine.errors import ConfigError, NCError
from nc_tui.cli import audit_exit_code, main

SHARED = '[model]\nnum_classes = 10\ninput_shape = [1, 28, 28]\n[data]\npath = "data.npz"\n'
CONFIG = '[model]\npath = "{model}"\nnum_classes = 10\ninput_shape = [1, 28, 28]\n[data]\npath = "d.npz"\n'


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_configs_are_relative_to_the_spec_and_models_get_unique_folder_names(tmp_path):
    write(tmp_path / "a" / "config.toml", CONFIG.format(model="net.pt"))
    write(tmp_path / "b" / "config.toml", CONFIG.format(model="net.pt"))
    write(tmp_path / "c.toml", CONFIG.format(model="other.pt"))
    spec = load_spec(write(tmp_path / "zoo.toml", 'configs = ["a/config.toml", "b/config.toml", "c.toml"]\n'))
    assert [m.name for m in spec.models] == ["a_config", "b_config", "other"]
    assert spec.models[0].source == str(tmp_path / "a" / "config.toml")
    assert spec.out == tmp_path / "zoo-runs" == default_out(tmp_path / "zoo.toml")
    assert spec.model_dir(spec.models[2]) == tmp_path / "zoo-runs" / "other"
    assert load_spec(tmp_path / "zoo.toml", out=tmp_path / "elsewhere").out == tmp_path / "elsewhere"


def test_models_from_a_folder_a_glob_and_a_list_share_model_and_data(tmp_path):
    for name in ("m1.pt", "m2.onnx", "README.md", ".hidden.pt", "sub/m3.pt"):
        write(tmp_path / "zoo" / name, "x")
    spec = load_spec(write(tmp_path / "s.toml", 'models = "zoo"\n' + SHARED + '[scan]\npreset = "fast"\n'))
    assert [m.name for m in spec.models] == ["m1", "m2"]  # a folder's model files only
    cfg = spec.models[0].config
    assert cfg.model.path == str(tmp_path / "zoo" / "m1.pt") and cfg.scan.preset == "fast"
    assert cfg.resolve_path(cfg.data.path) == tmp_path / "data.npz"  # relative to the spec
    spec = load_spec(write(tmp_path / "g.toml", 'models = ["zoo/*.pt", "zoo/sub/m3.pt", "zoo/m1.pt"]\n' + SHARED))
    assert [m.name for m in spec.models] == ["m1", "m3"]  # a file named twice is scanned once


@pytest.mark.parametrize(
    "text, message",
    [
        ('configs = ["missing.toml"]\n', "configs entry 'missing.toml': "),
        ("configs = []\n", "`configs` must be a non-empty string or list of strings"),
        ('model_files = "zoo"\n', "unknown key 'model_files'"),
        ('configs = ["c.toml"]\nmodels = "zoo"\n', "expected exactly one of `configs`"),
        ('[compute]\nbackend = "ray"\n', "expected exactly one of `configs`"),
        ('configs = ["c.toml"]\n[compute]\nbackend = "dask"\n', "[compute].backend must be one of local, ray"),
        ('configs = ["c.toml"]\n[compute]\nworkers = 4\n', "unknown key [compute].workers"),
        ('configs = ["c.toml"]\n[compute]\ngpus = -1\n', "[compute].gpus must be a number in [0, 1024]"),
        ('configs = ["c.toml"]\n[scan]\npreset = "fast"\n', "[scan] belongs in each scan config"),
        ('models = "empty"\n' + SHARED, "models entry 'empty': no model files"),
        ('models = "zoo/*.pth"\n' + SHARED, "models entry 'zoo/*.pth': no model files"),
        ('models = "nowhere"\n' + SHARED, "models entry 'nowhere': "),
        ('models = "zoo"\n[data]\npath = "d.npz"\n', "`models` needs the [model] and [data] sections"),
        ('models = "zoo"\n' + SHARED.replace("[model]\n", '[model]\npath = "x.pt"\n'), "[model].path is set by"),
        ('models = "zoo"\n' + SHARED.replace("num_classes", "classes"), "unknown key [model].classes"),
        ('configs = ["bad.toml"]\n', "bad.toml: unknown key [scan].steps"),
        ('configs = "c.toml\n', "invalid TOML"),
    ],
)
def test_spec_mistakes_are_one_line(tmp_path, text, message):
    write(tmp_path / "c.toml", CONFIG.format(model="m.pt"))
    write(tmp_path / "bad.toml", CONFIG.format(model="m.pt") + "[scan]\nsteps = 3\n")
    write(tmp_path / "zoo" / "m.pt", "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as err:
        load_spec(write(tmp_path / "spec.toml", text))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, NCError)


def test_cli_spec_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "nope.toml"), "--headless"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'nope.toml'}: audit spec not found\n"
    assert main(["audit", str(write(tmp_path / "s.toml", 'models = "none/*.pt"\n' + SHARED)), "--headless"]) == 2
    assert "no model files" in capsys.readouterr().err
    assert not (tmp_path / "s-runs").exists()  # nothing written before the spec is sound


def test_exit_codes_over_all_models():
    verdicts = ["clean", "backdoored", "inconclusive", "error"]
    assert audit_exit_code(["clean", "clean"], frozenset()) == 0
    assert audit_exit_code(["clean", "backdoored"], frozenset()) == 0
    assert audit_exit_code(verdicts, frozenset({"backdoored", "inconclusive"})) == 3
    assert audit_exit_code(verdicts, frozenset({"inconclusive"})) == 4
    assert audit_exit_code(verdicts, frozenset()) == 2  # a model that could not be scanned fails the audit
    assert audit_exit_code(["clean", "inconclusive"], frozenset({"backdoored"})) == 0


def test_the_sample_spec_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "sample_configs" / "audit" / "zoo.toml"
    spec = load_spec(path)
    assert [m.name for m in spec.models] == ["demo_model", "model"] and spec.compute.backend == "local"
    assert spec.out == path.parent / "zoo-runs"


def test_every_model_folder_stays_inside_the_audit_output(tmp_path):
    """Issue 27 item 7: two same-stem models outside the spec's folder got folders named from their absolute
    paths, and a model named `..` wrote beside the output."""
    for sub in ("one", "two"):
        write(tmp_path / "elsewhere" / sub / "net.pt", "x")
    write(tmp_path / "hf" / "config.json", "{}")
    models = f'models = ["{tmp_path}/elsewhere/one/net.pt", "{tmp_path}/elsewhere/two/net.pt"]\n'
    spec = load_spec(write(tmp_path / "specs" / "s.toml", models + SHARED))
    assert [m.name for m in spec.models] == ["elsewhere_one_net", "elsewhere_two_net"]
    hf = '[model]\nformat = "huggingface"\nnum_classes = 3\ninput_shape = [3, 8, 8]\n[data]\npath = "d.npz"\n'
    spec2 = load_spec(write(tmp_path / "hf" / "sub" / "s.toml", 'models = ["..", "../../hf"]\n' + hf))
    for s in (spec, spec2):
        for m in s.models:
            assert s.model_dir(m).parent == s.out and m.name not in ("", ".", ".."), m.name


def test_a_model_file_that_cannot_be_configured_is_its_own_error_row(tmp_path):
    write(tmp_path / "zoo" / "bad\nname.pt", "x")
    write(tmp_path / "zoo" / "good.pt", "x")
    spec = load_spec(write(tmp_path / "s.toml", 'models = "zoo"\n' + SHARED))
    assert [bool(m.problem) for m in spec.models] == [True, False]
    assert "control characters" in spec.models[0].problem and "\n" not in spec.models[0].name
