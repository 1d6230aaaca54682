"""The max-margin tuning campaign's tally: a flag counts as found only at a true target."""

from evaluation.margin_tuning import summary


def _record(name: str, targets: list[int], margins: list[float], flagged: list[int]) -> dict:
    return {
        "name": name,
        "targets": targets,
        "margins": margins,
        "flagged": flagged,
        "top_label": max(range(len(margins)), key=margins.__getitem__),
        "p_value": 0.01 if flagged else 0.5,
    }


def test_the_tally_counts_true_targets_wrong_labels_and_clean_flags():
    text = summary(
        [
            _record("m-patch-00", [1], [1.0, 9.0, 2.0, 2.0], [1]),
            _record("m-patch-01", [0], [1.0, 9.0, 2.0, 2.0], [1]),
            _record("m-clean-00", [], [2.0, 2.0, 2.1, 5.0], [3]),
            _record("m-clean-01", [], [2.0, 2.0, 2.1, 2.2], []),
        ]
    )
    assert "| m-patch-00 | 1 | 1 | 4.50x | 1 | 0.01 |" in text
    assert text.endswith("4 models: 1/2 backdoored flagged at a true target (1 at another label), 1/2 clean flagged.")
