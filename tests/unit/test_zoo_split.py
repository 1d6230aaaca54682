import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.zoo import second_draw_names
from benchmarks.zoo_split import HALVES, SPLIT_FILE, family, load_split, main, split_models

MANIFESTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "manifests"
NAMES = sorted(p.stem for p in MANIFESTS.glob("*.json"))


def test_halves_are_disjoint_and_cover_the_zoo():
    first, second = load_split(draws=("models",)), load_split(draws=("second_draw",))
    assert len(NAMES) == 58 and sorted(first) == NAMES
    assert sorted(second) == second_draw_names() and len(second) == 20 and not set(first) & set(second)
    assert set(first.values()) == set(second.values()) == set(HALVES)
    assert load_split() == {**first, **second}


def test_committed_file_is_the_pure_function_of_the_names():
    assert load_split(draws=("models",)) == split_models(NAMES)
    assert load_split(draws=("second_draw",)) == split_models(second_draw_names())
    assert split_models(list(reversed(NAMES))) == split_models(NAMES)  # order of the input does not matter
    assert main(["--check", "--out", str(SPLIT_FILE)]) == 0


def test_the_second_draw_leaves_the_first_as_it_was():
    """Its models come from a random stream of their own: the first draw's specs do not move."""
    from benchmarks.zoo import SECOND_DRAW, zoo_specs

    specs = {s.name: s for s in zoo_specs()}
    assert set(second_draw_names()) <= set(specs)
    first = [s for name, s in specs.items() if name in NAMES]
    assert len(first) == 58
    # the first draw's seeds (100 + k backdoored, 200 + k clean) and the second's never collide
    for (dataset, arch), n in SECOND_DRAW.items():
        fam = [s for s in specs.values() if (s.dataset, s.arch) == (dataset, arch)]
        assert len({s.seed for s in fam}) == len(fam)
        assert sum(s.name in second_draw_names() for s in fam) == 2 * n
    assert specs["cifar10-compact-patch-03"].trigger["size"] == 6  # the first draw's model as it was built


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


def test_check_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "split.json"
    doc = json.loads(SPLIT_FILE.read_text())
    doc["models"][NAMES[0]] = "test" if doc["models"][NAMES[0]] == "tuning" else "tuning"
    stale.write_text(json.dumps(doc))
    assert main(["--check", "--out", str(stale)]) == 1


def test_evaluate_half_picks_the_split_models_of_the_named_families():
    from benchmarks.evaluate import in_half
    from benchmarks.zoo import zoo_specs

    families = ["mnist-smallcnn", "cifar10-compact", "gtsrb-resnet8"]
    names = [s.name for s in zoo_specs(families)]
    split = load_split()
    picked = [n for n in names if in_half("test")(n)]
    assert picked and set(picked) == {n for n in names if split[n] == "test"}
    assert not set(picked) & {n for n in names if in_half("tuning")(n)}
    assert not in_half("test")("cifar10-resnet9-patch-00")  # not in the split: never picked
    second = [n for n in names if in_half("test", "second")(n)]
    assert second and set(second) <= set(second_draw_names()) and set(second) <= set(picked)
    assert not set(second) & {n for n in names if in_half("test", "first")(n)}
