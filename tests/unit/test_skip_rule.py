"""Every skip for a missing optional extra goes through conftest.require_module, which fails in CI (where
every extra is installed) instead of skipping silently."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_skips_a_missing_module_on_its_own():
    direct = [
        f"{p.relative_to(TESTS)}:{n}"
        for p in TESTS.rglob("*.py")
        if p.name != "test_skip_rule.py"
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "importorskip(" in line
    ]
    assert direct == [], f"use tests.conftest.require_module: {direct}"
