"""trm-view on real ARC tasks: one picture per task with its attempts marked right or wrong
against the solution, an index that shows them, and a run's curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trm_kaggle.cli.view import main
from trm_kaggle.submission import fallback_grid
from trm_kaggle.view import verdicts

from submit_helpers import hidden_tasks, write_challenges


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    tasks = hidden_tasks(3)
    challenges, solutions = write_challenges(tasks, tmp_path_factory.mktemp("hidden"))
    return tasks, challenges, solutions


def submission_with_one_right(tasks, where: Path) -> Path:
    """The first test output answered with its solution (attempt 2), every other a fallback."""
    sub = {t.id: [{"attempt_1": fallback_grid(q.input).tolist(), "attempt_2": fallback_grid(q.input).tolist()}
                  for q in t.test] for t in tasks}
    sub[tasks[0].id][0]["attempt_2"] = tasks[0].test[0].output.tolist()
    path = where / "submission.json"
    path.write_text(json.dumps(sub))
    return path


def test_tasks_are_drawn_marked_and_indexed(hidden, tmp_path, capsys):
    tasks, challenges, solutions = hidden
    submission = submission_with_one_right(tasks, tmp_path)
    out = tmp_path / "views"
    assert main(["tasks", "--challenges", str(challenges), "--submission", str(submission),
                 "--solutions", str(solutions), "--out", str(out)]) == 0
    total = sum(len(t.test) for t in tasks)
    assert capsys.readouterr().out.strip() == f"{out / 'index.html'}: 3 tasks drawn; 1 of {total} test outputs right"
    page = (out / "index.html").read_text()
    for task in tasks:
        png = out / f"{task.id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f'src="{task.id}.png"' in page
    assert f"{tasks[0].id} — 1/{len(tasks[0].test)} right" in page
    assert f"{tasks[1].id} — 0/{len(tasks[1].test)} right" in page
    assert not list(out.glob(".*"))  # nothing half-written


def test_the_marks_follow_the_solution():
    solution = np.array([[1, 2], [3, 4]])
    assert verdicts([solution.copy(), solution.T, np.zeros((1, 2))], solution) == [True, False, False]
    assert verdicts([solution], None) == [None]


def test_task_selection_and_bad_input(hidden, tmp_path, capsys):
    tasks, challenges, _ = hidden
    assert main(["tasks", "--challenges", str(challenges), "--tasks", tasks[1].id, "--out", str(tmp_path / "one")]) == 0
    assert sorted(p.name for p in (tmp_path / "one").glob("*.png")) == [f"{tasks[1].id}.png"]
    capsys.readouterr()
    assert main(["tasks", "--challenges", str(challenges), "--tasks", "nothere", "--out", str(tmp_path / "x")]) == 2
    assert "--tasks: nothere is not in" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({tasks[0].id: "nope"}))
    assert main(["tasks", "--challenges", str(challenges), "--submission", str(bad), "--out", str(tmp_path / "y")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_curves_plot_a_runs_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": s, "loss": 2.0 / s, "lm_loss": 1.9 / s, "exact_accuracy": 0.01 * s, "lr_trunk": 1e-4,
              "lr_puzzle_emb": 1e-2} for s in (1, 2, 3)] + [{"step": 3, "pass@1": 0.1, "pass@2": 0.2}]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n")
    assert main(["curves", str(run)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"{run / 'curves.png'}: loss, lm_loss, exact_accuracy, lr_trunk, lr_puzzle_emb, pass@1, pass@2")
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["curves", str(tmp_path / "nothere")]) == 2
    (run / "metrics.jsonl").write_text("{not json\n")
    assert main(["curves", str(run)]) == 2 and "line 1 is not JSON" in capsys.readouterr().err
