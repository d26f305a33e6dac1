"""The submission format: every malformed kind named precisely, the metric, the atomic write."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from conftest import ARC_MINI, DELETE, with_change
from trm_kaggle.arc import kaggle_paths, load_challenges
from trm_kaggle.errors import UserError
from trm_kaggle.submission import (SubmissionError, fallback_grid, load_solutions, parse_solutions,
                                   score_submission, validate_submission, write_submission)
from trm_kaggle.vote import build_submission

CHALLENGES, SOLUTIONS = kaggle_paths(str(ARC_MINI), "mini_eval")
T2 = "13e47133"      # a fixture task with two test inputs


@pytest.fixture(scope="module")
def tasks():
    return load_challenges(CHALLENGES, SOLUTIONS)


@pytest.fixture(scope="module")
def raw_solutions() -> dict:
    return json.loads(SOLUTIONS.read_text())


@pytest.fixture()
def perfect(raw_solutions) -> dict:
    """The solutions as a submission: both attempts right everywhere."""
    return {t: [{"attempt_1": g, "attempt_2": g} for g in grids] for t, grids in raw_solutions.items()}


def set_at(sub: dict, path: tuple, value) -> dict:
    return with_change(sub, path, value)



# (what is wrong, the change, the exact problem line)
MALFORMED = [
    ("missing task", (T2,), DELETE, f"task {T2}: missing (2 test inputs expected)"),
    ("extra task", ("ffffffff",), [], "task ffffffff: not in the challenges"),
    ("too few entries", (T2, 1), DELETE, f"task {T2}: 1 entries for 2 test inputs"),
    ("entries not an array", (T2,), {}, f"task {T2}: expected an array of entries, got object"),
    ("entry not an object", (T2, 1), [[1]],
     f"task {T2} entry 1: expected an object with attempt_1 and attempt_2, got array"),
    ("missing attempt_2", (T2, 1, "attempt_2"), DELETE, f"task {T2} entry 1: missing attempt_2"),
    ("non-rectangular", (T2, 0, "attempt_1"), [[1, 2], [3]],
     f"task {T2} entry 0 attempt_1: row 1 has 1 cells, row 0 has 2"),
    ("empty grid", (T2, 0, "attempt_2"), [], f"task {T2} entry 0 attempt_2: grid is empty"),
    ("empty row", (T2, 0, "attempt_1"), [[]], f"task {T2} entry 0 attempt_1: row 0 is empty"),
    ("31 rows", (T2, 0, "attempt_1"), [[1]] * 31,
     f"task {T2} entry 0 attempt_1: grid has 31 rows, at most 30 allowed"),
    ("31 cols", (T2, 0, "attempt_1"), [[1] * 31],
     f"task {T2} entry 0 attempt_1: row 0 has 31 cells, at most 30 allowed"),
    ("cell 10", (T2, 0, "attempt_1"), [[1, 10]], f"task {T2} entry 0 attempt_1: row 0 col 1: 10 is outside 0..9"),
    ("bool cell", (T2, 0, "attempt_1"), [[True]],
     f"task {T2} entry 0 attempt_1: row 0 col 0: true is boolean, expected an integer 0..9"),
    ("float cell", (T2, 0, "attempt_1"), [[1.0]],
     f"task {T2} entry 0 attempt_1: row 0 col 0: 1.0 is number, expected an integer 0..9"),
    ("null grid", (T2, 0, "attempt_1"), None, f"task {T2} entry 0 attempt_1: expected an array of rows, got null"),
]


@pytest.mark.parametrize("what, path, value, problem", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_validate_names_task_entry_and_attempt(tasks, perfect, what, path, value, problem):
    assert validate_submission(set_at(perfect, path, value), tasks) == [problem]


def test_validate_lists_every_problem_and_accepts_counts(tasks, perfect):
    sub = set_at(set_at(perfect, (T2, 0, "attempt_1"), [[1.5]]), (T2, 1, "attempt_2"), DELETE)
    del sub["0934a4d8"]
    counts = {t.id: len(t.test) for t in tasks}
    assert validate_submission(sub, counts) == validate_submission(sub, tasks) == [
        "task 0934a4d8: missing (1 test inputs expected)",
        f"task {T2} entry 0 attempt_1: row 0 col 0: 1.5 is number, expected an integer 0..9",
        f"task {T2} entry 1: missing attempt_2"]


def test_validate_without_expected_checks_the_shape_only(perfect):
    assert validate_submission({"x": perfect[T2]}) == []
    assert validate_submission({"x": []}) == ["task x: no entries"]
    assert validate_submission([perfect]) == ["expected an object of task id -> entries, got array"]


def test_perfect_submission_scores_one(tasks, perfect, raw_solutions):
    result = score_submission(perfect, load_solutions(SOLUTIONS))
    assert (result.score, result.correct, result.total) == (1.0, 20, 20)
    assert result.per_task == {t: [True] * len(g) for t, g in raw_solutions.items()}
    assert validate_submission(perfect, tasks) == []


def test_either_attempt_counts(perfect, raw_solutions):
    wrong = [[0]]
    sub = set_at(set_at(perfect, (T2, 0, "attempt_1"), wrong), (T2, 1, "attempt_2"), wrong)
    sub = set_at(set_at(sub, ("0934a4d8", 0, "attempt_1"), wrong), ("0934a4d8", 0, "attempt_2"), wrong)
    result = score_submission(sub, load_solutions(SOLUTIONS))
    assert result.per_task[T2] == [True, True]
    assert result.per_task["0934a4d8"] == [False]
    assert (result.correct, result.total) == (19, 20)


def test_fallback_only_submission_scores_the_inputs_that_equal_outputs(tasks, raw_solutions):
    challenges = json.loads(CHALLENGES.read_text())
    solutions = copy.deepcopy(raw_solutions)
    # Make two outputs equal to their inputs, so the fallback is right there and only there.
    for task_id, i in ((T2, 1), ("1ae2feb7", 2)):
        solutions[task_id][i] = challenges[task_id]["test"][i]["input"]
    expected = sum(pair["input"] == out for task_id, outs in solutions.items()
                   for pair, out in zip(challenges[task_id]["test"], outs))
    assert expected == 2
    result = score_submission(build_submission(tasks, {}), parse_solutions(solutions, SOLUTIONS))
    assert (result.correct, result.total, result.score) == (2, 20, 0.1)
    assert result.per_task[T2] == [False, True]
    assert score_submission(build_submission(tasks, {}), load_solutions(SOLUTIONS)).score == 0.0


def test_malformed_submission_is_an_error_not_a_zero(perfect):
    sub = set_at(set_at(perfect, (T2, 0, "attempt_1"), [[1, 2], [3]]), ("ffffffff",), [])
    with pytest.raises(SubmissionError) as info:
        score_submission(sub, load_solutions(SOLUTIONS))
    assert isinstance(info.value, UserError) and len(info.value.problems) == 2
    assert str(info.value) == "malformed submission: task ffffffff: not in the challenges (and 1 more problems)"


def test_parse_solutions_rejects_bad_files(tmp_path):
    for raw, words in (([], "expected a JSON object"), ({}, "no tasks"), ({"a": []}, "task a: expected a non-empty"),
                       ({"a": [[[1], [2, 3]]]}, "task a test[0].output: row 1 has 2 cells, row 0 has 1")):
        with pytest.raises(UserError, match=words.replace("[", r"\[").replace(".", r"\.")):
            parse_solutions(raw, tmp_path / "s.json")


def test_fallback_grid_is_a_writable_copy_of_the_input(tasks):
    test_input = tasks[0].test[0].input            # read-only, as arc.py makes every grid
    grid = fallback_grid(test_input)
    np.testing.assert_array_equal(grid, test_input)
    assert grid is not test_input and grid.flags.writeable and grid.dtype == np.uint8


def test_write_submission_is_atomic_and_leaves_no_temp_file(tmp_path, tasks, perfect):
    out = tmp_path / "submission.json"
    sub = set_at(perfect, (T2, 0, "attempt_1"), np.zeros((2, 3), np.uint8))   # arrays are written as lists
    write_submission(out, sub, tasks)
    assert [p.name for p in tmp_path.iterdir()] == ["submission.json"]
    written = json.loads(out.read_text())
    assert written[T2][0]["attempt_1"] == [[0, 0, 0], [0, 0, 0]]
    assert written["0934a4d8"] == perfect["0934a4d8"]


def test_write_submission_refuses_a_malformed_one_and_keeps_the_old_file(tmp_path, tasks, perfect):
    out = tmp_path / "submission.json"
    out.write_text("old")
    for bad, expected in ((set_at(perfect, (T2, 1, "attempt_1"), [[True]]), None),
                          (set_at(perfect, (T2,), DELETE), tasks)):
        with pytest.raises(SubmissionError):
            write_submission(out, bad, expected)
    assert [p.name for p in tmp_path.iterdir()] == ["submission.json"] and out.read_text() == "old"
    with pytest.raises(UserError, match="cannot write"):
        write_submission(tmp_path / "missing" / "submission.json", perfect)
