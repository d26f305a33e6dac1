"""ARC-format tasks from rule families (trm-build-data --source synthetic:...) on a small canvas,
and the two negative-control faults of the held-out check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trm_kaggle.arc import Pair, Query, Task, write_kaggle_files
from trm_kaggle.augment import apply_variant, arc_shape, crop, decode, encode_grid, parse_variant_name
from trm_kaggle.checkpoint import save_checkpoint
from trm_kaggle.config import DataShape, tiny_model_config
from trm_kaggle.cli.build_data import main as build_main
from trm_kaggle.dataset import synthetic
from trm_kaggle.dataset.build import BuildOptions, build_dataset
from trm_kaggle.dataset.format import dataset_shape, load_identifiers, load_split
from trm_kaggle.errors import UserError
from trm_kaggle.kaggle import SubmitOptions, faults, submit
from trm_kaggle.model import TRM
from trm_kaggle.package import export_model
from trm_kaggle.vote import decode_predictions


def colour_table(pairs) -> dict[int, int]:
    """The colour -> colour map a set of pairs shows; AssertionError when a cell contradicts it."""
    table: dict[int, int] = {}
    for pair in pairs:
        assert pair.input.shape == pair.output.shape
        for a, b in zip(pair.input.ravel().tolist(), pair.output.ravel().tolist()):
            assert table.setdefault(a, b) == b, f"colour {a} maps to {table[a]} and {b}"
    return table


def shift_of(pair) -> tuple[int, int]:
    """The (dr, dc) in -2..2, not (0, 0), that turns a shift task's input into its output."""
    h, w = pair.input.shape
    moves = range(-synthetic.MAX_SHIFT, synthetic.MAX_SHIFT + 1)
    for dr, dc in [(dr, dc) for dr in moves for dc in moves if dr or dc]:
        out = np.zeros_like(pair.input)
        out[max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)] = \
            pair.input[max(-dr, 0):h + min(-dr, 0), max(-dc, 0):w + min(-dc, 0)]
        if np.array_equal(out, pair.output):
            return dr, dc
    raise AssertionError("no shift of -2..2 turns the input into the output")


def test_every_task_follows_one_rule_that_its_demonstrations_show():
    tasks = synthetic.generate("synthetic:recolour,shift", "training", 60, seed=1)
    assert [t.id for t in tasks[:2]] == ["recolour-training-0000", "shift-training-0001"]
    for task in tasks:
        pairs = [*task.train, *task.test]
        assert 2 <= len(task.train) <= 4 and len(task.test) == 1
        assert all(max(p.input.shape) <= synthetic.MAX_SIDE for p in pairs)
        assert all(not np.array_equal(p.input, p.output) for p in pairs)  # the test output is never its input
        if task.id.startswith("recolour"):
            shown = colour_table(task.train)
            test_colours = set(np.unique(task.test[0].input).tolist())
            assert test_colours <= set(shown)  # the demonstrations show every colour the test input needs
            assert colour_table(pairs) == shown
        else:
            assert len({shift_of(p) for p in pairs}) == 1
    first = tasks[0].train[0]
    wrong = first.output.copy()
    wrong[0, 0] = (wrong[0, 0] + 1) % 10
    with pytest.raises(AssertionError):  # the checks have teeth: one cell off breaks the rule
        colour_table([*tasks[0].train, Pair(input=first.input, output=wrong)])
    with pytest.raises(AssertionError):
        shift_of(Pair(input=tasks[1].train[0].input, output=tasks[1].train[0].input))


def test_tasks_depend_only_on_seed_subset_and_index():
    a = synthetic.generate("synthetic:recolour,shift", "training", 10, seed=5)
    b = synthetic.generate("synthetic:recolour,shift", "training", 12, seed=5)
    assert [t.to_json() for t in a] == [t.to_json() for t in b[:10]]
    assert a[0].to_json() != synthetic.generate("synthetic:recolour,shift", "training", 1, seed=6)[0].to_json()
    evaluation = synthetic.generate("synthetic:recolour,shift", "evaluation", 10, seed=5)
    assert a[0].to_json() != evaluation[0].to_json()


@pytest.mark.parametrize("source, problem", [("synthetic:colours", "unknown family 'colours'"),
                                             ("synthetic:", "no family named"),
                                             ("synthetic:shift,shift", "named twice")])
def test_a_bad_family_list_is_one_line(source, problem):
    with pytest.raises(UserError, match=problem):
        synthetic.parse_families(source)


def test_trm_build_data_writes_them_on_an_8x8_canvas_with_holdout(tmp_path):
    out = tmp_path / "syn"
    assert build_main(["--source", "synthetic:recolour,shift", "--train-size", "20", "--test-size", "10",
                       "--holdout", "4", "--num-aug", "3", "--out", str(out), "--quiet"]) == 0
    shape = dataset_shape(out)
    assert (shape.seq_len, shape.vocab_size) == (64, 12)
    build = json.loads((out / "build.json").read_text())
    assert build["canvas"] == 8 and build["data"]["families"] == ["recolour", "shift"]
    held_out = json.loads((out / "holdout" / "arc-agi_test_challenges.json").read_text())
    names = load_identifiers(out)
    assert len(held_out) == 4 and not {parse_variant_name(n)[0] for n in names[1:]} & set(held_out)
    # a train row is its variant of its task's demonstration pair, wherever it was translated to
    tasks = {t.id: t for subset, size in (("training", 20), ("evaluation", 10))
             for t in synthetic.generate("synthetic:recolour,shift", subset, size, seed=42)}
    split = load_split(out, "train")
    for puzzle in (0, 5, len(split.puzzle_identifiers) - 1):
        task_id, t, cmap = parse_variant_name(names[split.puzzle_identifiers[puzzle]])
        row = split.inputs[split.puzzle_indices[puzzle]]
        assert np.array_equal(decode(row), apply_variant(tasks[task_id].train[0].input, t, cmap))


def test_a_grid_larger_than_the_canvas_is_one_line(tmp_path):
    big = Task(id="big", train=[Pair(input=np.zeros((9, 3), np.uint8), output=np.zeros((3, 3), np.uint8))],
               test=[Query(input=np.zeros((3, 3), np.uint8))])
    options = BuildOptions(source="x", subsets=("s",), test_set="s", out=tmp_path / "d", num_aug=0, canvas=8,
                           progress=False)
    with pytest.raises(UserError, match=r"task big train\[0\] input: a 9x3 grid does not fit the 8x8 canvas"):
        build_dataset(options, subsets={"s": [big]})
    assert not (tmp_path / "d").exists()


def test_encoding_crop_and_vote_take_the_canvas_from_the_sequence_length():
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4) % 10
    seq = encode_grid(grid, (1, 2), canvas=8)
    assert seq.shape == (64,) and np.array_equal(decode(seq), grid)
    assert np.array_equal(crop(encode_grid(grid, canvas=8)), grid)
    assert np.array_equal(encode_grid(grid, canvas=30), encode_grid(grid))  # ARC's 900 tokens unchanged
    rotated = encode_grid(apply_variant(grid, 1, np.arange(10, dtype=np.uint8)), canvas=8)
    [undone] = decode_predictions(rotated[None], ["t|||t1|||0123456789"])
    assert np.array_equal(undone, grid)
    with pytest.raises(ValueError, match="not an ARC canvas"):
        decode_predictions(np.zeros((1, 63), np.uint8), ["t"])


def test_the_negative_controls_are_off_unless_asked(monkeypatch):
    names = ["<blank>", "a", "a|||t3|||0213456789"]
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.identifier_map(3) is None and faults.variant_names(names) == names
    monkeypatch.setenv(faults.ENV, "wrong_rows;wrong_inverse")
    assert faults.identifier_map(5).tolist() == [0, 3, 4, 1, 2]
    assert faults.variant_names(names) == ["<blank>", "a|||t1|||0123456789", "a|||t4|||0213456789"]


def test_trm_submit_answers_the_tasks_that_fit_a_small_canvas_and_gives_the_rest_the_fallback(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "run" / "step_1", TRM(tiny_model_config(arc_shape(3, canvas=8))),
                    ["<blank>", "a", "b"], 1)
    export_model(tmp_path / "run" / "step_1", tmp_path / "bundle" / "model")
    small = synthetic.generate("synthetic:recolour", "evaluation", 2, seed=0)
    big = Task(id="big", train=[Pair(input=np.ones((10, 10), np.uint8), output=np.ones((10, 10), np.uint8))],
               test=[Query(input=np.ones((3, 3), np.uint8))])
    challenges, _ = write_kaggle_files([*small, big], tmp_path / "hidden", "arc-agi_test")
    out = tmp_path / "submission.json"
    report = submit(SubmitOptions(out=out, model=tmp_path / "bundle", challenges=challenges, scratch=tmp_path / "scratch",
                                  budget_hours=0.05, margin_minutes=0.1, num_aug=1, steps=2, batch_size=8,
                                  infer_batch_size=4, device="cpu", gpus=1))
    assert report.error is None and report.chunks_done == report.chunks_total
    assert any(e.startswith("1 of 3 tasks have grids larger than the model's 8x8 canvas (first: task big train[0] "
                            "input: a 10x10 grid") for e in report.events), report.events
    assert set(json.loads((tmp_path / "scratch" / "data" / "test_puzzles.json").read_text())) == {t.id for t in small}
    assert json.loads(out.read_text())["big"] == [{"attempt_1": [[1] * 3] * 3, "attempt_2": [[1] * 3] * 3}]
    write_kaggle_files([big], tmp_path / "only_big", "arc-agi_test")
    none_fit = submit(SubmitOptions(out=tmp_path / "b.json", model=tmp_path / "bundle", scratch=tmp_path / "scratch2",
                                    challenges=tmp_path / "only_big" / "arc-agi_test_challenges.json", device="cpu",
                                    gpus=1))
    assert "the model can answer none of them" in none_fit.error and none_fit.failures()


def test_a_misspelt_or_malformed_fault_is_refused(monkeypatch):
    monkeypatch.setenv(faults.ENV, "wrong_row")
    with pytest.raises(ValueError, match="unknown fault 'wrong_row' .known: finetune_crash"):
        faults.active()
    monkeypatch.setenv(faults.ENV, "slow_step:seconds")
    with pytest.raises(ValueError, match="arguments must be key=number"):
        faults.active()
    monkeypatch.setenv(faults.ENV, "wrong_inverse")
    assert faults.describe() == "wrong_inverse"


def test_trm_package_refuses_a_sequence_that_is_no_square_canvas(tmp_path):
    shape = DataShape(num_puzzle_identifiers=2, vocab_size=12, seq_len=63)
    save_checkpoint(tmp_path / "run" / "step_1", TRM(tiny_model_config(shape)), ["<blank>", "a"], 1)
    with pytest.raises(UserError, match="seq_len 63, ARC.s is 900: the Kaggle notebook runs ARC tasks"):
        export_model(tmp_path / "run" / "step_1", tmp_path / "bundle")


@pytest.mark.parametrize("canvas", ["0", "31"])
def test_a_canvas_out_of_bounds_is_refused(canvas, tmp_path, capsys):
    assert build_main(["--source", "synthetic:recolour", "--canvas", canvas, "--out", str(tmp_path / "d"),
                       "--quiet"]) == 2
    assert "--canvas must be 1..30" in capsys.readouterr().err and not (tmp_path / "d").exists()
