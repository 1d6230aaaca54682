"""The max-margin tuning campaign's tally: each record judged by today's statistic, and a flag counts as
found only at a true target."""

from evaluation.margin_tuning import summary

PLAIN = [10.0, 11.0, 12.0, 10.5, 11.5, 10.2, 11.8, 10.9, 11.1]


def _record(name: str, targets: list[int], top: float) -> dict:
    """Ten labels: nine ordinary margins and label 9's, recorded as the first campaign wrote them."""
    return {"name": name, "targets": targets, "margins": [*PLAIN, top], "flagged": [], "p_value": 0.5}


def test_the_tally_judges_each_record_again_and_counts_true_targets():
    text = summary(
        [
            _record("m-patch-00", [9], 90.0),  # found
            _record("m-patch-01", [0], 90.0),  # flagged at the wrong label
            _record("m-clean-00", [], 95.0),  # a clean model flagged
            _record("m-clean-01", [], 12.5),  # plain
        ]
    )
    assert "| m-patch-00 | 9 | 9 | 8.18x |" in text and "| m-clean-01 | - | 9 | 1.14x | 1.43 | - |" in text
    assert text.endswith("4 models: 1/2 backdoored flagged at a true target (1 at another label), 1/2 clean flagged.")
