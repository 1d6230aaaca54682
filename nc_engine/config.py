"""The scan configuration: TOML in, validated dataclasses out, resolved TOML back to the run folder.

Every key is typed; unknown keys and wrong types are errors that name the key and the file.
Budget keys left unset are filled from the chosen preset (`scan.preset`).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .outliers import DEFAULT_THRESHOLD, STATISTICS
from .schedule import ScheduleRules, SearchSettings

_RULES = ScheduleRules()  # the reference rules: the defaults of the [scan] keys of the same names

MODEL_FORMATS = ("torchscript", "exported", "state_dict", "torchvision", "pickle", "onnx")
DATA_FORMATS = ("npz", "npy", "imagefolder", "torchvision")
LAYOUTS = ("auto", "NHW", "NHWC", "NCHW")
RESIZE_MODES = ("bilinear", "nearest", "bicubic")
# torchvision.datasets classes nc-tui knows how to read labels from without decoding every image.
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN", "GTSRB", "STL10")
OUTPUT_KINDS = ("auto", "logits", "probabilities")
STRATEGIES = ("batched", "sequential")


@dataclass
class ModelConfig:
    format: str = "torchscript"
    path: str = "model.pt"
    architecture: str = ""
    architecture_args: dict = field(default_factory=dict)
    num_classes: int = 0  # 0 = infer from the model's test forward
    input_shape: list = field(default_factory=lambda: [3, 32, 32])
    mean: list = field(default_factory=lambda: [0.0])
    std: list = field(default_factory=lambda: [1.0])
    outputs: str = "auto"
    trust_pickle: bool = False


@dataclass
class DataConfig:
    format: str = "npz"
    path: str = "data.npz"
    split: str = "test"
    max_images: int = 0  # 0 = no cap
    layout: str = "auto"  # npz/npy array layout: auto, NHW, NHWC, NCHW
    labels_path: str = ""  # npy: the labels .npy ("" = beside `path`, x*.npy -> y*.npy)
    dataset: str = ""  # torchvision: a torchvision.datasets name; `path` is its root folder
    download: bool = False  # torchvision: let torchvision download the dataset into `path`
    resize: str = "bilinear"  # interpolation when images differ from [model].input_shape


@dataclass
class ScanConfig:
    preset: str = "default"
    labels: Any = "all"  # "all" or a list of ints
    # Budget: None means "take the preset's value"; `Config.resolved()` fills them in.
    trials: int | None = None
    samples: int | None = None
    asr_samples: int | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    # Optimisation rules: the reference values, declared once in ScheduleRules / SearchSettings.
    lr: float = SearchSettings.lr
    betas: list = field(default_factory=lambda: list(SearchSettings.betas))
    init_cost: float = _RULES.init_cost
    cost_up: float = _RULES.cost_up
    cost_down: float = _RULES.cost_down
    patience: int = _RULES.patience
    attack_success_threshold: float = _RULES.attack_success_threshold
    early_stop: bool = _RULES.early_stop
    early_stop_threshold: float = _RULES.early_stop_threshold
    early_stop_patience: int = _RULES.early_stop_patience
    # Work-saving shortcut (None = the preset's value): stop a label once its best L1 has improved by
    # less than `converge_tol` (relative) over the last `converge_window` steps, after lambda has gone
    # up at least once. 0 disables it.
    converge_window: int | None = None
    converge_tol: float | None = None
    seed: int = 0
    device: str = "auto"
    strategy: str = "batched"
    group_size: int = 0  # labels optimised together; 0 = choose from model and memory
    bf16: bool = SearchSettings.bf16  # CUDA only: bf16 autocast in the search
    channels_last: bool = SearchSettings.channels_last  # CUDA only

    def schedule_rules(self) -> ScheduleRules:
        """The lambda schedule's rules: every ScheduleRules field is the [scan] key of the same name."""
        return ScheduleRules(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ScheduleRules)})

    def search_settings(self) -> SearchSettings:
        """Search settings from a resolved [scan] (budget keys filled)."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(SearchSettings)
               if f.name not in ("rules", "betas") and hasattr(self, f.name)}
        return SearchSettings(self.schedule_rules(), betas=(self.betas[0], self.betas[1]), **own)


@dataclass
class DetectConfig:
    statistic: str = "log_l1"  # "log_l1" (MAD test on log L1, measured better) or "l1" (the paper's)
    threshold: float | None = None  # anomaly index above which a label is flagged; None = the statistic's
    min_clean_accuracy: float = 0.5


@dataclass
class OutputConfig:
    dir: str = "runs"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # Folder that relative paths in the config are relative to (the config file's folder).
    base_dir: Path = field(default_factory=Path.cwd)
    source: str = "<defaults>"

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def resolved(self) -> Config:
        """A copy with every "unset, take the preset's" value filled in (see `resolve`)."""
        return resolve(self)


# Budgets. "reference" is the authors' (1000 samples, batch 32, 1000 steps, no shortcut); the others
# are measured on the zoo in benchmarks/RESULTS.md: "default" is the cheapest that meets the detection
# targets there, "fast" trades some reliability for time, "thorough" spends more for stabler indices.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": dict(trials=1, samples=96, asr_samples=500, batch_size=32, max_steps=150,
                 converge_window=8, converge_tol=0.05),
    "default": dict(trials=1, samples=160, asr_samples=1000, batch_size=32, max_steps=300,
                    converge_window=10, converge_tol=0.02),
    "thorough": dict(trials=2, samples=320, asr_samples=1000, batch_size=32, max_steps=600,
                     converge_window=20, converge_tol=0.01),
    "reference": dict(trials=1, samples=1000, asr_samples=1000, batch_size=32, max_steps=1000,
                      converge_window=0, converge_tol=0.0),
}

_SECTIONS = {"model": ModelConfig, "data": DataConfig, "scan": ScanConfig,
             "detect": DetectConfig, "output": OutputConfig}


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "table"}.get(type(value), type(value).__name__)


def _check_type(section: str, key: str, value: Any, default: Any, annotation: str, source: str) -> Any:
    where = f"{source}: [{section}].{key}"
    if "float" in annotation:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {_type_name(value)} {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be finite, got {value!r}")
        return value
    if "int" in annotation and "Any" not in annotation:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_type_name(value)} {value!r}")
        return value
    expected = {"str": str, "bool": bool, "list": list, "dict": dict}.get(annotation)
    if expected is not None and not isinstance(value, expected):
        raise ConfigError(f"{where} must be a {_type_name(expected())}, got {_type_name(value)} {value!r}")
    return value


def _build_section(name: str, table: Any, source: str) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table, got {_type_name(table)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{source}: unknown key [{name}].{key} (known keys: {known})")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        values[key] = _check_type(name, key, value, default, str(f.type), source)
    return cls(**values)


def _validate(cfg: Config) -> None:
    src = cfg.source
    m, d, s = cfg.model, cfg.data, cfg.scan

    def bad(key: str, expected: str, got: Any) -> ConfigError:
        return ConfigError(f"{src}: {key} must be {expected}, got {got!r}")

    if m.format not in MODEL_FORMATS:
        raise bad("[model].format", "one of " + ", ".join(MODEL_FORMATS), m.format)
    if m.format == "pickle" and not m.trust_pickle:
        raise ConfigError(
            f"{src}: [model].format = \"pickle\" runs code from the model file when it loads; "
            "add trust_pickle = true to [model] if you trust it, or save the model as TorchScript or a state_dict")
    if m.format in ("state_dict", "torchvision") and not m.architecture:
        raise ConfigError(f"{src}: [model].architecture is required with format = \"{m.format}\" "
                          "(e.g. \"net.py:Net\" or \"resnet18\")")
    if m.num_classes == 1 or m.num_classes < 0:
        raise bad("[model].num_classes", "at least 2 (or 0 / absent: inferred from the model)", m.num_classes)
    if (len(m.input_shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                           for v in m.input_shape)):
        raise bad("[model].input_shape", "three positive integers [C, H, W]", m.input_shape)
    channels = m.input_shape[0]
    for key in ("mean", "std"):
        vals = getattr(m, key)
        if len(vals) not in (1, channels) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                     for v in vals):
            raise bad(f"[model].{key}", f"a list of 1 or {channels} numbers", vals)
    if any(v <= 0 for v in m.std):
        raise bad("[model].std", "positive numbers", m.std)
    if m.outputs not in OUTPUT_KINDS:
        raise bad("[model].outputs", "one of " + ", ".join(OUTPUT_KINDS), m.outputs)
    if d.format not in DATA_FORMATS:
        raise bad("[data].format", "one of " + ", ".join(DATA_FORMATS), d.format)
    if d.layout not in LAYOUTS:
        raise bad("[data].layout", "one of " + ", ".join(LAYOUTS), d.layout)
    if d.resize not in RESIZE_MODES:
        raise bad("[data].resize", "one of " + ", ".join(RESIZE_MODES), d.resize)
    if d.format == "torchvision" and d.dataset not in TORCHVISION_DATASETS:
        raise bad("[data].dataset", "one of " + ", ".join(TORCHVISION_DATASETS)
                  + " with format = \"torchvision\"", d.dataset)
    if d.max_images < 0:
        raise bad("[data].max_images", "0 (no cap) or a positive integer", d.max_images)
    if s.preset not in PRESETS:
        raise bad("[scan].preset", "one of " + ", ".join(PRESETS), s.preset)
    if s.labels != "all":
        if (not isinstance(s.labels, list) or not s.labels
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in s.labels)):
            raise bad("[scan].labels", "\"all\" or a non-empty list of integers", s.labels)
        if len(set(s.labels)) != len(s.labels):
            raise bad("[scan].labels", "labels without repeats", s.labels)
        if m.num_classes:  # else checked once the model has told us its number of classes
            check_labels(cfg)
    positive = dict(trials=s.trials, samples=s.samples, asr_samples=s.asr_samples,
                    batch_size=s.batch_size, max_steps=s.max_steps, patience=s.patience,
                    early_stop_patience=s.early_stop_patience)
    for key, value in positive.items():
        if value is not None and value < 1:
            raise bad(f"[scan].{key}", "a positive integer", value)
    if s.samples is not None and s.batch_size is not None and s.batch_size > s.samples:
        raise bad("[scan].batch_size", f"at most samples ({s.samples})", s.batch_size)
    if len(s.betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in s.betas):
        raise bad("[scan].betas", "two numbers in [0, 1)", s.betas)
    for key in ("lr", "cost_up", "cost_down"):
        if getattr(s, key) <= 0:
            raise bad(f"[scan].{key}", "a positive number", getattr(s, key))
    if s.init_cost < 0:
        raise bad("[scan].init_cost", "a non-negative number", s.init_cost)
    if not 0 < s.attack_success_threshold <= 1:
        raise bad("[scan].attack_success_threshold", "a number in (0, 1]", s.attack_success_threshold)
    if s.converge_window is not None and s.converge_window < 0:
        raise bad("[scan].converge_window", "0 (off) or a positive integer", s.converge_window)
    if s.strategy not in STRATEGIES:
        raise bad("[scan].strategy", "one of " + ", ".join(STRATEGIES), s.strategy)
    if s.group_size < 0:
        raise bad("[scan].group_size", "0 (automatic) or a positive integer", s.group_size)
    dev = s.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise bad("[scan].device", "auto, cpu, cuda or cuda:N", dev)
    if cfg.detect.statistic not in STATISTICS:
        raise bad("[detect].statistic", "one of " + ", ".join(STATISTICS), cfg.detect.statistic)
    if cfg.detect.threshold is not None and cfg.detect.threshold <= 0:
        raise bad("[detect].threshold", "a positive number", cfg.detect.threshold)


def check_labels(cfg: Config, inferred: bool = False) -> None:
    """[scan].labels must be classes of the model; called again once num_classes is inferred."""
    labels, n = cfg.scan.labels, cfg.model.num_classes
    if labels == "all":
        return
    out = [v for v in labels if not 0 <= v < n]
    if out:
        where = f" (num_classes = {n}, inferred from the model)" if inferred else ""
        raise ConfigError(f"{cfg.source}: [scan].labels must be labels in 0..{n - 1}{where}, got {out!r}")


def preset_values(scan: ScanConfig) -> dict[str, Any]:
    """The budget keys of `scan` as they will run: the user's value where set, else the preset's."""
    preset = PRESETS[scan.preset]
    return {key: preset[key] if getattr(scan, key) is None else getattr(scan, key) for key in preset}


def resolve(cfg: Config) -> Config:
    """The one place presets resolve: a copy of `cfg` with the budget keys the user left unset taken
    from the preset and the threshold from the statistic. The config itself keeps its Nones, so a form
    or a saved file still says "the preset's value"."""
    scan = dataclasses.replace(cfg.scan, **preset_values(cfg.scan))
    detect = cfg.detect
    if detect.threshold is None:
        detect = dataclasses.replace(detect, threshold=DEFAULT_THRESHOLD[detect.statistic])
    if scan.batch_size > scan.samples:
        raise ConfigError(f"{cfg.source}: [scan].batch_size ({scan.batch_size}) must be at most "
                          f"samples ({scan.samples})")
    return dataclasses.replace(cfg, scan=scan, detect=detect)


def config_from_dict(data: dict, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Build and validate a Config from a parsed TOML table."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a TOML table at the top level")
    sections = {}
    for name, table in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section [{name}] (known: {', '.join(_SECTIONS)})")
        sections[name] = _build_section(name, table, source)
    cfg = Config(**sections, base_dir=base_dir or Path.cwd(), source=source)
    _validate(cfg)
    resolve(cfg)  # raises when the resolved budget is inconsistent
    return cfg


def load_config(path: str | Path) -> Config:
    """Read a TOML config file; relative paths inside it are relative to its folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a TOML config file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected a TOML config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return config_from_dict(data, source=str(path), base_dir=path.resolve().parent)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


_PATH_KEYS = {("model", "path"), ("data", "path"), ("data", "labels_path")}


def config_to_toml(cfg: Config, absolute_paths: bool = True) -> str:
    """The resolved config as TOML; paths made absolute so the file works from the run folder."""
    lines = [f"# resolved from {cfg.source}"]
    for name in _SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"\n[{name}]")
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is None:
                continue
            if absolute_paths and value and (name, f.name) in _PATH_KEYS:
                value = str(cfg.resolve_path(value).resolve())
            if absolute_paths and name == "output" and f.name == "dir":
                value = str(cfg.resolve_path(value).resolve())
            if (absolute_paths and name == "model" and f.name == "architecture" and ".py:" in value):
                file, _, obj = value.rpartition(":")
                value = f"{cfg.resolve_path(file).resolve()}:{obj}"
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
