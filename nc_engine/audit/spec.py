"""An audit's spec: which models to scan, each with its scan config, and where their run folders go.

SPEC.toml lists scan configs (`configs = ["a/config.toml", ...]`, relative to the spec), or names model
files (`models = "zoo/*.pt"`: a folder, a glob or a list of them) that share the spec's own [model] and
[data] sections, each file substituted into [model].path. `[compute]` says where the scans run. Every
problem is one ConfigError line naming the spec and the key, raised before anything is scanned.
"""

from __future__ import annotations

import dataclasses
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nc_engine.config.settings import Config, config_from_dict, load_config, read_toml
from nc_engine.errors import ConfigError
from nc_engine.files import regular_file_problem

TOP_KEYS = ("configs", "models")
SCAN_SECTIONS = ("model", "data", "scan", "detect")  # shared by every model of a `models` spec
BACKENDS = ("local", "ray")
# A folder given as `models` holds other files too (notes, data): these are the model files taken from it.
MODEL_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".jit", ".onnx", ".safetensors", ".pkl", ".ckpt", ".bin")


@dataclass
class ComputeSpec:
    """Where the audit's scans run: one after the other here, or side by side as Ray tasks."""

    backend: str = "local"
    address: str = ""  # ray: "auto", a cluster address, or "" for a local Ray started on demand
    cpus: float = 1.0  # ray: CPUs each model's scan asks for
    gpus: float = 0.0  # ray: GPUs each model's scan asks for


@dataclass
class AuditModel:
    """One model of the audit: its name (its folder under the audit's output), its scan config, and
    what the summary calls its config (the config file, or the model file of a `models` spec)."""

    name: str
    config: Config
    source: str
    problem: str = ""  # why this model cannot be scanned (its one line); the audit scans the others


@dataclass
class AuditSpec:
    path: Path
    models: list[AuditModel]
    out: Path
    compute: ComputeSpec = field(default_factory=ComputeSpec)

    def model_dir(self, model: AuditModel) -> Path:
        """The folder that holds this model's run folder."""
        return self.out / model.name


def default_out(spec_path: Path) -> Path:
    """Beside the spec: audit.toml -> audit-runs/."""
    return spec_path.resolve().parent / f"{spec_path.stem}-runs"


def load_spec(path: str | Path, out: str | Path | None = None) -> AuditSpec:
    """Read SPEC.toml and every config it names; `out` overrides the default output folder."""
    path = Path(path)
    data = read_toml(path, "audit spec", "a TOML audit spec")
    source = str(path)
    unknown = [k for k in data if k not in (*TOP_KEYS, *SCAN_SECTIONS, "compute")]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} (known: {', '.join(TOP_KEYS)} and the sections "
            f"[{'], ['.join(SCAN_SECTIONS)}], [compute])"
        )
    compute = _compute(data.get("compute", {}), source)
    if ("configs" in data) == ("models" in data):
        raise ConfigError(
            f"{source}: expected exactly one of `configs` (a list of scan configs) or `models` "
            "(model files sharing the spec's [model] and [data])"
        )
    if "configs" in data:
        shared = [s for s in SCAN_SECTIONS if s in data]
        if shared:
            raise ConfigError(
                f"{source}: [{shared[0]}] belongs in each scan config when `configs` is given "
                "(the spec's own sections are for `models`)"
            )
        entries = _from_configs(data["configs"], path)
    else:
        entries = _from_models(data, path)
    names = _names(entries, path)
    models = [AuditModel(name, cfg, src, problem) for name, (cfg, src, problem) in zip(names, entries, strict=True)]
    return AuditSpec(path.resolve(), models, Path(out).resolve() if out else default_out(path), compute)


def _compute(table: Any, source: str) -> ComputeSpec:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [compute] must be a table")
    fields = {f.name: f for f in dataclasses.fields(ComputeSpec)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown key [compute].{key} (known keys: {', '.join(fields)})")
        if key in ("cpus", "gpus"):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1024:
                raise ConfigError(f"{source}: [compute].{key} must be a number in [0, 1024], got {value!r}")
            value = float(value)
        elif not isinstance(value, str):
            raise ConfigError(f"{source}: [compute].{key} must be a string, got {value!r}")
        values[key] = value
    spec = ComputeSpec(**values)
    if spec.backend not in BACKENDS:
        raise ConfigError(f"{source}: [compute].backend must be one of {', '.join(BACKENDS)}, got {spec.backend!r}")
    return spec


def _string_list(value: Any, key: str, source: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{source}: `{key}` must be a non-empty string or list of strings, got {value!r}")
    return items


def _from_configs(value: Any, spec: Path) -> list[tuple[Config, str, str]]:
    out = []
    for item in _string_list(value, "configs", str(spec)):
        path = spec.resolve().parent / Path(item).expanduser()
        if regular_file_problem(path, "a TOML config") == "not found":
            raise ConfigError(f"{spec}: configs entry {item!r}: {path} not found")
        out.append((load_config(path), str(path), ""))
    return out


def _from_models(data: dict[str, Any], spec: Path) -> list[tuple[Config, str, str]]:
    source = str(spec)
    if "model" not in data or "data" not in data:
        raise ConfigError(f"{source}: `models` needs the [model] and [data] sections its model files share")
    if not isinstance(data["model"], dict):
        raise ConfigError(f"{source}: [model] must be a table")
    if "path" in data["model"]:
        raise ConfigError(f"{source}: [model].path is set by `models` (each model file in turn); remove it")
    folders = data["model"].get("format") == "huggingface"  # a save_pretrained model is a folder
    files = _model_files(_string_list(data["models"], "models", source), spec, folders)
    shared = {k: data[k] for k in SCAN_SECTIONS if k in data}
    # the shared sections once, with a stand-in path: a mistake there is the spec's, not one model's
    config_from_dict({**shared, "model": {**data["model"], "path": "model"}}, source=source, base_dir=spec.parent)
    out = []
    for file in files:
        table = {**shared, "model": {**data["model"], "path": str(file)}}
        try:
            out.append((config_from_dict(table, source=source, base_dir=spec.resolve().parent), str(file), ""))
        except ConfigError as exc:  # this file alone (a newline in its name): its row says why, the rest scan
            out.append((Config(), str(file), f"{file!r}: {exc}"))
    return out


def _model_files(patterns: list[str], spec: Path, folders: bool) -> list[Path]:
    """The model files (or, for huggingface, folders) each pattern names: a folder's models, a glob's
    matches, or the file itself; each entry must name at least one."""
    base = spec.resolve().parent
    found: list[Path] = []
    for pattern in patterns:
        target = base / Path(pattern).expanduser()
        if glob.has_magic(pattern):
            hits = [Path(p) for p in sorted(glob.glob(str(target)))]
            hits = [p for p in hits if (p.is_dir() if folders else p.is_file())]
        elif target.is_dir() and not (folders and _is_hf_model(target)):
            hits = sorted(
                p
                for p in target.iterdir()
                if not p.name.startswith(".")
                and (p.is_dir() if folders else p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
            )
        elif target.exists():
            hits = [target]
        else:
            raise ConfigError(f"{spec}: models entry {pattern!r}: {target} not found")
        if not hits:
            what = "model folders" if folders else f"model files ({', '.join(MODEL_SUFFIXES)})"
            raise ConfigError(f"{spec}: models entry {pattern!r}: no {what} in {target}")
        found += [p for p in hits if p not in found]
    return found


def _is_hf_model(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def folder_name(text: str) -> str:
    """A name that stays one folder inside the audit's output: letters, digits, `.`, `_` and `-` only
    (the rest as `_`), no leading dot (a model named `..` must not write beside the output)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".") or "model"


def _names(entries: list[tuple[Config, str, str]], spec: Path) -> list[str]:
    """Each model's folder name: its model file's stem; where two share one, the source's path relative to
    the spec (slashes as underscores; outside it, its last three parts), then a counter. Deterministic, so
    a rerun finds the same folders."""
    stems = [folder_name(Path(src if problem else cfg.model.path).stem) for cfg, src, problem in entries]
    names = []
    for (_, src, _), stem in zip(entries, stems, strict=True):
        if stems.count(stem) > 1:
            rel = Path(src).resolve()
            try:
                rel = rel.relative_to(spec.resolve().parent)
            except ValueError:
                pass
            stem = folder_name("_".join(p for p in rel.with_suffix("").parts[-3:] if p != rel.anchor))
        name, n = stem, 2
        while name in names:
            name, n = f"{stem}-{n}", n + 1
        names.append(name)
    return names
