"""Set-up screen: a keyboard form over the scan's TOML config, validated as you type."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.suggester import Suggester
from textual.validation import Function, Integer, ValidationResult, Validator
from textual.widgets import Button, Footer, Input, Label, Select, Static

from nc_engine.config.settings import (
    CHOICES,
    OWN_PREPROCESSING_FORMATS,
    PREPROCESSING_KEYS,
    PRESETS,
    Config,
    ScanConfig,
    config_from_dict,
    config_to_toml,
    preset_values,
)
from nc_engine.errors import NCError

from ..messages import LoadConfigFile, StartScan
from ..widgets.titlebar import TitleBar


class PathSuggester(Suggester):
    """Completes file-system paths as you type (accept with the right arrow key)."""

    def __init__(self, base: Path) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.base = base

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        path = Path(os.path.expanduser(value))
        path = path if path.is_absolute() else self.base / path
        folder, stem = (path, "") if value.endswith("/") else (path.parent, path.name)
        try:
            names = sorted(
                p.name + ("/" if p.is_dir() else "")
                for p in folder.iterdir()
                if p.name.startswith(stem) and not p.name.startswith(".")
            )
        except OSError:
            return None
        return value + names[0][len(stem) :] if names else None


class NumberList(Validator):
    """Comma-separated numbers, `count` of them (or any of `counts`)."""

    def __init__(self, counts: tuple[int, ...], integers: bool = False) -> None:
        super().__init__()
        self.counts, self.integers = counts, integers

    def validate(self, value: str) -> ValidationResult:
        try:
            items = parse_list(value, self.integers)
        except ValueError:
            return self.failure("expected numbers separated by commas")
        if len(items) not in self.counts:
            return self.failure(f"expected {' or '.join(map(str, self.counts))} values")
        return self.success()


def parse_list(value: str, integers: bool = False) -> list:
    parts = [p.strip() for p in value.strip().strip("[]").split(",") if p.strip()]
    return [int(p) if integers else float(p) for p in parts]


def _labels_ok(value: str) -> bool:
    if value.strip() in ("", "all"):
        return True
    try:
        return bool(parse_list(value, integers=True))
    except ValueError:
        return False


@dataclass(frozen=True)
class Field:
    section: str
    key: str
    label: str
    kind: str = "text"  # text | path | budget (empty: preset) | count (0 allowed) | list3 | list | labels | select
    options: tuple[str, ...] = ()  # a select's choices: the key's own (settings.CHOICES)
    placeholder: str = ""


FIELDS = (
    Field("model", "path", "Model file", "path", placeholder="model.pt"),
    Field("model", "format", "Model format", "select", CHOICES["model", "format"]),
    Field("model", "architecture", "Architecture", placeholder="net.py:Net or resnet18 (state_dict/torchvision)"),
    Field("model", "num_classes", "Classes", "count", placeholder="0 = infer from the model"),
    Field("model", "input_shape", "Input shape C,H,W", "list3"),
    Field("model", "mean", "Normalise mean", "list"),
    Field("model", "std", "Normalise std", "list"),
    Field("data", "path", "Data", "path", placeholder="data.npz or an image folder / .tar.gz"),
    Field("data", "format", "Data format", "select", CHOICES["data", "format"]),
    Field("data", "split", "Split"),
    Field("scan", "labels", "Labels", "labels", placeholder="all, or 0, 3, 7"),
    Field("scan", "preset", "Budget preset", "select", CHOICES["scan", "preset"]),
    Field("scan", "trials", "Trials per label", "budget"),
    Field("scan", "samples", "Samples per step", "budget"),
    Field("scan", "max_steps", "Max steps", "budget"),
    Field("scan", "batch_size", "Batch size", "budget"),
    Field("scan", "device", "Device", "select"),
    Field("scan", "strategy", "Strategy", "select", CHOICES["scan", "strategy"]),
    Field("output", "dir", "Output folder", "path"),
    Field("compute", "backend", "Compute backend", "select", CHOICES["compute", "backend"]),
    Field("compute", "address", "Ray address", placeholder="empty = a local Ray; auto = the running cluster"),
    Field("compute", "workers", "Ray workers", "count", placeholder="0 = one per GPU (or per CPU)"),
)


def device_options() -> list[tuple[str, str]]:
    """auto, cpu and the CUDA devices actually present, with their memory."""
    options = [("auto (CUDA if present)", "auto"), ("cpu", "cpu")]
    try:
        import torch

        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            options.append((f"cuda:{i} {props.name} {props.total_memory / 2**30:.0f} GiB", f"cuda:{i}"))
    except Exception:  # a broken CUDA install must not stop the form
        pass
    return options


def field_id(f: Field) -> str:
    return f"{f.section}-{f.key}".replace("_", "-")


def is_preprocessing(f: Field) -> bool:
    """mean, std and input_shape: left empty, a model that records its own (timm, huggingface, keras) gives them."""
    return f.section == "model" and f.key in PREPROCESSING_KEYS


OWN_PLACEHOLDER = "empty: the model's own (" + ", ".join(OWN_PREPROCESSING_FORMATS) + "); F2 shows it"


def _as_text(value: list) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)


class SetupScreen(Screen):
    """The scan's config as a form. F2 checks model and data, F5 starts the scan."""

    BINDINGS = [
        Binding("f5", "start", "Start scan", id="start"),
        Binding("f2", "check", "Check", id="check"),
        Binding("ctrl+o", "load", "Load config", id="load"),
        Binding("ctrl+s", "save", "Save config as", id="save"),
    ]

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config

    def on_mount(self) -> None:
        # the first field, not the scrolling form around it: typing goes straight into it
        self.query_one(f"#{field_id(FIELDS[0])}").focus()

    def compose(self) -> ComposeResult:
        yield TitleBar("set-up")
        yield Static("", id="check-result")  # above the form: F2's answer must be seen without scrolling
        with VerticalScroll(id="form"):
            for f in FIELDS:
                with Horizontal(classes="field"):
                    yield Label(f.label, classes="field-label")
                    yield self._widget(f)
                    yield Static("", id=f"{field_id(f)}-error", classes="field-error")
            with Horizontal(id="form-buttons"):
                yield Button("Check model & data [F2]", id="check")
                yield Button("Start scan [F5]", id="start", variant="primary")
        yield Footer()

    def _widget(self, f: Field):
        value = self._value(f)
        wid = field_id(f)
        if f.kind == "select":
            options = device_options() if f.key == "device" else [(o, o) for o in f.options]
            if value not in [v for _, v in options]:
                options.append((value, value))
            return Select(options, value=value, allow_blank=False, id=wid)
        validators: list[Validator] = []
        placeholder = f.placeholder
        if f.kind == "budget":
            validators = [Integer(minimum=1, failure_description="expected a positive whole number")]
            placeholder = self._preset_placeholder(self.config.scan.preset, f.key)
        elif f.kind == "count":
            validators = [Integer(minimum=0, failure_description="expected a whole number (0 = automatic)")]
        elif f.kind == "list3":
            validators = [NumberList((3,), integers=True)]
        elif f.kind == "list":
            channels = self.config.model.input_shape[0]
            validators = [NumberList((1, channels) if channels != 1 else (1,))]
        elif f.kind == "labels":
            validators = [Function(_labels_ok, "expected all, or label numbers separated by commas")]
        elif f.kind == "path":
            validators = [Function(lambda v: bool(v.strip()), "a path is required")]
        suggester = PathSuggester(self.config.base_dir) if f.kind == "path" else None
        if is_preprocessing(f):
            placeholder = OWN_PLACEHOLDER
        return Input(
            value=value,
            placeholder=placeholder,
            validators=validators,
            suggester=suggester,
            id=wid,
            valid_empty=f.kind not in ("path", "list3", "list") or is_preprocessing(f),
        )

    @staticmethod
    def _preset_placeholder(preset: str, key: str) -> str:
        return f"{preset_values(ScanConfig(preset=preset))[key]} (the {preset} preset's)"

    def _value(self, f: Field) -> str:
        cfg = self.config
        if is_preprocessing(f) and cfg.model.format in OWN_PREPROCESSING_FORMATS and not cfg.gave("model", f.key):
            return ""  # left out of the config: the model's own values apply, so the form leaves it empty too
        value = getattr(getattr(cfg, f.section), f.key)
        if isinstance(value, list):
            return _as_text(value)
        return "" if value is None else str(value)

    # ---- validation as you type
    @on(Input.Changed)
    def show_field_error(self, event: Input.Changed) -> None:
        self._show_error(event.input, event.validation_result)
        if event.input.id == "model-input-shape" and event.validation_result and event.validation_result.is_valid:
            channels = parse_list(event.input.value, integers=True)[0]
            for key in ("mean", "std"):  # their valid lengths follow the channel count
                box = self.query_one(f"#model-{key}", Input)
                box.validators = [NumberList((1, channels) if channels != 1 else (1,))]
                self._show_error(box, box.validate(box.value))

    @on(Select.Changed, "#scan-preset")
    def show_preset(self, event: Select.Changed) -> None:
        """An empty budget field takes the preset's value: the placeholders say which, for the preset chosen."""
        if str(event.value) not in PRESETS:
            return
        for f in FIELDS:
            if f.kind == "budget":
                self.query_one(f"#{field_id(f)}", Input).placeholder = self._preset_placeholder(str(event.value), f.key)

    def _show_error(self, box: Input, result: ValidationResult | None) -> None:
        error = self.query_one(f"#{box.id}-error", Static)
        error.update("" if result is None or result.is_valid else "✗ " + "; ".join(result.failure_descriptions))

    def form_config(self) -> Config:
        """The form's values as a validated Config; raises NCError naming the bad field."""
        tables: dict[str, dict] = {"model": {}, "data": {}, "scan": {}, "detect": {}, "output": {}, "compute": {}}
        base = self.config
        for section in tables:  # keep the keys the form does not show, and "unset" as unset
            for key, value in vars(getattr(base, section)).items():
                if value is not None:
                    tables[section][key] = value
        model_format = str(self.query_one("#model-format", Select).value)
        for f in FIELDS:
            raw = self._raw(f)
            if is_preprocessing(f) and not raw:
                if model_format not in OWN_PREPROCESSING_FORMATS:
                    self.query_one(f"#{field_id(f)}").focus()
                    raise NCError(
                        f"{f.label}: required with model format {model_format} (only "
                        f"{', '.join(OWN_PREPROCESSING_FORMATS)} models record their own)"
                    )
                tables["model"].pop(f.key, None)  # not given: the model's own values apply
                continue
            if f.kind == "budget":
                tables[f.section].pop(f.key, None)
                if not raw:  # empty: the preset's value
                    continue
                value = int(raw)
            elif f.kind == "count":
                value = int(raw or 0)
            elif f.kind == "list3":
                value = parse_list(raw, integers=True)
            elif f.kind == "list":
                value = parse_list(raw)
            elif f.kind == "labels":
                value = "all" if raw in ("", "all") else parse_list(raw, integers=True)
            else:
                value = raw
            tables[f.section][f.key] = value
        return config_from_dict(tables, source="the set-up form", base_dir=base.base_dir)

    def _raw(self, f: Field) -> str:
        """A field's text (validated; raises NCError naming the field) or a select's value."""
        widget = self.query_one(f"#{field_id(f)}")
        if not isinstance(widget, Input):
            return str(cast(Select, widget).value)
        result = widget.validate(widget.value)
        if result is not None and not result.is_valid:
            widget.focus()
            raise NCError(f"{f.label}: {'; '.join(result.failure_descriptions)}")
        return widget.value.strip()

    def show_model_own(self, preprocessing: dict) -> str:
        """After a check: the empty mean/std/input-shape fields show the model's own values (which a scan from
        the form uses); returns them as a line for the check's answer, or ""."""
        shown = []
        for f in FIELDS:
            box = self.query_one(f"#{field_id(f)}")
            if is_preprocessing(f) and isinstance(box, Input) and not box.value.strip() and f.key in preprocessing:
                box.placeholder = f"{_as_text(preprocessing[f.key])} (the model's own)"
                shown.append(f"{f.label.lower()} {_as_text(preprocessing[f.key])}")
        return ("the model's own: " + "; ".join(shown)) if shown else ""

    def _show_result(self, text: str, severity: str = "information") -> None:
        """F2's answer and form errors, at the top of the screen, and as a notification."""
        box = self.query_one("#check-result", Static)
        box.update(text)
        box.display = True
        if severity != "progress":
            level = cast(SeverityLevel, severity)  # "information", "warning" or "error" past the check above
            self.notify(Text.from_markup(text).plain.split("\n")[0], severity=level, timeout=6)

    def _report_problem(self, message: str) -> None:
        self._show_result(f"[b red]✗ {message}[/]", "error")

    def _valid_config(self) -> Config | None:
        """The form's config, or None after showing what is wrong."""
        try:
            return self.form_config()
        except NCError as exc:
            self._report_problem(str(exc))
            return None

    # ---- actions
    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        cfg = self._valid_config()
        if cfg is not None:
            self.post_message(StartScan(cfg))

    @on(Button.Pressed, "#check")
    def action_check(self) -> None:
        cfg = self._valid_config()
        if cfg is None:
            return
        self._show_result("checking: loading the model and the data ...", "progress")
        self.run_check(cfg)

    @work(thread=True, exclusive=True, group="check")
    def run_check(self, cfg: Config) -> None:
        from nc_engine.run.scan import check_setup

        try:
            info = check_setup(cfg)
        except NCError as exc:
            self.app.call_from_thread(self._report_problem, str(exc))
            return
        acc = info["clean_accuracy"]
        text = (
            f"✓ model and data load on {info['device']}: {info['samples']} optimisation + "
            f"{info['asr_samples']} held-out samples, {info['classes']} classes; clean accuracy {acc:.1%}; "
            f"outputs taken as {info['outputs']}"
        )
        if info["low_accuracy"]:  # escaped: "[model]" in the note is text, not markup
            text = f"[b yellow]⚠ {escape(info['low_accuracy_note'])}[/]\n{text}"
        for warning in info["warnings"]:
            text += f"\n[yellow]warning: {escape(warning)}[/]"
        self.app.call_from_thread(self._show_checked, text, info)

    def _show_checked(self, text: str, info: dict) -> None:
        own = self.show_model_own(info.get("preprocessing", {}))
        self._show_result(
            text + (f"\n{escape(own)}" if own else ""), "warning" if info["low_accuracy"] else "information"
        )

    def action_load(self) -> None:
        from .dialogs import PathPrompt

        def loaded(path: str | None) -> None:
            if path:
                self.post_message(LoadConfigFile(path))

        self.app.push_screen(PathPrompt("Load config (TOML):", PathSuggester(self.config.base_dir)), loaded)

    def action_save(self) -> None:
        from .dialogs import PathPrompt

        def save(path: str | None) -> None:
            if not path:
                return
            try:
                cfg = self.form_config()
                target = Path(path).expanduser()
                target = target if target.is_absolute() else cfg.base_dir / target
                own = cfg.model.format in OWN_PREPROCESSING_FORMATS  # keys left empty stay out of the file
                omit = frozenset(f"model.{k}" for k in PREPROCESSING_KEYS if own and not cfg.gave("model", k))
                target.write_text(config_to_toml(cfg, absolute_paths=False, omit=omit), encoding="utf-8")
            except (NCError, OSError) as exc:
                self._report_problem(str(exc))
                return
            self.notify(f"saved {target}")

        self.app.push_screen(
            PathPrompt("Save config as (TOML):", PathSuggester(self.config.base_dir), "scan.toml"), save
        )
