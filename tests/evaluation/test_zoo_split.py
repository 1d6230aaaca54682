import json
from collections import Counter
from pathlib import Path

import pytest

from evaluation.zoo import second_draw_names
from evaluation.zoo_split import HALVES, SPLIT_FILE, family, load_split, main, split_models

MANIFESTS = Path(__file__).resolve().parents[2] / "evaluation" / "campaigns" / "main-gpu" / "manifests"
NAMES = sorted(p.stem for p in MANIFESTS.glob("*.json"))


def test_halves_are_disjoint_and_cover_the_zoo():
    first, second = load_split(draws=("first",)), load_split(draws=("second",))
    assert len(NAMES) == 58 and sorted(first) == NAMES
    assert sorted(second) == second_draw_names() and len(second) == 20 and not set(first) & set(second)
    assert set(first.values()) == set(second.values()) == set(HALVES)
    assert load_split() == first  # the default: the draw the rule was chosen on
    assert load_split(draws=("first", "second")) == {**first, **second}
    with pytest.raises(ValueError, match="unknown zoo draw"):
        load_split(draws=("second_draw",))


def test_committed_file_is_the_pure_function_of_the_names():
    assert load_split(draws=("first",)) == split_models(NAMES)
    assert load_split(draws=("second",)) == split_models(second_draw_names())
    assert split_models(list(reversed(NAMES))) == split_models(NAMES)  # order of the input does not matter
    assert main(["--check", "--out", str(SPLIT_FILE)]) == 0


def test_the_second_draw_leaves_the_first_as_it_was():
    """Its models come from a random stream of their own: every first-draw model's spec is still the one
    its committed manifest was built from, and no two models of a family share a training seed."""
    from evaluation.zoo import SECOND_DRAW, zoo_specs

    specs = {s.name: s for s in zoo_specs()}
    assert set(second_draw_names()) <= set(specs)
    for name in NAMES:
        assert specs[name].request() == json.loads((MANIFESTS / f"{name}.json").read_text())["request"], name
    for (dataset, arch), n in SECOND_DRAW.items():
        fam = [s for s in specs.values() if (s.dataset, s.arch) == (dataset, arch)]
        assert len({s.seed for s in fam}) == len(fam)
        assert sum(s.name in second_draw_names() for s in fam) == 2 * n


def test_balanced_per_family_and_clean_against_backdoored():
    split = load_split()
    per = Counter((family(m), h) for m, h in split.items())
    for fam in {family(m) for m in split}:
        assert abs(per[fam, "tuning"] - per[fam, "test"]) <= 1, fam
    for half in HALVES:
        clean = sum(1 for m, h in split.items() if h == half and family(m)[2] == "clean")
        bad = sum(1 for m, h in split.items() if h == half and family(m)[2] != "clean")
        assert abs(clean - bad) <= 1
    assert abs(Counter(split.values())["tuning"] - Counter(split.values())["test"]) <= 1


def test_another_salt_draws_another_split_and_bad_names_are_refused():
    assert split_models(NAMES, "another salt") != split_models(NAMES)
    with pytest.raises(ValueError):
        family("not-a-zoo-model")


@pytest.mark.parametrize("block", ["models", "second_draw"])
def test_check_fails_on_a_stale_file(tmp_path, block):
    stale = tmp_path / "split.json"
    doc = json.loads(SPLIT_FILE.read_text())
    name = sorted(doc[block])[0]
    doc[block][name] = "test" if doc[block][name] == "tuning" else "tuning"
    stale.write_text(json.dumps(doc))
    assert main(["--check", "--out", str(stale)]) == 1


def test_evaluate_half_picks_the_split_models_of_the_named_families():
    from evaluation.evaluate import in_half
    from evaluation.zoo import zoo_specs

    families = ["mnist-smallcnn", "cifar10-compact", "gtsrb-resnet8"]
    names = [s.name for s in zoo_specs(families)]
    split = load_split(draws=("first", "second"))
    picked = [n for n in names if in_half("test")(n)]
    assert picked and set(picked) == {n for n in names if split[n] == "test" and n not in second_draw_names()}
    assert not set(picked) & {n for n in names if in_half("tuning")(n)}
    assert not in_half("test")("cifar10-resnet9-patch-00")  # not in the split: never picked
    second = [n for n in names if in_half("test", "second")(n)]
    assert second and set(second) <= set(second_draw_names()) and not set(second) & set(picked)
    assert set(picked) | set(second) == {n for n in names if in_half("test", "both")(n)}


def test_evaluate_without_a_half_keeps_the_draws_asked_for():
    from evaluation.evaluate import chosen

    first, second = "cifar10-compact-patch-03", second_draw_names()[0]
    outside = "mnist-mlp-patch-00"  # a family outside the split: built with the first draw
    assert [chosen(None, "first")(n) for n in (first, second, outside)] == [True, False, True]
    assert [chosen(None, "second")(n) for n in (first, second, outside)] == [False, True, False]
    assert all(chosen(None, "both")(n) for n in (first, second, outside))
