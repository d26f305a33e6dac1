"""trm-eval on the original's checkpoint and dataset: its numbers, a valid submission, and
variants matched to embedding rows by name."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from trm_kaggle.arc import parse_task
from trm_kaggle.checkpoint import load_checkpoint, save_checkpoint
from trm_kaggle.cli.eval import main
from trm_kaggle.dataset.format import load_identifiers, load_split
from trm_kaggle.evaluate import select_examples
from trm_kaggle.submission import validate_submission

from conftest import FIXTURES, REFERENCE_DATASET

CHECKPOINT = FIXTURES / "reference_trm" / "checkpoint"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--quiet"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dump_logits_equals_the_originals_and_the_submission_is_complete(tmp_path, capsys):
    code, out, err = run(capsys, "--ckpt", str(CHECKPOINT / "step_72385"), "--data", str(REFERENCE_DATASET),
                         "--limit", "12", "--dump-logits", str(tmp_path / "x.npz"),
                         "--submission", str(tmp_path / "submission.json"))
    assert code == 0, err
    got, expected = np.load(tmp_path / "x.npz"), np.load(CHECKPOINT / "expected.npz")
    np.testing.assert_allclose(got["logits"], expected["logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["q_halt_logits"], expected["q_halt_logits"], atol=1e-4, rtol=0)
    assert "pass@K per output (Kaggle): @1 " in out
    assert "--limit 12: 12 of " in out and f"wrote {tmp_path / 'submission.json'} (--submission)" in out
    assert "@1000" not in out and "and above: no test input has more than" in out  # no pass@K beyond the candidates that exist
    tasks = [parse_task(k, v, REFERENCE_DATASET) for k, v in
             json.loads((REFERENCE_DATASET / "test_puzzles.json").read_text()).items()]
    submission = json.loads((tmp_path / "submission.json").read_text())
    assert validate_submission(submission, tasks) == []


def test_variants_find_their_embedding_rows_by_name(tmp_path, capsys):
    """A checkpoint whose rows are in another order predicts exactly as the original order."""
    source = load_checkpoint(CHECKPOINT / "step_72385")
    model = source.build_model()
    order = np.random.default_rng(0).permutation(np.arange(1, 129))
    order = np.concatenate([[0], order])
    with torch.no_grad():
        model.puzzle_emb.weights.copy_(model.puzzle_emb.weights[torch.from_numpy(order)])
    shuffled = save_checkpoint(tmp_path / "step_1", model, [source.identifiers[i] for i in order], step=1)
    for ckpt, name in ((CHECKPOINT / "step_72385", "a.npz"), (shuffled, "b.npz")):
        code, _, err = run(capsys, "--ckpt", str(ckpt), "--data", str(REFERENCE_DATASET), "--limit", "6",
                           "--dump-logits", str(tmp_path / name))
        assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["logits"], np.load(tmp_path / "b.npz")["logits"])


def test_a_checkpoint_without_rows_for_the_datasets_variants_is_refused(tmp_path, capsys):
    source = load_checkpoint(CHECKPOINT / "step_72385")
    ids = list(source.identifiers)
    ids[81] = "somebody-else"
    ckpt = save_checkpoint(tmp_path / "step_1", source.build_model(), ids, step=1)
    code, _, err = run(capsys, "--ckpt", str(ckpt), "--data", str(REFERENCE_DATASET))
    assert code == 2 and err.count("\n") == 1
    assert "1 of the 48 dataset variants evaluated have no embedding row in the checkpoint (first: 20270e3b)" in err
    code, _, err = run(capsys, "--ckpt", str(ckpt), "--data", str(REFERENCE_DATASET), "--num-aug", "0")
    assert code == 2 and "(first: 20270e3b)" in err  # row 81 is the task's original: still needed


def test_only_the_variants_evaluated_need_an_embedding_row(tmp_path, capsys):
    """--num-aug 0 predicts the originals only: a checkpoint without rows for the other
    variants (the original's task has one) can still evaluate them."""
    source = load_checkpoint(CHECKPOINT / "step_72385")
    ids = list(source.identifiers)
    ids[82] = "somebody-else"  # 20270e3b|||t0|||0697154328, a variant
    ckpt = save_checkpoint(tmp_path / "step_1", source.build_model(), ids, step=1)
    code, _, err = run(capsys, "--ckpt", str(ckpt), "--data", str(REFERENCE_DATASET), "--num-aug", "0")
    assert code == 0, err
    code, _, err = run(capsys, "--ckpt", str(ckpt), "--data", str(REFERENCE_DATASET), "--num-aug", "1")
    assert code == 2 and "(first: 20270e3b|||t0|||0697154328)" in err


def test_tasks_selects_what_is_predicted_scored_and_written(tmp_path, capsys):
    code, out, err = run(capsys, "--ckpt", str(CHECKPOINT / "step_72385"), "--data", str(REFERENCE_DATASET),
                         "--tasks", "13e47133,20270e3b", "--num-aug", "1",
                         "--submission", str(tmp_path / "s.json"), "--dump-logits", str(tmp_path / "x.npz"))
    assert code == 0, err
    assert "--tasks: 2 of 12 tasks evaluated" in out
    assert "4 of 4 test inputs voted on, 2 tasks" in out and "8 predictions" in out  # 2 variants x 4 inputs
    assert sorted(json.loads((tmp_path / "s.json").read_text())) == ["13e47133", "20270e3b"]
    split, names = load_split(REFERENCE_DATASET, "test"), load_identifiers(REFERENCE_DATASET)
    predicted = np.load(tmp_path / "x.npz")["example_index"]
    puzzle = np.searchsorted(split.puzzle_indices, predicted, side="right") - 1
    assert {names[i].split("|||")[0] for i in split.puzzle_identifiers[puzzle]} == {"13e47133", "20270e3b"}


@pytest.mark.parametrize("tasks, message", [
    ("13e47133,nosuch", "test_puzzles.json: no task nosuch"),
    (",", "--tasks: name at least one task id"),
])
def test_unknown_tasks_are_one_line(tasks, message, capsys):
    code, out, err = run(capsys, "--ckpt", str(CHECKPOINT / "step_72385"), "--data", str(REFERENCE_DATASET),
                         "--tasks", tasks)
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""


def nameless_original(directory):
    """The fixture checkpoint as the original code leaves it: no identifiers.json beside it."""
    directory.mkdir()
    for name in ("step_72385", "all_config.yaml"):
        shutil.copy(CHECKPOINT / name, directory / name)
    return directory / "step_72385"


def test_rows_without_names_are_refused_not_matched_by_position(tmp_path, mini_dataset, capsys):
    """The public failure that scored 0: an original checkpoint without identifiers.json and a
    dataset of the same size but numbered differently (our build of the same tasks)."""
    ckpt = nameless_original(tmp_path / "ckpt")
    assert len(load_identifiers(mini_dataset)) == 129
    for data in (mini_dataset, REFERENCE_DATASET):
        code, _, err = run(capsys, "--ckpt", str(ckpt), "--data", str(data), "--submission", str(tmp_path / "s.json"))
        assert code == 2 and err.count("\n") == 1 and not (tmp_path / "s.json").exists()
        assert (f"{ckpt}: its 129 puzzle-embedding rows have no names (no identifiers.json beside it), so they "
                f"cannot be matched to {data / 'identifiers.json'} by name; pass --identifiers FILE") in err
        assert "or --rows-by-position if that dataset numbered its variants exactly like this one" in err


def test_named_or_explicitly_positional_rows_predict_as_the_named_checkpoint(tmp_path, capsys, caplog):
    ckpt = nameless_original(tmp_path / "ckpt")
    logits = {}
    for name, extra in (("named", []), ("file", ["--identifiers", str(CHECKPOINT / "identifiers.json")]),
                        ("position", ["--rows-by-position"])):
        source = CHECKPOINT / "step_72385" if name == "named" else ckpt
        code, _, err = run(capsys, "--ckpt", str(source), "--data", str(REFERENCE_DATASET), "--limit", "4",
                           "--dump-logits", str(tmp_path / f"{name}.npz"), *extra)
        assert code == 0, err
        assert ("by position (--rows-by-position), not by name" in caplog.text) == (name == "position")
        logits[name] = np.load(tmp_path / f"{name}.npz")["logits"]
    np.testing.assert_array_equal(logits["file"], logits["named"])
    np.testing.assert_array_equal(logits["position"], logits["named"])


@pytest.mark.parametrize("names, message", [
    (["<blank>", "a", "b"], "ids.json: 3 names for a table of 129 puzzle-embedding rows"),
    (["<blank>"] + ["x"] * 128, "ids.json: 'x' names more than one row"),
    (["a"] * 128 + ["<blank>"], "ids.json: the first name is 'a', not '<blank>'"),
    ({"a": 1}, "ids.json: expected a JSON list of identifier names"),
])
def test_an_identifiers_file_that_cannot_name_the_rows_is_refused(names, message, tmp_path, capsys):
    ckpt = nameless_original(tmp_path / "ckpt")
    (tmp_path / "ids.json").write_text(json.dumps(names))
    code, _, err = run(capsys, "--ckpt", str(ckpt), "--data", str(REFERENCE_DATASET), "--identifiers",
                       str(tmp_path / "ids.json"))
    assert code == 2 and message in err and err.count("\n") == 1
    shutil.copy(tmp_path / "ids.json", ckpt.parent / "identifiers.json")  # the same file beside it
    code, _, err = run(capsys, "--ckpt", str(ckpt), "--data", str(REFERENCE_DATASET))
    assert code == 2 and message.replace("ids.json", "identifiers.json") in err


def test_unusable_output_paths_and_conflicting_flags_fail_before_any_inference(tmp_path, capsys):
    ckpt = nameless_original(tmp_path / "ckpt")
    for extra, message in (
            (["--submission", str(tmp_path / "nodir" / "s.json")], "--submission "),
            (["--dump-logits", str(tmp_path / "nodir" / "x.npz")], "--dump-logits "),
            (["--identifiers", str(CHECKPOINT / "identifiers.json"), "--rows-by-position"], "give one")):
        code, out, err = run(capsys, "--ckpt", str(ckpt), "--data", str(REFERENCE_DATASET), *extra)
        assert code == 2 and message in err and out == ""


@pytest.mark.parametrize("argv, message", [
    (["--limit", "0"], "--limit must be >= 1"),
    (["--num-aug", "-1"], "--num-aug must be >= 0"),
])
def test_bad_arguments_are_one_line(argv, message, capsys):
    code, _, err = run(capsys, "--ckpt", str(CHECKPOINT / "step_72385"), "--data", str(REFERENCE_DATASET), *argv)
    assert code == 2 and message in err


def test_num_aug_keeps_the_original_and_the_first_variants():
    split, names = load_split(REFERENCE_DATASET, "test"), load_identifiers(REFERENCE_DATASET)
    originals = select_examples(split, 0, None)
    puzzle = np.searchsorted(split.puzzle_indices, originals, side="right") - 1
    assert len(originals) == 20 and all("|||" not in names[i] for i in split.puzzle_identifiers[puzzle])
    assert len(select_examples(split, 1, None)) == 40
    assert len(select_examples(split, None, None)) == split.num_examples == 80
    assert select_examples(split, None, 7).tolist() == list(range(7))


def test_what_num_aug_and_fallbacks_left_out_is_said(capsys):
    code, out, err = run(capsys, "--ckpt", str(CHECKPOINT / "step_72385"), "--data", str(REFERENCE_DATASET),
                         "--limit", "12", "--num-aug", "100000")
    assert code == 0, err
    assert "--num-aug 100000: the dataset holds at most " in out and "voted over those" in out
    voted = [l for l in out.splitlines() if "test inputs voted on" in l][0]
    reached, total = map(int, voted.split(" test inputs")[0].split(" of "))
    if reached < total:  # --limit reaches few tasks: the others are named as fallbacks
        assert f"{total - reached} test input(s) without a decoded prediction get fallback answers" in out
