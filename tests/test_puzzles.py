"""Generated puzzles through the same code as ARC: N-Queens boards (seed 001's benchmark)
built by trm-build-data, trained by trm-pretrain preset=nqueens_trm and scored by trm-eval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trm_kaggle.cli.build_data import main as build_main
from trm_kaggle.cli.eval import main as eval_main
from trm_kaggle.cli.pretrain import load_config
from trm_kaggle.dataset import nqueens
from trm_kaggle.dataset.format import dataset_shape, load_split
from trm_kaggle.pretrain import run_pretraining


def attacks(board: np.ndarray) -> bool:
    rows, cols = np.nonzero(board.reshape(nqueens.SIZE, nqueens.SIZE))
    return any(len(set(line)) < len(line) for line in (rows, cols, rows + cols, rows - cols))


def test_the_92_solutions_are_the_non_attacking_placements():
    boards = nqueens.solutions()
    assert boards.shape == (92, 64) and (boards.sum(1) == 8).all() and len({b.tobytes() for b in boards}) == 92
    assert not any(attacks(b) for b in boards)
    two_in_a_column = boards[0].reshape(8, 8).copy()
    two_in_a_column[1] = np.roll(two_in_a_column[0], 0)
    assert attacks(two_in_a_column.ravel())  # the check has teeth


def test_every_input_completes_to_exactly_one_solution():
    boards = nqueens.solutions()
    givens, completes = nqueens.unique_completions(boards)
    assert len(givens) == 17308 and givens.sum(1).min() == 2 and givens.sum(1).max() == 7  # one queen never decides
    sample = np.random.default_rng(0).choice(len(givens), 300, replace=False)
    for given, solution in zip(givens[sample], completes[sample]):
        containing = np.flatnonzero((boards[:, given]).all(1))
        assert containing.tolist() == [solution]


def test_splits_are_disjoint_deterministic_and_labelled_by_their_completion():
    splits = nqueens.generate(300, 50, seed=3)
    (train_in, _), (test_in, _) = splits["train"], splits["test"]
    assert train_in.shape == (300, 64) and test_in.shape == (50, 64) and train_in.dtype == np.uint8
    assert not {r.tobytes() for r in train_in} & {r.tobytes() for r in test_in}
    for inputs, labels in splits.values():
        queens = inputs == nqueens.QUEEN
        assert (labels[queens] == nqueens.QUEEN).all() and ((labels == nqueens.QUEEN).sum(1) == 8).all()
    again = nqueens.generate(300, 50, seed=3)
    assert all(np.array_equal(a, b) for split in splits for a, b in zip(splits[split], again[split]))
    assert not np.array_equal(nqueens.generate(300, 50, seed=4)["train"][0], train_in)


def test_trm_build_data_writes_nqueens_and_refuses_arc_options(tmp_path, capsys):
    out = tmp_path / "nq"
    assert build_main(["--source", "nqueens", "--out", str(out), "--train-size", "64", "--test-size", "16"]) == 0
    shape = dataset_shape(out)
    assert (shape.seq_len, shape.vocab_size, shape.num_puzzle_identifiers) == (64, 3, 1)
    assert load_split(out, "train").num_examples == 64 and load_split(out, "test").num_examples == 16
    assert json.loads((out / "build.json").read_text())["examples"] == {"train": 64, "test": 16}
    assert build_main(["--source", "nqueens", "--out", str(out)]) == 2  # exists, no --force
    with pytest.raises(SystemExit):
        build_main(["--source", "nqueens", "--out", str(tmp_path / "x"), "--holdout", "2"])
    assert "--holdout: an ARC option" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_main(["--source", "nqueens", "--out", str(tmp_path / "x"), "--tasks", "a"])
    assert "--tasks: an ARC option" in capsys.readouterr().err
    assert build_main(["--source", "nqueens", "--out", str(tmp_path / "y"), "--train-size", "20000"]) == 2
    assert "only 17308 distinct N-Queens inputs" in capsys.readouterr().err


def test_nqueens_trains_with_its_preset_and_trm_eval_scores_it(tmp_path, capsys):
    data = tmp_path / "nq"
    assert build_main(["--source", "nqueens", "--out", str(data), "--train-size", "256", "--test-size", "20"]) == 0
    last = run_pretraining(load_config(["preset=nqueens_trm", f"data_path={data}", f"run_dir={tmp_path / 'run'}",
                                        "max_steps=2", "eval_every_epochs=1"]))
    capsys.readouterr()
    assert eval_main(["--ckpt", str(last), "--data", str(data), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "20 predictions (EMA averages)" in out and "exact accuracy by ACT step: 1:" in out and " 8:" in out


def valid_grid(grid: np.ndarray) -> bool:
    board = grid.reshape(9, 9)
    boxes = board.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
    return all(sorted(line) == list(range(1, 10)) for lines in (board, board.T, boxes) for line in lines)


def test_sudoku_puzzles_have_one_solution_and_their_augmentations_keep_it():
    from trm_kaggle.dataset import sudoku

    puzzles, solutions = sudoku.generate(20, seed=0, stream=0)
    assert all(valid_grid(s) for s in solutions) and ((puzzles == 0) | (puzzles == solutions)).all()
    assert all(sudoku.count_solutions(p) == 1 for p in puzzles)
    assert 17 <= (puzzles > 0).sum(1).min() and (puzzles > 0).sum(1).max() <= 35
    blanked = puzzles[0].copy()
    blanked[np.flatnonzero(blanked)[:6]] = 0
    assert sudoku.count_solutions(blanked) == 2  # a puzzle with cells taken away has several: the count has teeth
    variants = sudoku.augment(np.stack([puzzles[0], solutions[0]]), 200, np.random.default_rng(1))
    assert variants.shape == (201, 2, 81) and np.array_equal(variants[0, 0], puzzles[0])
    assert len({v.tobytes() for v in variants}) == 201
    for puzzle, solution in variants:
        assert valid_grid(solution) and ((puzzle == 0) | (puzzle == solution)).all()
        assert (puzzle > 0).sum() == (puzzles[0] > 0).sum()
    assert all(sudoku.count_solutions(p) == 1 for p, _ in variants[:20])


def test_sudoku_builds_trains_and_is_scored(tmp_path, capsys):
    data = tmp_path / "sudoku"
    assert build_main(["--source", "sudoku", "--out", str(data), "--train-size", "16", "--test-size", "8",
                       "--num-aug", "3"]) == 0
    train = load_split(data, "train")
    assert train.num_examples == 64 and train.num_groups == 16 and (train.inputs.max(), train.inputs.min()) == (10, 1)
    assert dataset_shape(data).seq_len == 81 and dataset_shape(data).vocab_size == 11
    last = run_pretraining(load_config(["preset=sudoku_trm", f"data_path={data}", f"run_dir={tmp_path / 'run'}",
                                        "max_steps=2", "global_batch_size=16"]))
    capsys.readouterr()
    assert eval_main(["--ckpt", str(last), "--data", str(data), "--quiet"]) == 0
    assert "8 predictions (EMA averages)" in capsys.readouterr().out


def test_the_learning_benchmark_records_curves_and_plots_them(tmp_path):
    """benchmarks/learning.py end to end at a toy size: a point per evaluation, the block-call
    count of the preset's recursion, the JSON and the PNG."""
    import subprocess
    import sys
    from pathlib import Path

    data = tmp_path / "nq"
    assert build_main(["--source", "nqueens", "--out", str(data), "--train-size", "64", "--test-size", "8"]) == 0
    script = Path(__file__).parent.parent / "benchmarks" / "learning.py"
    done = subprocess.run([sys.executable, str(script), "--source", "nqueens", "--presets", "nqueens_trm", "nqueens_dis",
                           "--max-steps", "4", "--eval-every", "2", "--data", str(data), "--runs", str(tmp_path / "runs"),
                           "--out", str(tmp_path / "out"), "arch.hidden_size=32", "global_batch_size=16"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "learning_nqueens_nqueens_trm+nqueens_dis_cpu.json").read_text())
    trm, dis = record["curves"]
    assert [p["step"] for p in trm["points"]] == [0, 2, 4] and trm["block_calls_per_step"] == 2 * (2 + 1)
    assert trm["final"]["block_calls"] == 4 * 6 and len(trm["final"]["test_exact_accuracy_by_act_step"]) == 8
    assert (dis["block_calls_per_step"], dis["block_calls_per_example_pass"]) == (1 * (2 + 1), 6 * 3)
    assert len(dis["final"]["test_exact_accuracy_by_act_step"]) == 6  # N_sup steps, all evaluated
    row = record["comparison"]["nqueens_dis"]
    assert row["against"] == "nqueens_trm" and row["equal_block_calls"]["block_calls"] == 4 * 3
    assert (tmp_path / "out" / "learning_nqueens_nqueens_trm+nqueens_dis_cpu.png").read_bytes()[:4] == b"\x89PNG"


def test_the_comparison_counts_block_calls_to_the_references_accuracy():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("learning", Path(__file__).parent.parent / "benchmarks" / "learning.py")
    learning = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(learning)

    def curve(name, calls_per_step, accuracies):
        points = [{"step": 10 * i, "seconds": float(i), "block_calls": 10 * i * calls_per_step,
                   "test_exact_accuracy": a} for i, a in enumerate(accuracies)]
        return {"preset": name, "points": points, "final": points[-1]}

    reference = curve("trm", 6, [0.0, 0.1, 0.3, 0.5])  # reaches 0.5 at 180 block calls
    faster = curve("dis", 3, [0.0, 0.5, 0.6, 0.6])      # reaches 0.5 at 30
    never = curve("slow", 3, [0.0, 0.1, 0.2, 0.2])
    table = learning.compare([reference, faster, never])
    assert table["dis"]["to_reach_reference_final"]["block_calls"] == [180, 30]
    assert table["dis"]["to_reach_reference_final"]["block_call_ratio"] == 6.0
    assert table["dis"]["equal_block_calls"] == {"block_calls": 90, "test_exact_accuracy": [0.1, 0.6]}
    assert table["slow"]["to_reach_reference_final"]["block_call_ratio"] is None
