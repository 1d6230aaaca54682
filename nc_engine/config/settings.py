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

from nc_engine.detectors.neural_cleanse.schedule import ScheduleRules, SearchSettings
from nc_engine.errors import ConfigError
from nc_engine.files import parse_toml, regular_file_problem
from nc_engine.verdict.outliers import DEFAULT_SPREAD_FLOOR, DEFAULT_THRESHOLD, STATISTICS

_RULES = ScheduleRules()  # the reference rules: the defaults of the [scan] keys of the same names

MODEL_FORMATS = (
    "torchscript",
    "exported",
    "state_dict",
    "torchvision",
    "pickle",
    "onnx",
    "timm",
    "huggingface",
    "keras",
)
# Formats whose files record the model's own preprocessing: [model] mean, std and input_shape left out
# are taken from the model (timm's pretrained_cfg, Hugging Face's preprocessor config, a Keras input shape).
OWN_PREPROCESSING_FORMATS = ("timm", "huggingface", "keras")
PREPROCESSING_KEYS = ("input_shape", "mean", "std")
DATA_FORMATS = ("npz", "npy", "imagefolder", "torchvision", "parquet", "hf")
LAYOUTS = ("auto", "NHW", "NHWC", "NCHW")
RESIZE_MODES = ("bilinear", "nearest", "bicubic")
# torchvision.datasets classes nc-tui knows how to read labels from without decoding every image.
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN", "GTSRB", "STL10")
OUTPUT_KINDS = ("auto", "logits", "probabilities")
WEIGHT_FORMATS = ("auto", "torch", "safetensors")  # how a state_dict file is stored; auto = by extension
STRATEGIES = ("batched", "sequential")
SCREENING = ("auto", "on", "off")
BACKENDS = ("local", "ray")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    factory: Any = None,
    choices: tuple = (),
    range: tuple | None = None,
    note: str = "",
) -> Any:  # noqa: A002 (the key's allowed range)
    """A config key declared once: its default, a one-line doc, its choices or its allowed range
    (integers: (low, high); numbers: (low, high, low included, high included)), and what 0 means (`note`).
    Validation, the set-up form's choices and docs/config.md (nc_engine/config/docs.py) all read these."""
    meta = {"doc": doc, "choices": choices, "range": range, "note": note}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    format: str = setting(
        "torchscript",
        choices=MODEL_FORMATS,
        doc=(
            "`exported` is a `torch.export` .pt2; `state_dict` needs `architecture`; `torchvision` and `timm` need "
            "`architecture` = a model name; `pickle` needs `trust_pickle = true`; `huggingface` is a `save_pretrained` "
            "folder; `keras` a `.keras` or `.h5` file (see [Bring your own model](formats.md))"
        ),
    )
    path: str = setting("model.pt", doc="the model or checkpoint file (with `huggingface`, the folder)")
    architecture: str = setting(
        "",
        doc=(
            '`"file.py:Name"` (relative to the config) or `"package.module:Name"`, a class or factory; a torchvision '
            "or timm model name with those formats"
        ),
    )
    architecture_args: dict = setting(
        factory=dict,
        doc=(
            "keyword arguments for the architecture; with `torchvision`, `cifar_stem = true` makes a ResNet's conv1 "
            "3x3 stride 1 and drops its max-pool"
        ),
    )
    num_classes: int = setting(0, doc="outputs of the model", note="0 or absent = inferred from a test forward")
    input_shape: list = setting(
        factory=lambda: [3, 32, 32], doc=("the `[C, H, W]` input the model takes (C in 1..16, H and W in 1..4096)")
    )
    mean: list = setting(
        factory=lambda: [0.0],
        doc=(
            "normalisation applied after stamping (1 value or one per channel); with `timm`, `huggingface` and "
            "`keras` left out = the model's own, and so are `std` and `input_shape`"
        ),
    )
    std: list = setting(factory=lambda: [1.0], doc="normalisation's divisor, positive (as `mean`)")
    outputs: str = setting(
        "auto",
        choices=OUTPUT_KINDS,
        doc=("what the model returns; `probabilities` get their log taken before cross-entropy; `auto` detects it"),
    )
    trust_pickle: bool = setting(False, doc='allow `format = "pickle"`, which runs code from the model file')
    weights: str = setting(
        "auto",
        choices=WEIGHT_FORMATS,
        doc=(
            "how a `state_dict`/`torchvision` checkpoint is stored: `torch` (`torch.save`), `safetensors`, `auto` "
            "(by extension)"
        ),
    )


@dataclass
class DataConfig:
    format: str = setting(
        "npz",
        choices=DATA_FORMATS,
        doc=(
            "`npz`: arrays `x_<split>`/`y_<split>` or `x`/`y`; `npy`: `path` = the images .npy; `imagefolder`: class "
            "folders in a folder, `.tar`, `.tar.gz` or `.zip`; `torchvision`: `path` = the dataset's root; `parquet`: "
            "a file or a folder of them; `hf`: a `save_to_disk` folder"
        ),
    )
    path: str = setting("data.npz", doc="the data file or folder")
    split: str = setting("test", doc="which split to read where the data has several")
    max_images: int = setting(0, range=(0, 10**9), doc="draw samples from at most this many images", note="0 = no cap")
    layout: str = setting("auto", choices=LAYOUTS, doc="`npz`/`npy` image array layout (`auto`: guessed)")
    labels_path: str = setting(
        "", doc=("`npy`: the labels .npy (empty: `x*.npy` -> `y*.npy`, `*images*.npy` -> `*labels*.npy` beside `path`)")
    )
    dataset: str = setting("", doc=("`torchvision`: one of " + ", ".join(f"`{d}`" for d in TORCHVISION_DATASETS)))
    download: bool = setting(False, doc="`torchvision`: let torchvision download the dataset into `path`")
    resize: str = setting(
        "bilinear",
        choices=RESIZE_MODES,
        doc=("interpolation when images differ from `input_shape` (bilinear and bicubic antialiased)"),
    )
    image_column: str = setting("", doc="`parquet`, `hf`: the image column (empty: found by type and name)")
    label_column: str = setting(
        "", doc=("`parquet`, `hf`: the label column (empty: found by name, else the first integer or string one)")
    )


_PRESET = "the preset's"


@dataclass(frozen=True)
class Budget:
    """A [scan]'s budget as it runs: the user's value where set, else the preset's; never None."""

    trials: int
    samples: int
    asr_samples: int
    batch_size: int
    max_steps: int
    converge_window: int
    converge_tol: float


@dataclass
class ScanConfig:
    preset: str = setting(
        "default",
        choices=("fast", "default", "thorough", "reference"),
        doc=(
            "the budget: `fast`, `default`, `thorough` (measured on the zoo) or `reference` (the paper's: 1000 "
            "samples, batch 32, 1000 steps, no shortcut)"
        ),
    )
    labels: Any = setting("all", doc='`"all"` or a list of labels to reverse-engineer a trigger for')
    # Budget: None means "take the preset's value"; `Config.resolved()` fills them in.
    trials: int | None = setting(
        None,
        range=(1, 100),
        doc=("searches per label with different seeds; the one with the highest held-out ASR is kept"),
    )
    samples: int | None = setting(None, range=(1, 100_000), doc="optimisation samples")
    asr_samples: int | None = setting(None, range=(1, 100_000), doc="held-out samples the attack rate is measured on")
    batch_size: int | None = setting(None, range=(1, 4096), doc="mini-batch of the search")
    max_steps: int | None = setting(None, range=(1, 100_000), doc="step limit per search")
    # Optimisation rules: the reference values, declared once in ScheduleRules / SearchSettings.
    lr: float = setting(SearchSettings.lr, range=(0.0, 10.0, False, True), doc="Adam's learning rate")
    betas: list = setting(factory=lambda: list(SearchSettings.betas), doc="Adam's betas, two numbers in [0, 1)")
    init_cost: float = setting(_RULES.init_cost, range=(0.0, 1e6, True, True), doc="the L1 cost lambda once set")
    cost_up: float = setting(_RULES.cost_up, range=(1.0, 100.0, True, True), doc="lambda's factor up")
    cost_down: float = setting(_RULES.cost_down, range=(1.0, 100.0, True, True), doc="lambda's factor down")
    patience: int = setting(_RULES.patience, range=(1, 10_000), doc="steps before lambda moves")
    attack_success_threshold: float = setting(
        _RULES.attack_success_threshold, range=(0.0, 1.0, False, True), doc="the attack rate a trigger must reach"
    )
    early_stop: bool = setting(_RULES.early_stop, doc="stop a search that stopped improving")
    early_stop_threshold: float = setting(
        _RULES.early_stop_threshold,
        range=(0.0, 10.0, False, True),
        doc="relative improvement below which a step does not count",
    )
    early_stop_patience: int = setting(
        _RULES.early_stop_patience, range=(1, 10_000), doc="steps without improvement before an early stop"
    )
    # Work-saving shortcut (None = the preset's value): stop a label once its best L1 has improved by
    # less than `converge_tol` (relative) over the last `converge_window` steps, after lambda has gone
    # up at least once. 0 disables it.
    converge_window: int | None = setting(
        None,
        range=(0, 10_000),
        note="0 = off",
        doc=("shortcut: stop a label once its best L1 improved by less than `converge_tol` over this many steps"),
    )
    converge_tol: float | None = setting(None, range=(0.0, 1.0, True, False), doc="the shortcut's tolerance")
    seed: int = setting(0, range=(0, 2**32 - 1), doc="the seed of everything: same seed, same result")
    device: str = setting("auto", doc="`auto`, `cpu`, `cuda`, `cuda:N`")
    strategy: str = setting("batched", choices=STRATEGIES, doc="labels optimised together, or one at a time")
    group_size: int = setting(
        0,
        range=(0, 10_000),
        note="0 = automatic",
        doc="labels optimised together (chosen from the model and free memory)",
    )
    # Screen, then confirm (nc_engine/detectors/neural_cleanse/screening.py): every label at a cheap
    # budget (screen_steps steps over screen_samples samples), then the candidates and confirm_references
    # ordinary labels at the full one.
    screening: str = setting(
        "auto",
        choices=SCREENING,
        doc=(
            "screen, then confirm (see [Speed](speed.md#screen-then-confirm)); `auto`: for scans of at least "
            "`screen_min_labels` labels"
        ),
    )
    screen_min_labels: int = setting(16, range=(3, 100_000), doc="the fewest labels `auto` screens")
    # 48 steps over 32 samples (one update a step, no converge shortcut): chosen on the zoo's tuning half,
    # where a backdoor target led the screen from step 36 on and a rival label led it before step 32
    screen_steps: int = setting(48, range=(1, 100_000), doc="the screening pass's steps per label (all of them)")
    screen_samples: int = setting(32, range=(1, 100_000), doc="the screening pass's optimisation samples")
    confirm_margin: float = setting(
        0.5,
        range=(0.0, 100.0, True, True),
        doc=(
            "confirm every label whose screened anomaly index is within this of the threshold (and the 2 smallest "
            "triggers, and every label the screen found no trigger for)"
        ),
    )
    confirm_references: int = setting(
        3,
        range=(0, 1000),
        doc=(
            "ordinary labels nearest the screened median confirmed too, whose norms put the screened ones on the "
            "confirmed scale (as many again when the verdict hangs on that shift)"
        ),
    )
    bf16: bool = setting(SearchSettings.bf16, doc="CUDA only: bf16 autocast in the search")
    channels_last: bool = setting(SearchSettings.channels_last, doc="CUDA only: channels-last memory format")

    def schedule_rules(self) -> ScheduleRules:
        """The lambda schedule's rules: every ScheduleRules field is the [scan] key of the same name."""
        return ScheduleRules(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ScheduleRules)})

    def budget(self) -> Budget:
        """The budget keys as they will run (the same numbers a resolved config holds), typed as such."""
        return Budget(**preset_values(self))

    def search_settings(self) -> SearchSettings:
        """Search settings from a resolved [scan] (budget keys filled)."""
        own = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(SearchSettings)
            if f.name not in ("rules", "betas") and hasattr(self, f.name)
        }
        return SearchSettings(self.schedule_rules(), betas=(self.betas[0], self.betas[1]), **own)


@dataclass
class DetectConfig:
    statistic: str = setting(
        "log_l1",
        choices=STATISTICS,
        doc=("the MAD outlier test on log L1 (measured better), or `l1`: the paper's test on the L1 norms"),
    )
    threshold: float | None = setting(
        None,
        range=(0.0, 1000.0, False, True),
        doc=("anomaly index above which a label is flagged (absent: 1.11 with `log_l1`, 2.0 with `l1`)"),
    )
    spread_floor: float | None = setting(
        None,
        range=(0.0, 100.0, True, True),
        doc=(
            "the least spread the index divides by: (median - value) / max(MAD, floor) (absent: 0.7 with `log_l1`, "
            "0 with `l1`)"
        ),
    )
    frequency_correction: bool = setting(
        True,
        doc=(
            "on imbalanced scan data, judge each label from a robust line of log L1 against its class's share of "
            "the data (clean models give frequent classes small triggers too); balanced data is left alone"
        ),
    )

    def cut(self) -> float:
        """The threshold as it applies: the statistic's default when unset."""
        return DEFAULT_THRESHOLD[self.statistic] if self.threshold is None else self.threshold

    def floor(self) -> float:
        """The spread floor as it applies: the statistic's default when unset."""
        return DEFAULT_SPREAD_FLOOR[self.statistic] if self.spread_floor is None else self.spread_floor

    min_clean_accuracy: float = setting(
        0.5, range=(0.0, 1.0, True, True), doc=("clean accuracy below which a warning is raised")
    )
    max_margin: bool = setting(
        True,
        doc=(
            "also run the max-margin detector ([Detectors](detectors.md)): a label whose largest reachable logit "
            "margin is an outlier (or at least 5x the others' median) is flagged, whatever its trigger looks like; "
            "on by the rule fixed before the zoo's last tuning records were read (on the tuning half it flags 1 "
            "of 14 clean models and 7 of 15 backdoored, none at a wrong label)"
        ),
    )
    transforms: bool = setting(
        False,
        doc=(
            "also run the transform search ([Detectors](detectors.md)): per label, the weakest blended image, "
            "additive signal, colour filter and warp shared by every clean image that turns them into it; a "
            "label reached at a strength far below the others' median is flagged (blended, filter and WaNet-style "
            "triggers that Neural Cleanse misses); off by default: on the development draw it added 2 backdoors the "
            "default scan misses where its rule asked for 3 (1.3-1.45x the images)"
        ),
    )


@dataclass
class OutputConfig:
    dir: str = setting("runs", doc="parent of the run folders")


@dataclass
class ComputeConfig:
    """Where the (label, trial) searches run: this process, or Ray workers (nc_engine/compute/backend.py)."""

    backend: str = setting(
        "local",
        choices=BACKENDS,
        doc=("`local` (this process) or `ray` (the searches spread over Ray workers; needs `nc-tui[ray]`)"),
    )
    address: str = setting(
        "", doc=('`ray`: empty = start a local Ray for the scan, `"auto"` = the running cluster, or a cluster address')
    )
    devices: Any = setting(
        "all",
        doc=(
            '`ray`: `"all"` (every GPU, CPUs when there is none), `"cpu"`, or a list of local GPUs '
            '(`[0, 2]`, `["cuda:1"]`)'
        ),
    )
    workers: int = setting(
        0,
        range=(0, 4096),
        note="0 = one per device",
        doc=("`ray`: how many workers; more workers than GPUs share them"),
    )


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    # Folder that relative paths in the config are relative to (the config file's folder).
    base_dir: Path = field(default_factory=Path.cwd)
    source: str = "<defaults>"
    # "section.key" of every key the TOML gave: formats that carry their own preprocessing (timm, huggingface)
    # fill mean, std and input_shape the config left out.
    given: frozenset = field(default_factory=frozenset)

    def gave(self, section: str, key: str) -> bool:
        return f"{section}.{key}" in self.given

    def resolve_path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def resolved(self) -> Config:
        """A copy with every "unset, take the preset's" value filled in (see `resolve`)."""
        return resolve(self)


# Budgets. "reference" is the authors' (1000 samples, batch 32, 1000 steps, no shortcut); the others are
# measured on the zoo in evaluation/campaigns/main-gpu/RESULTS.md: "default" is the cheapest that meets the
# detection targets there, "fast" trades some reliability for time, "thorough" spends more for stabler indices.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": dict(
        trials=1, samples=96, asr_samples=500, batch_size=32, max_steps=150, converge_window=8, converge_tol=0.05
    ),
    "default": dict(
        trials=1, samples=160, asr_samples=1000, batch_size=32, max_steps=300, converge_window=10, converge_tol=0.02
    ),
    "thorough": dict(
        trials=2, samples=320, asr_samples=1000, batch_size=32, max_steps=600, converge_window=20, converge_tol=0.01
    ),
    "reference": dict(
        trials=1, samples=1000, asr_samples=1000, batch_size=32, max_steps=1000, converge_window=0, converge_tol=0.0
    ),
}

SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "scan": ScanConfig,
    "detect": DetectConfig,
    "output": OutputConfig,
    "compute": ComputeConfig,
}


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _unwritable(value: Any) -> str | None:
    """Why a value cannot go back into the run folder's config.toml, or None: control characters (a newline
    in a path ends the TOML string), TOML dates (not config values) and table keys that are not names."""
    if isinstance(value, str):
        bad = next((c for c in value if ord(c) < 32 or 127 <= ord(c) < 160), None)
        return None if bad is None else f"must not contain control characters (found {bad!r})"
    if isinstance(value, list):
        return next((r for r in map(_unwritable, value) if r), None)
    if isinstance(value, dict):
        names = [k for k in value if not k.isidentifier()]
        if names:
            return f"must have keys that are Python names (found {names[0]!r})"
        return next((r for r in map(_unwritable, value.values()) if r), None)
    if isinstance(value, bool | int | float):
        return None
    return f"must hold strings, numbers, booleans, lists and tables, not a {type(value).__name__}"


def _check_type(section: str, key: str, value: Any, annotation: str, source: str) -> Any:
    where = f"{source}: [{section}].{key}"
    problem = _unwritable(value)
    if problem:
        raise ConfigError(f"{where} {problem}, got {value!r}")
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
    cls = SECTIONS[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table, got {_type_name(table)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{source}: unknown key [{name}].{key} (known keys: {known})")
        values[key] = _check_type(name, key, value, str(fields[key].type), source)
    return cls(**values)


# Allowed ranges of numeric keys, so a typo (trials = 10**12, seed = -1) is one line, not a hang or a
# traceback deep in numpy. Integers: (low, high). Numbers: (low, high, low included, high included).
MAX_CHANNELS, MAX_SIDE, MAX_CLASSES = 16, 4096, 100_000
MAX_CONFIG_BYTES = 2**20


def _declared(kind: str) -> dict[tuple[str, str], Any]:
    """(section, key) -> what the keys declare of `kind` ("range", "choices", "note"), where they do."""
    return {
        (name, f.name): f.metadata[kind]
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.metadata.get(kind)
    }


INT_RANGES: dict[tuple[str, str], tuple[int, int]] = {k: r for k, r in _declared("range").items() if len(r) == 2}
FLOAT_RANGES: dict[tuple[str, str], tuple[float, float, bool, bool]] = {
    k: r for k, r in _declared("range").items() if len(r) == 4
}
CHOICES: dict[tuple[str, str], tuple[str, ...]] = _declared("choices")
_INT_NOTES = {k: f" ({note})" for k, note in _declared("note").items()}


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> str:
    return f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _check_ranges(cfg: Config) -> None:
    """Every numeric key inside its allowed range; the message gives the range."""
    for (section, key), (low, high) in INT_RANGES.items():
        value = getattr(getattr(cfg, section), key)
        if value is not None and not low <= value <= high:
            raise ConfigError(
                f"{cfg.source}: [{section}].{key} must be an integer in {low}..{high}"
                f"{_INT_NOTES.get((section, key), '')}, got {value!r}"
            )
    for (section, key), (low_f, high_f, low_in, high_in) in FLOAT_RANGES.items():
        number = getattr(getattr(cfg, section), key)
        if number is None:
            continue
        above = number >= low_f if low_in else number > low_f
        below = number <= high_f if high_in else number < high_f
        if not (above and below):
            raise ConfigError(
                f"{cfg.source}: [{section}].{key} must be a number in "
                f"{_interval(low_f, high_f, low_in, high_in)}, got {number!r}"
            )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _validate_model(cfg: Config, bad: Any) -> None:
    src, m = cfg.source, cfg.model
    if m.format == "pickle" and not m.trust_pickle:
        raise ConfigError(
            f'{src}: [model].format = "pickle" runs code from the model file when it loads; '
            "add trust_pickle = true to [model] if you trust it, or save the model as TorchScript or a state_dict"
        )
    if m.format in ("state_dict", "torchvision", "timm") and not m.architecture:
        raise ConfigError(
            f'{src}: [model].architecture is required with format = "{m.format}" (e.g. "net.py:Net" or "resnet18")'
        )
    if m.num_classes != 0 and not 2 <= m.num_classes <= MAX_CLASSES:
        raise bad(
            "[model].num_classes",
            f"an integer in 2..{MAX_CLASSES} (or 0 / absent: inferred from the model)",
            m.num_classes,
        )
    if len(m.input_shape) != 3 or not all(_is_int(v) and v > 0 for v in m.input_shape):
        raise bad("[model].input_shape", "three positive integers [C, H, W]", m.input_shape)
    channels, height, width = m.input_shape
    if channels > MAX_CHANNELS or height > MAX_SIDE or width > MAX_SIDE:
        raise bad(
            "[model].input_shape", f"[C, H, W] with C in 1..{MAX_CHANNELS} and H, W in 1..{MAX_SIDE}", m.input_shape
        )
    counts = "a list of 1 number" if channels == 1 else f"a list of 1 or {channels} numbers"
    for key in ("mean", "std"):
        vals = getattr(m, key)
        if len(vals) not in (1, channels) or not all(_is_number(v) for v in vals):
            raise bad(f"[model].{key}", counts + " (finite)", vals)
    if any(v <= 0 for v in m.std):
        raise bad("[model].std", "positive numbers", m.std)


def _validate_data(cfg: Config, bad: Any) -> None:
    d = cfg.data
    if d.format == "torchvision" and d.dataset not in TORCHVISION_DATASETS:
        raise bad(
            "[data].dataset", "one of " + ", ".join(TORCHVISION_DATASETS) + ' with format = "torchvision"', d.dataset
        )


def _validate_scan(cfg: Config, bad: Any) -> None:
    s = cfg.scan
    if s.labels != "all":
        if not isinstance(s.labels, list) or not s.labels or not all(_is_int(v) for v in s.labels):
            raise bad("[scan].labels", '"all" or a non-empty list of integers', s.labels)
        if len(set(s.labels)) != len(s.labels):
            raise bad("[scan].labels", "labels without repeats", s.labels)
        if not all(0 <= v < MAX_CLASSES for v in s.labels):
            raise bad("[scan].labels", f"labels in 0..{MAX_CLASSES - 1}", s.labels)
        if cfg.model.num_classes:  # else checked once the model has told us its number of classes
            check_labels(cfg)
    if s.samples is not None and s.batch_size is not None and s.batch_size > s.samples:
        raise bad("[scan].batch_size", f"at most samples ({s.samples})", s.batch_size)
    if len(s.betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in s.betas):
        raise bad("[scan].betas", "two numbers in [0, 1)", s.betas)
    dev = s.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise bad("[scan].device", "auto, cpu, cuda or cuda:N", dev)


def _is_gpu_name(v: Any) -> bool:
    return (_is_int(v) and 0 <= v < 1024) or (isinstance(v, str) and v.startswith("cuda:") and v[5:].isdigit())


def _validate_compute(cfg: Config, bad: Any) -> None:
    c = cfg.compute
    devices = c.devices
    if devices not in ("all", "cpu"):
        if not isinstance(devices, list) or not devices or not all(_is_gpu_name(v) for v in devices):
            raise bad("[compute].devices", '"all", "cpu" or a non-empty list of GPU indices or "cuda:N" names', devices)
        indices = [gpu_index(v) for v in devices]
        if len(set(indices)) != len(indices):
            raise bad("[compute].devices", "GPUs without repeats", devices)
        if c.address:
            raise ConfigError(
                f"{cfg.source}: [compute].devices lists local GPUs, which only applies to a Ray "
                f'that nc-tui starts itself (address = ""); with address = {c.address!r} use '
                '"all" or "cpu", and workers to use fewer'
            )


def gpu_index(device: int | str) -> int:
    """A [compute].devices entry (3 or "cuda:3") as a GPU index."""
    return device if isinstance(device, int) else int(device[5:])


def _validate(cfg: Config) -> None:
    def bad(key: str, expected: str, got: Any) -> ConfigError:
        return ConfigError(f"{cfg.source}: {key} must be {expected}, got {got!r}")

    for (section, key), choices in CHOICES.items():  # first: later checks rely on a known format
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise bad(f"[{section}].{key}", "one of " + ", ".join(choices), value)
    _validate_model(cfg, bad)
    _validate_data(cfg, bad)
    _validate_scan(cfg, bad)
    _validate_compute(cfg, bad)
    _check_ranges(cfg)


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
    budget = cfg.scan.budget()
    scan = dataclasses.replace(cfg.scan, **dataclasses.asdict(budget))
    detect = dataclasses.replace(cfg.detect, threshold=cfg.detect.cut(), spread_floor=cfg.detect.floor())
    if budget.batch_size > budget.samples:
        raise ConfigError(
            f"{cfg.source}: [scan].batch_size ({budget.batch_size}) must be at most samples ({budget.samples})"
        )
    return dataclasses.replace(cfg, scan=scan, detect=detect)


def config_from_dict(data: dict, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Build and validate a Config from a parsed TOML table."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a TOML table at the top level")
    sections = {}
    for name, table in data.items():
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section [{name}] (known: {', '.join(SECTIONS)})")
        sections[name] = _build_section(name, table, source)
    given = frozenset(f"{name}.{key}" for name, table in data.items() for key in table)
    cfg = Config(**sections, base_dir=base_dir or Path.cwd(), source=source, given=given)
    _validate(cfg)
    resolve(cfg)  # raises when the resolved budget is inconsistent
    return cfg


def read_toml(path: Path, name: str, expected: str) -> dict[str, Any]:
    """A bounded read of a TOML file (`name`: "config file", "audit spec"); every problem is one ConfigError
    line. A device (/dev/zero), FIFO or huge file would otherwise be read until memory runs out."""
    problem = regular_file_problem(path, expected)
    if problem == "not found":
        raise ConfigError(f"{path}: {name} not found")
    if problem:
        raise ConfigError(f"{path}: {problem}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: is {size} bytes; {expected} is at most {MAX_CONFIG_BYTES} bytes (1 MiB)")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # bounded even if the file grows after the check
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {expected} is at most {MAX_CONFIG_BYTES} bytes (1 MiB)")
        return parse_toml(raw.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {name} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected {expected}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_config(path: str | Path) -> Config:
    """Read a TOML config file; relative paths inside it are relative to its folder."""
    path = Path(path)
    data = read_toml(path, "config file", "a TOML config file")
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


def config_to_toml(cfg: Config, absolute_paths: bool = True, omit: frozenset = frozenset()) -> str:
    """The resolved config as TOML; paths made absolute so the file works from the run folder. Keys in
    `omit` ("section.key") are left out (the set-up form's "the model's own" values)."""
    lines = [f"# resolved from {cfg.source}"]
    for name in SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"\n[{name}]")
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is None or f"{name}.{f.name}" in omit:
                continue
            if absolute_paths and value and (name, f.name) in _PATH_KEYS:
                value = str(cfg.resolve_path(value).resolve())
            if absolute_paths and name == "output" and f.name == "dir":
                value = str(cfg.resolve_path(value).resolve())
            if absolute_paths and name == "model" and f.name == "architecture" and ".py:" in value:
                file, _, obj = value.rpartition(":")
                value = f"{cfg.resolve_path(file).resolve()}:{obj}"
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
