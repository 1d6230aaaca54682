"""The zoo split by model into a tuning half (rules and thresholds are chosen on it) and a test half.

    python -m evaluation.zoo_split [--check]     # (re)write evaluation/zoo_split.json, or check it

Split by model, never by seed: the three seeds of one model share its weights, so a rule tuned on one
seed has already seen the others. The split is a pure function of the model names (dataset-arch-kind-NN):
members of each family (dataset x arch x kind) are ordered by a salted hash of their name and dealt
alternately to the two halves, with one running turn across families so that a family's odd member
goes to the half that got fewer so far. Backdoored and clean models are dealt separately, from opposite
halves, so each half holds (within one) as many clean models as backdoored ones.

The zoo's second draw (evaluation/zoo.py, SECOND_DRAW) is split the same way but on its own, so adding it
moved none of the first draw's models; the file keeps it in a block of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HALVES = ("tuning", "test")
SALT = "nc-tui zoo split 1"  # changing it draws another split; the committed file records which one
KIND_ORDER = ("patch", "blend", "noise", "inobject", "twotarget", "clean")
SPLIT_FILE = Path(__file__).parent / "zoo_split.json"
MANIFESTS = Path(__file__).parent / "campaigns" / "main-gpu" / "manifests"  # the first draw, as first built


def family(name: str) -> tuple[str, str, str]:
    """(dataset, arch, kind) from a zoo name such as "cifar10-compact-patch-03"."""
    parts = name.split("-")
    if len(parts) != 4 or parts[2] not in KIND_ORDER:
        raise ValueError(f"not a zoo model name (dataset-arch-kind-NN): {name!r}")
    return parts[0], parts[1], parts[2]


def _rank(name: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}/{name}".encode()).hexdigest()


def split_models(names: list[str], salt: str = SALT) -> dict[str, str]:
    """Each model's half ("tuning" or "test"); the same names and salt always give the same split."""
    halves: dict[str, str] = {}
    for backdoored, turn in ((True, 0), (False, 1)):  # opposite starts: the odd backdoored and clean differ
        fams = sorted(
            {family(n) for n in names if (family(n)[2] != "clean") == backdoored},
            key=lambda f: (f[0], f[1], KIND_ORDER.index(f[2])),
        )
        for fam in fams:
            for name in sorted((n for n in set(names) if family(n) == fam), key=lambda n: _rank(n, salt)):
                halves[name] = HALVES[turn]
                turn ^= 1
    return dict(sorted(halves.items()))


# each draw's block in the file; the first keeps the key it had before there was a second
DRAW_BLOCKS = {"first": "models", "second": "second_draw"}


def load_split(path: Path = SPLIT_FILE, draws: tuple[str, ...] = ("first",)) -> dict[str, str]:
    """The committed split: model name -> half, over the named draws ("first", "second"; default the
    first: the rule was chosen on its tuning half, and the second's tuning half is not built)."""
    unknown = [d for d in draws if d not in DRAW_BLOCKS]
    if unknown:
        raise ValueError(f"unknown zoo draw(s) {unknown}: expected some of {list(DRAW_BLOCKS)}")
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {name: half for draw in draws for name, half in doc.get(DRAW_BLOCKS[draw], {}).items()}


def split_document(names: list[str], second: list[str] | None = None, salt: str = SALT) -> dict:
    """The split file's content: the first draw's `names` and the `second` draw, each split on its own."""
    doc = {
        "salt": salt,
        "how": "evaluation/zoo_split.py: split_models(names, salt), each draw on its own",
        "models": split_models(names, salt),
    }
    if second:
        doc[DRAW_BLOCKS["second"]] = split_models(second, salt)
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write or check the zoo's tuning/test split.")
    parser.add_argument("--manifests", type=Path, default=MANIFESTS, help="folder of the zoo's manifests")
    parser.add_argument("--out", type=Path, default=SPLIT_FILE)
    parser.add_argument("--check", action="store_true", help="fail if --out differs from a fresh split")
    args = parser.parse_args(argv)
    from evaluation.zoo import second_draw_names  # imports torch: only when the file is written or checked

    names, second = [p.stem for p in sorted(args.manifests.glob("*.json"))], second_draw_names()
    text = json.dumps(split_document(names, second), indent=1) + "\n"
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print("split up to date" if same else f"{args.out} differs from split_models(); rerun without --check")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(names)} models, and {len(second)} of the second draw)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
