"""Every config key is declared once (settings.setting): the docs' table, the range and choice checks and
the set-up form's choices all come from that declaration."""

from __future__ import annotations

import dataclasses

import pytest

from nc_engine.config import docs
from nc_engine.config.settings import (
    CHOICES,
    FLOAT_RANGES,
    INT_RANGES,
    PRESETS,
    SECTIONS,
    ConfigError,
    config_from_dict,
)
from nc_tui.screens.setup import FIELDS


def test_docs_config_md_holds_the_table_the_code_declares():
    text = docs.DOC_FILE.read_text(encoding="utf-8")
    assert docs.with_table(text) == text, "run python -m nc_engine.config.docs and commit docs/config.md"


def test_every_key_has_a_doc_and_its_row():
    table = docs.settings_table()
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"[{section}].{f.name} has no doc"
            assert f"| {section} | `{f.name}` |" in table


def test_ranges_and_choices_come_from_the_declarations():
    assert INT_RANGES[("scan", "seed")] == (0, 2**32 - 1) and FLOAT_RANGES[("detect", "threshold")][:2] == (0, 1000)
    assert CHOICES[("scan", "preset")] == tuple(PRESETS)
    with pytest.raises(ConfigError, match=r"\[scan\].screening must be one of auto, on, off"):
        config_from_dict({"scan": {"screening": "sometimes"}})
    with pytest.raises(ConfigError, match=r"\[scan\].confirm_references must be an integer in 0..1000"):
        config_from_dict({"scan": {"confirm_references": 5000}})


def test_the_set_up_form_offers_each_keys_own_choices():
    selects = {(f.section, f.key): f.options for f in FIELDS if f.kind == "select" and f.options}
    assert selects and all(options == CHOICES[key] for key, options in selects.items())
