"""trm-score as a user runs it: the score on stdout, every malformed entry on stderr, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ARC_MINI
from trm_kaggle.arc import kaggle_paths
from trm_kaggle.cli.score import main

_, SOLUTIONS = kaggle_paths(str(ARC_MINI), "mini_eval")
T2 = "13e47133"      # a fixture task with two test inputs


@pytest.fixture()
def perfect() -> dict:
    solutions = json.loads(SOLUTIONS.read_text())
    return {t: [{"attempt_1": g, "attempt_2": g} for g in grids] for t, grids in solutions.items()}


def write(tmp_path, data, name="submission.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_score_line(tmp_path, capsys, perfect):
    perfect[T2][0] = {"attempt_1": [[0]], "attempt_2": [[0]]}
    code, out, err = run(capsys, "--submission", write(tmp_path, perfect), "--solutions", SOLUTIONS)
    assert (code, err) == (0, "")
    assert out == "score 0.9500 (19/20 test outputs correct, 12 tasks)\n"


def test_json_is_one_parseable_line(tmp_path, capsys, perfect):
    code, out, _ = run(capsys, "--submission", write(tmp_path, perfect), "--solutions", SOLUTIONS, "--json")
    assert code == 0 and out.count("\n") == 1
    assert json.loads(out) == {"score": 1.0, "correct": 20, "total": 20}


def test_verbose_adds_a_line_per_task(tmp_path, capsys, perfect):
    perfect[T2][1] = {"attempt_1": [[0]], "attempt_2": [[0]]}
    code, out, _ = run(capsys, "--submission", write(tmp_path, perfect), "--solutions", SOLUTIONS, "--verbose")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 13
    assert f"{T2} 1/2" in lines and "0934a4d8 1/1" in lines
    assert lines[-1].startswith("score 0.9500")


def test_malformed_lists_every_problem_then_exits_2(tmp_path, capsys, perfect):
    perfect[T2][0]["attempt_1"] = [[1, 2], [3]]
    del perfect[T2][1]["attempt_2"]
    path = write(tmp_path, perfect)
    code, out, err = run(capsys, "--submission", path, "--solutions", SOLUTIONS, "--json")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"trm-score: {path}: task {T2} entry 0 attempt_1: row 1 has 1 cells, row 0 has 2",
        f"trm-score: {path}: task {T2} entry 1: missing attempt_2",
        f"trm-score: error: {path}: malformed submission, 2 problem(s) listed above"]


@pytest.mark.parametrize("content, words", [
    ("{", "not valid JSON"),
    ("", "file is empty"),
    (None, "no such file"),
])
def test_unreadable_submission_is_one_line(tmp_path, capsys, content, words):
    path = tmp_path / "submission.json" if content is None else write(tmp_path, content)
    code, out, err = run(capsys, "--submission", path, "--solutions", SOLUTIONS)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and words in err and err.startswith("trm-score: error: ")


def test_malformed_solutions_is_one_line(tmp_path, capsys, perfect):
    solutions = write(tmp_path, {"a": [[[1, 2], [3]]]}, "solutions.json")
    code, _, err = run(capsys, "--submission", write(tmp_path, perfect), "--solutions", solutions)
    assert code == 2
    assert err == f"trm-score: error: {solutions}: task a test[0].output: row 1 has 1 cells, row 0 has 2\n"


def test_module_run_has_no_traceback(tmp_path, perfect):
    del perfect[T2]
    path = write(tmp_path, perfect)
    proc = subprocess.run([sys.executable, "-m", "trm_kaggle.cli.score", "--submission", str(path),
                           "--solutions", str(SOLUTIONS)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"trm-score: {path}: task {T2}: missing (2 test inputs expected)",
        f"trm-score: error: {path}: malformed submission, 1 problem(s) listed above"]
