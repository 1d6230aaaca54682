"""Keras models read natively (Keras 3 on the torch backend, no TensorFlow): a small BadNets CNN trained here
on MNIST, saved as .keras and legacy .h5, loads through a config with outputs equal to Keras' own, is scanned
and flagged, and unlearning and pruning write it back as .keras (pruned: the very model measured), the input
filter works on it; bad files and layers that cannot be profiled are one-line errors."""

from __future__ import annotations

import importlib.util
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nc_engine import run_scan
from nc_engine.config.settings import config_from_dict, load_config
from nc_engine.demo.training import PatchTrigger, poison
from nc_engine.errors import ModelError, NCError
from nc_engine.models.load import load_model
from tests.conftest import require_module, require_shared

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CPU = torch.device("cpu")
TINY = {"samples": 32, "asr_samples": 32, "batch_size": 32, "max_steps": 3, "labels": [0, 1, 2]}
TRIGGER, TARGET = PatchTrigger(top=23, left=23, size=4), 7


def keras_torch():
    """keras on its torch backend, imported the way the engine imports it."""
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("h5py") is None:
        require_module("keras")
        require_module("h5py")
    from nc_engine.models.keras import import_keras

    return import_keras(Path("<tests>"))


def mnist(n_train: int):
    with np.load(require_shared(SHARED / "mnist.npz")) as d:
        return d["x_train"][:n_train], d["y_train"][:n_train]


def train_cnn(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0):
    """A small Keras CNN with a final softmax, as Keras users build them, trained on x / 255."""
    keras = keras_torch()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(8, 3, strides=2, activation="relu"),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dropout(0.1),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[..., None] / 255.0, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def make_cfg(tmp_path, model, data, scan=None):
    table = {
        "model": {"format": "keras", **model},
        "data": data,
        "scan": {**TINY, **(scan or {})},
        "output": {"dir": str(tmp_path / "runs")},
    }
    return config_from_dict(table, source=str(tmp_path / "scan.toml"), base_dir=tmp_path)


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """A BadNets Keras CNN (4x4 white patch at (23, 23) -> 7, 10% poisoned, 6000 MNIST images, 2 epochs)
    saved as .keras and as legacy .h5, and 2000 MNIST test images."""
    folder = tmp_path_factory.mktemp("keras")
    x, y = mnist(6000)
    xp, yp = poison(x, y, TRIGGER, TARGET, rate=0.1, seed=0)
    started = time.perf_counter()
    model = train_cnn(xp, yp, epochs=2)
    print(f"keras badnets: trained in {time.perf_counter() - started:.1f}s")
    model.save(str(folder / "cnn.keras"))
    model.save(str(folder / "cnn.h5"))
    with np.load(SHARED / "mnist.npz") as d:
        np.savez(folder / "test.npz", x_test=d["x_test"][:2000], y_test=d["y_test"][:2000])
    return folder, model


@pytest.mark.parametrize("name", ["cnn.keras", "cnn.h5"])
def test_keras_model_loads_with_its_own_outputs_and_scans(keras_files, name):
    folder, keras_model = keras_files
    data = {"format": "npz", "path": "test.npz"}
    cfg = make_cfg(folder, {"path": name}, data)  # input_shape and num_classes from the model itself
    scan_model = load_model(cfg, CPU)
    assert scan_model.preprocessing["input_shape"] == [1, 28, 28] and scan_model.num_classes == 10
    assert not scan_model.log_probs and scan_model.net.takes_logits  # the final softmax taken off
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    expected = keras_model.predict(x.permute(0, 2, 3, 1).numpy(), verbose=0)
    with torch.no_grad():
        got = torch.softmax(scan_model(x), 1).numpy()
    assert np.abs(got - expected).max() < 1e-5
    as_given = load_model(make_cfg(folder, {"path": name, "outputs": "probabilities"}, data), CPU)
    with torch.no_grad():  # the model untouched: its probabilities, whose log the engine takes
        assert np.abs(torch.exp(as_given(x)).numpy() - expected).max() < 1e-5
    x.requires_grad_(True)  # real autograd through the Keras layers, down to the pixels
    scan_model(x)[:, 3].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    report = run_scan(cfg)
    assert report.complete and len(report.labels) == 3 and all(r.steps >= 1 for r in report.labels)
    assert load_config(Path(report.run_dir) / "config.toml").model.input_shape == [1, 28, 28]


def test_keras_files_that_cannot_load_are_one_line_errors(keras_files, tmp_path):
    folder, _ = keras_files
    keras = keras_torch()
    data = {"format": "npz", "path": str(folder / "test.npz")}
    inp = keras.Input((28, 28, 1))
    lam = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t * 2)(inp))))
    lam.save(str(tmp_path / "lambda.keras"))
    (tmp_path / "corrupt.keras").write_bytes((folder / "cnn.keras").read_bytes()[:300])
    with zipfile.ZipFile(tmp_path / "nometa.keras", "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("metadata.json", "{not json")
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "ts.pt"))
    (tmp_path / "ts.keras").write_bytes((tmp_path / "ts.pt").read_bytes())
    (tmp_path / "model.keras.pt").write_bytes((folder / "cnn.keras").read_bytes())
    cases = [
        ({"path": str(tmp_path / "lambda.keras")}, "holds Python code"),
        ({"path": str(tmp_path / "corrupt.keras")}, "not a Keras model file"),
        ({"path": str(tmp_path / "nometa.keras")}, "cannot load the Keras model"),
        ({"path": str(tmp_path / "missing.keras")}, "Keras model file not found"),
        ({"path": str(tmp_path / "ts.keras")}, "is a PyTorch file"),
        ({"path": str(tmp_path / "ts.pt")}, "expected a .keras file or a legacy .h5"),
        ({"path": str(folder / "cnn.keras"), "format": "torchscript"}, 'set [model].format = "keras"'),
        ({"path": str(folder / "cnn.h5"), "format": "torchscript"}, 'set [model].format = "keras"'),
        (
            {"path": str(tmp_path / "model.keras.pt"), "format": "torchvision", "architecture": "resnet18"},
            "it is a Keras model",
        ),
    ]
    for model, words in cases:
        with pytest.raises(NCError) as err:
            load_model(make_cfg(tmp_path, model, data), CPU)
        line = str(err.value)
        assert words in line and "\n" not in line, line
        assert model["path"] in line, line


def test_keras_imported_with_another_backend_is_named(keras_files, monkeypatch):
    folder, _ = keras_files
    keras = keras_torch()
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ModelError, match="already imported in this process with the 'jax' backend"):
        load_model(make_cfg(folder, {"path": "cnn.keras"}, {"format": "npz", "path": "test.npz"}), CPU)


@pytest.fixture(scope="module")
def backdoored_scan(keras_files):
    """A scan of the BadNets Keras model below the `fast` budget (all 10 labels)."""
    folder, _ = keras_files
    cfg = make_cfg(
        folder,
        {"path": "cnn.keras"},
        {"format": "npz", "path": "test.npz"},
        {"preset": "fast", "samples": 64, "asr_samples": 200, "batch_size": 32, "max_steps": 100, "labels": "all"},
    )
    started = time.perf_counter()
    report = run_scan(cfg)
    print(f"keras badnets: scanned in {time.perf_counter() - started:.1f}s")
    return folder, report


def test_badnets_keras_model_is_flagged(backdoored_scan):
    _, report = backdoored_scan
    assert report.info.clean_accuracy > 0.85
    assert report.verdict == "backdoored" and TARGET in report.flagged, report.flagged


def test_unlearning_a_keras_model_writes_a_keras_model(backdoored_scan):
    from nc_engine.mitigate import MitigationOptions, run_mitigation

    keras = keras_torch()
    folder, report = backdoored_scan
    result = run_mitigation(
        report.run_dir, "unlearn", MitigationOptions(samples=1500, max_accuracy_drop=0.05), lambda _e: None
    )
    saved = Path(result["model_path"])
    assert saved.suffix == ".keras" and result["accepted"]
    asr = result["asr"][str(TARGET)]
    assert asr["after"] < asr["before"] / 2, asr
    repaired = keras.saving.load_model(str(saved), safe_mode=True, compile=False)  # plain keras reads it
    assert repaired.layers[-1].activation.__name__ == "softmax"
    cfg = load_config(result["config_path"])  # and so does nc-tui, as a Keras model
    assert cfg.model.format == "keras"
    scan_model = load_model(cfg, CPU)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = torch.softmax(scan_model(x), 1).numpy()
    assert np.abs(got - repaired.predict(x.permute(0, 2, 3, 1).numpy(), verbose=0)).max() < 1e-5
    original = keras.saving.load_model(str(folder / "cnn.keras"), safe_mode=True, compile=False)
    assert not np.allclose(original.layers[-1].get_weights()[0], repaired.layers[-1].get_weights()[0])
    assert json.loads(Path(result["report_path"]).read_text())["model_path"] == str(saved)


def keras_files_last_dense(folder: Path) -> str:
    keras = keras_torch()
    return keras.saving.load_model(str(folder / "cnn.keras"), safe_mode=True, compile=False).layers[-1].name


def _real_asr(model, folder: Path) -> float:
    """The share of 1,000 MNIST test images (not of the target) the real patch sends to the target."""
    from nc_engine.demo.training import stamp_patch
    from nc_engine.detectors.neural_cleanse.asr import predict

    with np.load(folder / "test.npz") as d:
        x, y = d["x_test"][1000:], d["y_test"][1000:]
    stamped = torch.from_numpy(stamp_patch(x[y != TARGET], TRIGGER)).float().unsqueeze(1) / 255.0
    return float((predict(model, stamped) == TARGET).float().mean())


def test_pruning_a_keras_model_writes_the_pruned_model_as_keras(backdoored_scan):
    from nc_engine.mitigate import MitigationOptions, run_mitigation
    from nc_engine.mitigate.common import Probe, load_context
    from nc_engine.mitigate.prune import rank_units

    keras = keras_torch()
    folder, report = backdoored_scan
    last = keras_files_last_dense(folder)
    events = []
    result = run_mitigation(report.run_dir, "prune", MitigationOptions(samples=1500), events.append)
    assert result["layer"] == last and result["layer_units"] == 32  # the input of the last Dense
    assert any(f"pruning layer: input of {last} (32 units)" in getattr(e, "message", "") for e in events)
    units = result["pruned_units"]
    assert result["curve"][0]["units"] == 0 and len(units) >= 1 and len(set(units)) == len(units)
    asr = result["asr"][str(TARGET)]
    assert asr["after"] < asr["before"] - 0.05, asr
    assert result["clean_accuracy"]["before"] - result["clean_accuracy"]["after"] <= 0.03
    saved = Path(result["model_path"])
    assert saved.name == "model.keras"
    plain = keras.saving.load_model(str(saved), safe_mode=True, compile=False)  # plain keras reads it
    assert plain.layers[-1].activation.__name__ == "softmax"
    assert float(np.abs(plain.layers[-1].get_weights()[0][units]).sum()) == 0  # the units' outgoing weights
    # the file, loaded through its config, is the model that was measured: the scanned one, pruned in memory
    reloaded = load_model(load_config(result["config_path"]), CPU)
    pruned = load_model(load_config(Path(report.run_dir) / "config.toml"), CPU)
    before = _real_asr(pruned, folder)
    Probe(pruned, result["layer"]).silence(units)
    with np.load(folder / "test.npz") as d:
        x = torch.from_numpy(d["x_test"][:200]).float().unsqueeze(1) / 255.0
    with torch.no_grad():
        assert float((reloaded(x) - pruned(x)).abs().max()) < 1e-5
    after = _real_asr(reloaded, folder)
    print(
        f"keras prune: {len(units)} of 32 units, real-trigger ASR {before:.1%} -> {after:.1%}, reversed "
        f"{asr['before']:.1%} -> {asr['after']:.1%}, {result['seconds']:.1f}s"
    )
    # Like the torch model in the README's table, this narrow layer reaches the accuracy limit long before the
    # real trigger stops working (99.9% -> 98.5% here); it must still fall, and the units be the torch path's.
    assert before > 0.9 and after < before
    options = MitigationOptions(samples=1500)
    ctx = load_context(report.run_dir, options, lambda _m: None)
    half = len(ctx.x_train) // 2
    order = rank_units(Probe(ctx.model, options.layer), ctx, ctx.x_train[:half], ctx.y_train[:half])
    assert units == [int(u) for u in order[: len(units)]]  # the most excited units first


def test_filter_on_a_keras_model_flags_the_real_trigger(backdoored_scan, tmp_path):
    from PIL import Image

    from nc_engine.demo.training import stamp_patch
    from nc_engine.mitigate import MitigationOptions, filter_images, load_detector, run_mitigation

    folder, report = backdoored_scan
    result = run_mitigation(report.run_dir, "filter", MitigationOptions(samples=1500), lambda _e: None)
    assert result["layer"] == keras_files_last_dense(folder) and 0.0 < result["fpr"] < 0.12
    det, model, shape = load_detector(result["detector"])  # reloads the Keras model through the scan's config
    assert hasattr(model.net, "keras_model") and shape == [1, 28, 28]
    with np.load(folder / "test.npz") as d:
        x, y = d["x_test"][1000:1400], d["y_test"][1000:1400]
    clean = x[y != TARGET]
    stamped = stamp_patch(clean, TRIGGER)
    scores = det.scores(torch.from_numpy(np.concatenate([clean, stamped])).float().unsqueeze(1) / 255.0)
    clean_flagged = float((scores[: len(clean)] > det.threshold).float().mean())
    caught = float((scores[len(clean) :] > det.threshold).float().mean())
    print(f"keras filter: real-trigger inputs flagged {caught:.1%}, clean flagged {clean_flagged:.1%}")
    assert caught > 0.8 and clean_flagged < 0.15
    paths = []
    for i, img in enumerate([*clean[:3], *stamped[:3]]):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(img).save(paths[-1])
    verdicts = [triggered for _p, _s, triggered in filter_images(result["detector"], paths)]
    assert verdicts.count(True) >= 2 and verdicts[:3].count(False) >= 2


def _tiny_keras(tmp_path, name, build) -> Path:
    keras = keras_torch()
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    keras.Model(inp, build(keras.layers, inp)).save(str(tmp_path / name))
    return tmp_path / name


def test_keras_models_prune_and_filter_cannot_profile_are_one_line_errors(tmp_path):
    from nc_engine.errors import MitigationError
    from nc_engine.mitigate.common import Probe

    np.savez(tmp_path / "d.npz", x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.zeros(4, np.int64))
    data = {"format": "npz", "path": "d.npz"}
    no_dense = _tiny_keras(
        tmp_path, "conv.keras", lambda L, x: L.Softmax()(L.GlobalAveragePooling2D()(L.Conv2D(3, 3)(x)))
    )
    per_pixel = _tiny_keras(
        tmp_path,
        "pixel.keras",
        lambda L, x: L.Softmax()(L.GlobalAveragePooling2D()(L.Dense(3, name="px")(L.Conv2D(4, 3)(x)))),
    )
    x = torch.rand(5, 1, 8, 8)
    cases = [
        (no_dense, "", "the Keras model has no Dense layer to profile"),
        (per_pixel, "", "the input of px is (6, 6, 4) per image, not one vector of its 4 input units"),
        (per_pixel, "fc", "--layer 'fc' is not a Dense layer of the model (Dense layers: px)"),
    ]
    for path, layer, words in cases:
        model = load_model(make_cfg(tmp_path, {"path": path.name}, data), CPU)
        with pytest.raises(MitigationError) as err:
            Probe(model, layer).check_final(x)
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("head", ["Softmax", "Activation", "logits"])
def test_a_softmax_layer_is_taken_off_and_a_logits_model_left_as_it_is(tmp_path, head):
    from nc_engine.models.keras import load_keras

    keras = keras_torch()
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 5, 3))
    logits = keras.layers.Dense(4)(keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(inp)))
    out = {
        "Softmax": keras.layers.Softmax(),
        "Activation": keras.layers.Activation("softmax"),
        "logits": keras.layers.Identity(),
    }[head](logits)
    keras.Model(inp, out).save(str(tmp_path / "m.keras"))
    model = keras.saving.load_model(str(tmp_path / "m.keras"), safe_mode=True, compile=False)
    net, own = load_keras(tmp_path / "m.keras", "auto")
    assert own == {"input_shape": [3, 6, 5]} and net.takes_logits == (head != "logits")
    x = torch.rand(7, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = net(x)
        expected = model(x.permute(0, 2, 3, 1))
    got = torch.softmax(got, 1) if head != "logits" else got
    assert torch.allclose(got, expected, atol=1e-5)


def test_dense_layers_inside_a_nested_keras_model_are_profiled_by_path(tmp_path):
    from nc_engine.mitigate.common import Probe

    keras = keras_torch()
    np.savez(tmp_path / "d.npz", x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.zeros(4, np.int64))
    sub = keras.Sequential(
        [keras.Input((36,)), keras.layers.Dense(5, activation="relu", name="hid"), keras.layers.Dense(3, name="out")],
        name="sub",
    )
    path = _tiny_keras(tmp_path, "nested.keras", lambda L, x: sub(L.Flatten()(L.Conv2D(1, 3)(x))))
    model = load_model(make_cfg(tmp_path, {"path": path.name}, {"format": "npz", "path": "d.npz"}), CPU)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    probe = Probe(model)
    assert probe.name == "sub/out" and probe.units == 5 and probe.check_final(x)  # head(h) is the output
    with torch.no_grad():
        h = probe.activations(x)
        h[:, [1, 3]] = 0
        expected = probe.head(h)
        probe.silence([1, 3])
        assert torch.allclose(model(x), expected, atol=1e-6)  # silencing = those inputs at zero
    kernel = model.net.keras_model.get_layer("sub").get_layer("out").get_weights()[0]
    assert kernel.shape == (5, 3) and not kernel[[1, 3]].any() and kernel[[0, 2, 4]].any()
    assert Probe(model, "sub/hid").units == 36


@pytest.mark.parametrize(
    "activation",
    [
        {
            "module": "keras.datasets.mnist",
            "class_name": "function",
            "config": "load_data",
            "registered_name": "function",
        },
        {"module": "keras.utils", "class_name": "get_file", "config": {}, "registered_name": None},
        "keras.datasets.mnist.load_data",
    ],
)
def test_a_config_naming_a_keras_function_is_refused_before_it_runs(tmp_path, monkeypatch, activation):
    """Issue 28 item 5: safe_mode let an activation set to keras.datasets.mnist.load_data be called."""
    keras = keras_torch()
    calls: list[str] = []
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda *a, **k: calls.append("load_data"))
    path = _tiny_keras(
        tmp_path, "plain.keras", lambda layers, x: layers.Dense(3, activation="softmax")(layers.Flatten()(x))
    )
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(members["config.json"])
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["activation"] = activation
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "evil.keras", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    cfg = make_cfg(tmp_path, {"path": str(tmp_path / "evil.keras")}, {"format": "npz", "path": "d.npz"})
    with pytest.raises(NCError, match="not one of Keras' layers or activations") as err:
        load_model(cfg, CPU)(torch.zeros(1, 1, 8, 8))
    assert "\n" not in str(err.value) and calls == []
    plain = make_cfg(tmp_path, {"path": str(path)}, {"format": "npz", "path": "d.npz"})
    assert load_model(plain, CPU)(torch.zeros(1, 1, 8, 8)).shape == (1, 3)  # Keras' own parts still load
