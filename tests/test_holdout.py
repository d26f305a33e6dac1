"""--holdout: test-set tasks taken out of the dataset entirely and written as competition files,
so that pretrain -> trm-submit -> trm-score simulates Kaggle on tasks the model never saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trm_kaggle.arc import load_challenges
from trm_kaggle.cli.build_data import main as build_main
from trm_kaggle.cli.package import main as package_main
from trm_kaggle.cli.pretrain import main as pretrain_main
from trm_kaggle.cli.score import main as score_main
from trm_kaggle.cli.submit import main as submit_main
from trm_kaggle.dataset.format import load_identifiers, load_split

from conftest import ARC_MINI
from submit_helpers import assert_complete


def build(out: Path, *extra: str) -> int:
    return build_main(["--quiet", "--source", str(ARC_MINI), "--subsets", "mini_train,mini_eval",
                       "--test-set", "mini_eval", "--num-aug", "2", "--out", str(out), *extra])


def held_out(data: Path):
    holdout = data / "holdout"
    return load_challenges(holdout / "arc-agi_test_challenges.json", holdout / "arc-agi_test_solutions.json")


@pytest.fixture(scope="module")
def holdout_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("holdout") / "data"
    assert build(out, "--holdout", "3", "--holdout-seed", "1") == 0
    return out


def test_held_out_tasks_are_nowhere_in_the_dataset(holdout_data):
    tasks = held_out(holdout_data)
    ids = {t.id for t in tasks}
    assert len(tasks) == 3 and all(t.has_solutions for t in tasks)
    names = load_identifiers(holdout_data)
    assert not {n.split("|||")[0] for n in names} & ids  # no row for them or their variants
    assert not set(json.loads((holdout_data / "test_puzzles.json").read_text())) & ids
    all_eval = json.loads(Path(f"{ARC_MINI}_mini_eval_challenges.json").read_text())
    assert ids < set(all_eval)
    test = load_split(holdout_data, "test")
    assert test.metadata.total_groups == len(all_eval) - 3
    record = json.loads((holdout_data / "build.json").read_text())
    assert sorted(record["selection"]["held_out_tasks"]) == sorted(ids) and record["holdout_seed"] == 1


def test_the_choice_depends_on_the_seed_only(holdout_data, tmp_path):
    assert build(tmp_path / "same", "--holdout", "3", "--holdout-seed", "1", "--num-aug", "0") == 0
    assert build(tmp_path / "other", "--holdout", "3", "--holdout-seed", "2") == 0
    ids = lambda data: [t.id for t in held_out(data)]  # noqa: E731
    assert ids(tmp_path / "same") == ids(holdout_data) != ids(tmp_path / "other")
    assert (tmp_path / "same" / "holdout" / "arc-agi_test_challenges.json").read_bytes() == \
        (holdout_data / "holdout" / "arc-agi_test_challenges.json").read_bytes()


def test_impossible_holdouts_are_refused_before_anything_is_written(tmp_path, capsys):
    assert build(tmp_path / "all", "--holdout", "12") == 2
    assert "--holdout 12: the test set mini_eval has 12 tasks; at least one must stay" in capsys.readouterr().err
    hidden = tmp_path / "h"
    (tmp_path / "h_mini_eval_challenges.json").write_bytes(Path(f"{ARC_MINI}_mini_eval_challenges.json").read_bytes())
    code = build_main(["--quiet", "--source", str(hidden), "--subsets", "mini_eval", "--test-set", "mini_eval",
                       "--out", str(tmp_path / "unsolved"), "--holdout", "1"])
    assert code == 2 and "has no known test outputs" in capsys.readouterr().err
    assert not (tmp_path / "all").exists() and not (tmp_path / "unsolved").exists()


def test_holdout_round_trip_pretrain_submit_score(holdout_data, tmp_path, capsys):
    """The three commands of the README on a tiny model: the held-out tasks are new to it, so
    trm-submit must give them fresh embedding rows, fine-tune and answer every test input."""
    run_dir = tmp_path / "run"
    assert pretrain_main(["preset=cpu_tiny", f"data_path={holdout_data}", f"run_dir={run_dir}", "epochs=100", "max_steps=100",
                          "log_every_steps=100"]) == 0
    assert package_main(["--ckpt", "step_100", "--runs-dir", str(run_dir), "--out", str(tmp_path / "bundle"),
                         "--slug", "you/trm-holdout", "--no-wheels"]) == 0
    holdout = holdout_data / "holdout"
    submission = tmp_path / "submission.json"
    assert submit_main(["--model", str(tmp_path / "bundle"), "--challenges", str(holdout / "arc-agi_test_challenges.json"),
                        "--out", str(submission), "--scratch", str(tmp_path / "scratch"), "--device", "cpu",
                        "--steps", "3", "--batch-size", "8", "--num-aug", "2", "--budget-hours", "0.05"]) == 0
    assert_complete(submission, held_out(holdout_data))
    capsys.readouterr()
    assert score_main(["--submission", str(submission), "--solutions", str(holdout / "arc-agi_test_solutions.json"),
                       "--json"]) == 0
    score = json.loads(capsys.readouterr().out)
    assert score["total"] == sum(len(t.test) for t in held_out(holdout_data)) and 0 <= score["score"] <= 1
